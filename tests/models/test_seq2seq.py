import pytest
import torch
from torch.testing import assert_close

from transformer.config import ModelConfig
from transformer.models import EncoderDecoder, build_model
from transformer.nn import padding_mask

V = 40


def _tiny(**changes) -> EncoderDecoder:
    config = ModelConfig.preset("tiny", **{"src_vocab_size": V, "tgt_vocab_size": V, **changes})
    return build_model(config).eval()


def test_base_preset_has_the_size_the_paper_reports():
    # Table 3: base is ~65M parameters with a shared ~37k BPE vocabulary and tied embeddings.
    model = build_model(ModelConfig.preset("base", src_vocab_size=37000, tgt_vocab_size=37000))
    assert model.num_parameters() == 63_082_496  # the exact count, written in docs/ARCHITECTURE.md
    assert model.output_proj.weight is model.tgt_embed.tokens.weight is model.src_embed.tokens.weight


def test_untied_separate_embeddings_are_separate():
    model = _tiny(share_embeddings=False, tie_output=False, src_vocab_size=30)
    assert model.src_embed.tokens.weight.shape == (30, 64)
    assert model.output_proj.weight is not model.tgt_embed.tokens.weight
    assert model(torch.randint(3, 30, (2, 5)), torch.randint(3, V, (2, 4))).shape == (2, 4, V)


@pytest.mark.parametrize("norm_first", [False, True])
def test_example_output_does_not_depend_on_batch_or_padding(norm_first):
    model = _tiny(norm_first=norm_first)
    src = torch.randint(3, V, (1, 5))
    tgt = torch.randint(3, V, (1, 4))
    alone = model(src, tgt)
    long_src, long_tgt = torch.randint(3, V, (3, 11)), torch.randint(3, V, (3, 9))
    long_src[1], long_tgt[1] = 0, 0
    long_src[1, :5], long_tgt[1, :4] = src[0], tgt[0]
    batched = model(long_src, long_tgt)
    assert_close(batched[1, :4], alone[0], atol=1e-5, rtol=1e-5)
    memory = model.encode(long_src)
    assert_close(memory[1, :5], model.encode(src)[0], atol=1e-5, rtol=1e-5)


def test_changing_a_future_target_token_changes_no_earlier_logits():
    model = _tiny()
    src, tgt = torch.randint(3, V, (2, 6)), torch.randint(3, V, (2, 7))
    before = model(src, tgt)
    changed = tgt.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 3) % (V - 3) + 3
    after = model(src, changed)
    assert_close(after[:, :4], before[:, :4])
    assert not torch.allclose(after[:, 4:], before[:, 4:])


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_cached_decoding_equals_full_recompute(positional):
    model = _tiny(positional=positional)
    src = torch.randint(3, V, (3, 6))
    src[0, 4:] = 0
    tgt = torch.randint(3, V, (3, 8))
    src_mask = padding_mask(src, 0)
    memory = model.encode(src, src_mask)
    full = model.decode(tgt, memory, src_mask)
    logits, cache = model.decode_step(tgt[:, :3], memory, src_mask)  # prefill three tokens
    steps = [logits]
    for t in range(3, 8):
        logits, cache = model.decode_step(tgt[:, t : t + 1], memory, src_mask, cache)
        steps.append(logits)
    assert cache.length == 8
    assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_reorder_selects_rows():
    model = _tiny()
    src, tgt = torch.randint(3, V, (2, 5)), torch.randint(3, V, (2, 3))
    src_mask = padding_mask(src, 0)
    memory = model.encode(src, src_mask)
    _, cache = model.decode_step(tgt, memory, src_mask)
    index = torch.tensor([1, 1, 0])
    cache.reorder(index)
    step, _ = model.decode_step(tgt[index, -1:] * 0 + 5, memory[index], src_mask[index], cache)
    fresh = model.decode(torch.cat([tgt[index], torch.full((3, 1), 5)], 1), memory[index], src_mask[index])
    assert_close(step[:, 0], fresh[:, -1], atol=1e-5, rtol=1e-5)


def test_fully_padded_source_gives_finite_logits_and_gradients():
    model = _tiny()
    model.train()
    src = torch.zeros(2, 4, dtype=torch.long)
    src[1, :2] = 7
    logits = model(src, torch.randint(3, V, (2, 3)))
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_too_long_sequence_for_learned_positions_is_explained():
    model = _tiny(positional="learned", max_positions=16)
    with pytest.raises(ValueError, match=r"20 positions exceeds the learned positional table of max_len=16"):
        model(torch.randint(3, V, (1, 20)), torch.randint(3, V, (1, 3)))


def test_out_of_range_source_id_is_caught_before_the_kernel():
    model = _tiny()
    with pytest.raises(ValueError, match=rf"token id {V + 2} is out of range for a vocabulary of size {V}"):
        model(torch.tensor([[4, V + 2]]), torch.tensor([[1, 5]]))


def test_default_config_keeps_the_parameter_names_of_existing_checkpoints():
    names = set(_tiny().state_dict())
    assert "output_proj.bias" not in names and not any(".norm." in n for n in names if "embed" in n)


@pytest.mark.parametrize(
    "options",
    [
        dict(positional="sinusoidal", sinusoidal_interleaved=False, activation="swish"),  # Marian
        dict(positional="learned", position_offset=2, max_positions=16, layernorm_embedding=True,
             activation="gelu", scale_embedding=False, output_bias=True),  # BART
    ],
)
def test_hugging_face_options_build_and_cache_equals_recompute(options):
    model = _tiny(**options)
    if options.get("layernorm_embedding"):
        assert isinstance(model.src_embed.norm, torch.nn.LayerNorm) and model.output_proj.bias.shape == (V,)
        assert model.tgt_embed.positions.weight.shape == (18, 64)
    src, tgt = torch.randint(3, V, (2, 5)), torch.randint(3, V, (2, 6))
    memory = model.encode(src)
    full = model.decode(tgt, memory, None)
    logits, cache = model.decode_step(tgt[:, :2], memory, None)
    steps = [logits]
    for t in range(2, 6):
        logits, cache = model.decode_step(tgt[:, t : t + 1], memory, None, cache)
        steps.append(logits)
    assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
