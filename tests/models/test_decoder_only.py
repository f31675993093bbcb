"""The decoder-only model (GPT): parity with Hugging Face's GPT2LMHeadModel built from a config with random
weights, the KV cache against no cache, learning, and the same blocks as an encoder under another mask."""

import pytest
import torch

from transformer.config import ModelConfig
from transformer.models import DecoderOnly, build_model
from transformer.nn.masks import causal_mask
from transformer.training.loss import next_token_loss

transformers = pytest.importorskip("transformers")

SIZE = dict(d_model=32, n_heads=4, d_ff=64, n_layers=2, dropout=0.0)


def _config(**changes) -> ModelConfig:
    return ModelConfig(**{"type": "decoder_only", "src_vocab_size": 50, "tgt_vocab_size": 50, **SIZE, **changes})


def _gpt2_pair(seed: int = 0) -> tuple[DecoderOnly, "transformers.GPT2LMHeadModel"]:
    """A random GPT-2 and our decoder-only model of the same architecture holding its weights."""
    torch.manual_seed(seed)
    hf_config = transformers.GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # move LayerNorms and biases off their initial (1, 0)
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = build_model(_config(norm_first=True, activation="gelu", positional="learned", max_positions=64,
                               scale_embedding=False, layer_norm_eps=hf_config.layer_norm_epsilon)).eval()
    ours.load_state_dict(_from_gpt2(hf.state_dict(), n_layers=2), strict=True)
    return ours, hf


def _from_gpt2(hf: dict, n_layers: int) -> dict:
    """GPT-2's names and Conv1D (in, out) layouts -> ours (the mapping #12's import will own)."""
    out = {"embed.tokens.weight": hf["transformer.wte.weight"], "embed.positions.weight": hf["transformer.wpe.weight"],
           "stack.final_norm.weight": hf["transformer.ln_f.weight"], "output_proj.weight": hf["lm_head.weight"],
           "stack.final_norm.bias": hf["transformer.ln_f.bias"]}
    for i in range(n_layers):
        h, o = f"transformer.h.{i}.", f"stack.layers.{i}."
        for name, part in zip("qkv", hf[h + "attn.c_attn.weight"].t().chunk(3), strict=True):
            out[f"{o}self_attn.{name}_proj.weight"] = part
        for name, part in zip("qkv", hf[h + "attn.c_attn.bias"].chunk(3), strict=True):
            out[f"{o}self_attn.{name}_proj.bias"] = part
        conv1d = {"self_attn.out_proj": "attn.c_proj", "ff.fc1": "mlp.c_fc", "ff.fc2": "mlp.c_proj"}  # (in, out)
        for ours, theirs in conv1d.items():
            out[f"{o}{ours}.weight"], out[f"{o}{ours}.bias"] = hf[f"{h}{theirs}.weight"].t(), hf[f"{h}{theirs}.bias"]
        for ours, theirs in {"self_attn_block.norm": "ln_1", "ff_block.norm": "ln_2"}.items():
            out[f"{o}{ours}.weight"], out[f"{o}{ours}.bias"] = hf[f"{h}{theirs}.weight"], hf[f"{h}{theirs}.bias"]
    return out


def test_logits_equal_hugging_face_gpt2():
    ours, hf = _gpt2_pair()
    tokens = torch.randint(3, 50, (3, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, rtol=1e-4, atol=1e-4)


def test_the_loss_equals_hugging_face_gpt2s_language_modelling_loss():
    ours, hf = _gpt2_pair(seed=1)
    tokens = torch.randint(3, 50, (2, 9))
    with torch.no_grad():
        loss, n = next_token_loss(ours, tokens[:, :-1], tokens[:, 1:], pad_id=0)
        expected = hf(tokens, labels=tokens).loss  # HF shifts the labels inside
    assert n == 2 * 8
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("inference_mode", [False, True])  # buffered caches under inference mode
def test_decoding_with_the_cache_equals_decoding_without_it(positional, inference_mode):
    torch.manual_seed(0)
    model = build_model(_config(positional=positional)).eval()
    tokens = torch.randint(3, 50, (2, 12))
    context = torch.inference_mode() if inference_mode else torch.no_grad()
    with context:
        full = model(tokens)  # (B, T, V), every position in parallel
        logits, cache = model.decode_step(tokens[:, :5])  # a prompt of 5, then one token at a time
        steps = [logits]
        for t in range(5, 12):
            logits, cache = model.decode_step(tokens[:, t : t + 1], cache)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_a_gpt_and_a_bert_with_the_same_blocks_differ_only_in_the_mask():
    torch.manual_seed(0)
    model = build_model(_config()).eval()
    tokens = torch.randint(3, 50, (2, 7))
    x = model.embed(tokens)
    with torch.no_grad():
        gpt = model.hidden_states(tokens)
        encoder_causal = model.stack(x, causal_mask(7, 7))  # the same stack, read as an encoder with a causal mask
        encoder_full = model.stack(x, None)  # BERT's view: every position sees every other
    torch.testing.assert_close(gpt, encoder_causal, rtol=0, atol=0)
    assert not torch.allclose(gpt[:, :-1], encoder_full[:, :-1], atol=1e-3)  # earlier positions now see the future
    one_layer = build_model(_config(n_layers=1)).eval()  # one layer: the last position sees the same inputs
    x = one_layer.embed(tokens)
    with torch.no_grad():
        last_causal, last_full = one_layer.hidden_states(tokens)[:, -1], one_layer.stack(x, None)[:, -1]
    torch.testing.assert_close(last_causal, last_full, rtol=1e-5, atol=1e-5)


def test_a_position_never_sees_the_tokens_after_it():
    torch.manual_seed(0)
    model = build_model(_config()).eval()
    tokens = torch.randint(3, 50, (1, 8))
    changed = tokens.clone()
    changed[0, 5:] = torch.randint(3, 50, (3,))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :5], model(changed)[:, :5], rtol=0, atol=0)


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_model(_config(n_layers=2))
    tokens = torch.randint(3, 50, (4, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = next_token_loss(model, tokens[:, :-1], tokens[:, 1:], pad_id=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05
