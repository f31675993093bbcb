import pytest
import torch
import torch.nn.functional as F

from transformer.training import label_smoothed_cross_entropy

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
