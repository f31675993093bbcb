import pytest
import torch
import torch.nn.functional as F

from transformer.config import ModelConfig
from transformer.models import build_model
from transformer.training import label_smoothed_cross_entropy
from transformer.training.loss import linear_label_smoothed_cross_entropy, teacher_forced_loss

PAD = 0


def _batch(seed: int = 0, b: int = 3, t: int = 5, v: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=gen) * 3
    target = torch.randint(1, v, (b, t), generator=gen)
    target[0, 3:] = PAD
    target[2, 1:] = PAD
    return logits, target


def _reference(logits, target, eps):
    return F.cross_entropy(
        logits.float().flatten(0, 1), target.flatten(), ignore_index=PAD, label_smoothing=eps
    )


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.9])
def test_matches_torch_cross_entropy(eps):
    logits, target = _batch()
    loss, n = label_smoothed_cross_entropy(logits, target, PAD, eps)
    torch.testing.assert_close(loss, _reference(logits, target, eps))
    assert n == int((target != PAD).sum())


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("summed", [False, True])
def test_closed_form_gradient_matches_autograd_through_torch_cross_entropy(eps, summed):
    logits, target = _batch(4)
    ours = logits.clone().requires_grad_(True)
    theirs = logits.clone().requires_grad_(True)
    loss, n = label_smoothed_cross_entropy(ours, target, PAD, eps, summed=summed)
    reference = _reference(theirs, target, eps) * (n if summed else 1)
    (loss * 1.7).backward()  # an upstream gradient other than 1
    (reference * 1.7).backward()
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_eps_zero_is_plain_cross_entropy():
    logits, target = _batch(1)
    loss, _ = label_smoothed_cross_entropy(logits, target, PAD, 0.0)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD))


def test_summed_is_sum_and_accumulates_like_one_batch():
    logits, target = _batch(2, b=4)
    mean, n = label_smoothed_cross_entropy(logits, target, PAD, 0.1)
    total, n_sum = label_smoothed_cross_entropy(logits, target, PAD, 0.1, summed=True)
    assert n == n_sum
    torch.testing.assert_close(total / n, mean)
    parts = [label_smoothed_cross_entropy(logits[i : i + 2], target[i : i + 2], PAD, 0.1, summed=True)
             for i in (0, 2)]
    torch.testing.assert_close(sum(p[0] for p in parts) / sum(p[1] for p in parts), mean)


def test_pad_positions_neither_change_loss_nor_get_gradient():
    logits, target = _batch(3)
    pad = target == PAD
    changed = logits.clone()
    changed[pad] = torch.randn_like(changed[pad]) * 50
    before, _ = label_smoothed_cross_entropy(logits, target, PAD, 0.1)
    changed.requires_grad_(True)
    after, _ = label_smoothed_cross_entropy(changed, target, PAD, 0.1)
    torch.testing.assert_close(before, after)
    after.backward()
    assert torch.all(changed.grad[pad] == 0)
    assert torch.all(changed.grad[~pad].abs().sum(-1) > 0)


def test_all_pad_batch_gives_zero_loss_and_finite_gradient():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    target = torch.full((2, 3), PAD)
    loss, n = label_smoothed_cross_entropy(logits, target, PAD, 0.1)
    assert n == 0 and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad == 0)


def test_bf16_logits_computed_in_fp32():
    logits, target = _batch(4)
    low = logits.to(torch.bfloat16).requires_grad_(True)
    loss, _ = label_smoothed_cross_entropy(low, target, PAD, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, _reference(low.detach().float(), target, 0.1))
    loss.backward()
    assert low.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_epsilon_out_of_range(eps):
    logits, target = _batch()
    with pytest.raises(ValueError, match=rf"epsilon={eps}.*\[0, 1\)"):
        label_smoothed_cross_entropy(logits, target, PAD, eps)


def test_bad_shapes_and_ids():
    logits, target = _batch()
    with pytest.raises(ValueError, match=r"logits shape \(3, 5, 7\).*target shape \(3, 4\)"):
        label_smoothed_cross_entropy(logits, target[:, :4], PAD)
    target[1, 0] = 7
    with pytest.raises(ValueError, match=r"\[\d+, 7\].*vocabulary size is 7"):
        label_smoothed_cross_entropy(logits, target, PAD)


# --- the output projection fused with the loss, chunk by chunk -------------------------------------------


def _projection_batch(seed: int = 0, b: int = 3, t: int = 6, d: int = 16, v: int = 37):
    """Hidden states, a projection (weight, bias) and targets with padding in two rows."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, d, generator=gen)
    weight = torch.randn(v, d, generator=gen) * 0.5
    bias = torch.randn(v, generator=gen) * 0.1
    target = torch.randint(1, v, (b, t), generator=gen)
    target[0, 4:] = PAD
    target[2, 1:] = PAD
    return hidden, weight, bias, target


def _leaves(*tensors):
    return [x.clone().requires_grad_(True) for x in tensors]


def _relative_error(actual, expected):
    return float((actual.float() - expected.float()).abs().max() / expected.float().abs().max())


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("summed", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 4, None])  # one row, chunks with a remainder, the default (one chunk)
def test_fused_equals_unfused_fp32(eps, summed, chunk_rows):
    hidden, weight, bias = _leaves(*_projection_batch()[:3])
    h2, w2, b2 = _leaves(hidden.detach(), weight.detach(), bias.detach())
    target = _projection_batch()[3]
    fused, n = linear_label_smoothed_cross_entropy(
        hidden, weight, bias, target, PAD, eps, summed=summed, chunk_rows=chunk_rows
    )
    plain, n_plain = label_smoothed_cross_entropy(F.linear(h2, w2, b2), target, PAD, eps, summed=summed)
    assert n == n_plain == int((target != PAD).sum())
    torch.testing.assert_close(fused, plain)
    (fused * 1.7).backward()  # an upstream gradient other than 1
    (plain * 1.7).backward()
    for ours, theirs in ((hidden, h2), (weight, w2), (bias, b2)):
        assert ours.grad.dtype == theirs.grad.dtype == torch.float32
        torch.testing.assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_fused_matches_torch_cross_entropy_fp32(eps):
    hidden, weight, bias = _leaves(*_projection_batch(1)[:3])
    h2, w2, b2 = _leaves(hidden.detach(), weight.detach(), bias.detach())
    target = _projection_batch(1)[3]
    fused, _ = linear_label_smoothed_cross_entropy(hidden, weight, bias, target, PAD, eps, chunk_rows=5)
    reference = _reference(F.linear(h2, w2, b2), target, eps)
    torch.testing.assert_close(fused, reference)
    fused.backward()
    reference.backward()
    for ours, theirs in ((hidden, h2), (weight, w2), (bias, b2)):
        torch.testing.assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("summed", [False, True])
def test_fused_under_bf16_autocast(summed):
    """Under CPU autocast the product runs in bf16, as nn.Linear does: the fused loss and its gradients agree
    with the unfused bf16 path to bf16 precision (8 bits of mantissa: ~0.4% per rounding), and with fp32
    F.cross_entropy to the precision of bf16 logits."""
    data = _projection_batch(2, b=4, t=9, d=32, v=301)
    hidden, weight, bias = _leaves(*data[:3])
    h2, w2, b2 = _leaves(*data[:3])
    h3, w3, b3 = _leaves(*data[:3])
    target = data[3]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, n = linear_label_smoothed_cross_entropy(
            hidden, weight, bias, target, PAD, 0.1, summed=summed, chunk_rows=7
        )
        logits = F.linear(h2, w2, b2)
    assert logits.dtype == torch.bfloat16 and fused.dtype == torch.float32
    plain, _ = label_smoothed_cross_entropy(logits, target, PAD, 0.1, summed=summed)
    reference = _reference(F.linear(h3, w3, b3), target, 0.1) * (n if summed else 1)  # fp32 throughout
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)  # the same bf16 logits, lse in fp32
    torch.testing.assert_close(fused, reference, rtol=5e-3, atol=0)
    for loss in (fused, plain, reference):
        loss.backward()
    for ours, unfused, fp32 in ((hidden, h2, h3), (weight, w2, w3), (bias, b2, b3)):
        assert ours.grad.dtype == torch.float32
        assert _relative_error(ours.grad, unfused.grad) < 1e-2
        assert _relative_error(ours.grad, fp32.grad) < 3e-2


def test_fused_padding_is_ignored():
    hidden, weight, bias, target = _projection_batch(3)
    pad = target == PAD
    changed = hidden.clone()
    changed[pad] = torch.randn_like(changed[pad]) * 100
    changed[0, 5, 0] = float("nan")  # a padding row, skipped: never computed
    before, _ = linear_label_smoothed_cross_entropy(hidden, weight, bias, target, PAD, 0.1, chunk_rows=2)
    changed.requires_grad_(True)
    after, _ = linear_label_smoothed_cross_entropy(changed, weight, bias, target, PAD, 0.1, chunk_rows=2)
    torch.testing.assert_close(before, after)
    after.backward()
    assert torch.all(changed.grad[pad] == 0)
    assert torch.all(changed.grad[~pad].abs().sum(-1) > 0)


def test_fused_all_padding_and_no_grad():
    hidden, weight, bias = _leaves(*_projection_batch(4)[:3])
    target = torch.full(hidden.shape[:-1], PAD)
    loss, n = linear_label_smoothed_cross_entropy(hidden, weight, bias, target, PAD, 0.1)
    assert n == 0 and loss.item() == 0.0
    loss.backward()
    for x in (hidden, weight, bias):
        assert torch.all(x.grad == 0)
    target = _projection_batch(4)[3]
    with torch.no_grad():  # validation: the loss alone, no graph
        loss, _ = linear_label_smoothed_cross_entropy(hidden, weight, bias, target, PAD, 0.1)
    assert not loss.requires_grad
    expected, _ = label_smoothed_cross_entropy(F.linear(hidden, weight, bias).detach(), target, PAD, 0.1)
    torch.testing.assert_close(loss, expected)


def test_fused_without_bias_and_frozen_weight():
    hidden, weight, _, target = _projection_batch(5)
    hidden = hidden.requires_grad_(True)
    h2 = hidden.detach().clone().requires_grad_(True)
    loss, _ = linear_label_smoothed_cross_entropy(hidden, weight, None, target, PAD, 0.1, chunk_rows=3)
    plain, _ = label_smoothed_cross_entropy(F.linear(h2, weight), target, PAD, 0.1)
    torch.testing.assert_close(loss, plain)
    loss.backward()
    plain.backward()
    torch.testing.assert_close(hidden.grad, h2.grad)
    assert weight.grad is None


def test_fused_bad_input():
    hidden, weight, bias, target = _projection_batch()
    with pytest.raises(ValueError, match=r"hidden shape \(3, 6, 16\).*target shape \(3, 5\)"):
        linear_label_smoothed_cross_entropy(hidden, weight, bias, target[:, :5], PAD)
    with pytest.raises(ValueError, match=r"weight \(37, 8\).*width 16"):
        linear_label_smoothed_cross_entropy(hidden, weight[:, :8], bias, target, PAD)
    with pytest.raises(ValueError, match=r"epsilon=1.0"):
        linear_label_smoothed_cross_entropy(hidden, weight, bias, target, PAD, 1.0)
    with pytest.raises(ValueError, match="chunk_rows=0"):
        linear_label_smoothed_cross_entropy(hidden, weight, bias, target, PAD, chunk_rows=0)
    target[1, 0] = 37
    with pytest.raises(ValueError, match=r"\[\d+, 37\].*vocabulary size is 37"):
        linear_label_smoothed_cross_entropy(hidden, weight, bias, target, PAD)


@pytest.mark.parametrize("bf16", [False, True])
def test_teacher_forced_loss_equals_full_logits_with_tied_weights(bf16):
    """The trainer's loss: decoder states + fused projection give the loss and parameter gradients of the
    model's full logits, with the output projection tied to the target embedding (two paths into one
    weight)."""
    vocab = 53
    model = build_model(ModelConfig.preset("tiny", src_vocab_size=vocab, tgt_vocab_size=vocab)).eval()
    assert model.output_proj.weight is model.tgt_embed.tokens.weight
    gen = torch.Generator().manual_seed(6)
    src = torch.randint(4, vocab, (3, 7), generator=gen)
    tgt_in = torch.randint(4, vocab, (3, 5), generator=gen)
    tgt_out = torch.randint(4, vocab, (3, 5), generator=gen)
    src[1, 5:] = PAD
    tgt_in[2, 3:] = PAD
    tgt_out[2, 2:] = PAD
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fused, n = teacher_forced_loss(model, src, tgt_in, tgt_out, PAD, 0.1, summed=True)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(src, tgt_in)
    plain, n_plain = label_smoothed_cross_entropy(logits, tgt_out, PAD, 0.1, summed=True)
    plain_grads = torch.autograd.grad(plain, list(model.parameters()))
    assert n == n_plain
    if bf16:
        torch.testing.assert_close(fused, plain, rtol=1e-3, atol=0)
        for ours, theirs in zip(fused_grads, plain_grads, strict=True):
            assert _relative_error(ours, theirs) < 2e-2
    else:
        torch.testing.assert_close(fused, plain)
        for ours, theirs in zip(fused_grads, plain_grads, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_fused_second_backward_is_refused():
    hidden, weight, bias = _leaves(*_projection_batch()[:3])
    loss, _ = linear_label_smoothed_cross_entropy(hidden, weight, bias, _projection_batch()[3], PAD)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()
