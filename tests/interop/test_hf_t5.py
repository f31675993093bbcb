"""Parity with Hugging Face T5ForConditionalGeneration (random weights, small configs): the original T5 (relu,
tied output with the d_model**-0.5 rescaling) and v1.1 / flan (gated-gelu, an lm_head of its own, no rescaling).

Logits and encoder states are compared with padding in the batch; the decoding tests use models trained for a
few seconds to copy their input, so that outputs end with EOS at different lengths (an untrained model repeats
one token), and that never put <pad> (the start token, which our searches never produce) first.
"""

import json
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")
safetensors_torch = pytest.importorskip("safetensors.torch")

from transformer.cli import main  # noqa: E402
from transformer.decoding import beam_search, greedy_search  # noqa: E402
from transformer.inference import load_model_dir  # noqa: E402
from transformer.interop import load_hf_dir  # noqa: E402
from transformer.interop.hf_t5 import model_config_from_t5, model_from_t5, state_from_t5, task_prefix  # noqa: E402

PAD, EOS = 0, 1
MAX_NEW = 12
SMALL = dict(d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2, num_decoder_layers=2, dropout_rate=0.0,
             relative_attention_num_buckets=8, relative_attention_max_distance=16, decoder_start_token_id=PAD)


def _t5(variant: str, vocab_size: int = 64, **changes):
    """A random T5 ("t5": relu, tied) or T5 v1.1 ("t5-v1.1": gated-gelu, untied lm_head) in eval mode."""
    torch.manual_seed(0)
    v11 = variant == "t5-v1.1"
    config = transformers.T5Config(vocab_size=vocab_size, feed_forward_proj="gated-gelu" if v11 else "relu",
                                   tie_word_embeddings=not v11, **{**SMALL, **changes})
    hf = transformers.T5ForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # norms away from 1, larger relative biases: every weight matters
        for name, p in hf.named_parameters():
            if "layer_norm" in name or "relative_attention_bias" in name:
                p.add_(torch.randn(p.shape, generator=generator) * 0.3)
    if v11:  # transformers 5 ties lm_head to the embedding; v1.1 checkpoints carry a matrix of their own
        hf.lm_head = torch.nn.Linear(32, vocab_size, bias=False)
        torch.nn.init.normal_(hf.lm_head.weight, std=0.5, generator=generator)
    assert hf.config.scale_decoder_outputs is not v11
    return hf.eval()


def _padded_batch(vocab: int = 60):
    src = torch.randint(3, vocab, (3, 11))
    src[1, 7:] = src[2, 3:] = PAD
    src[0, -1], src[1, 6], src[2, 2] = EOS, EOS, EOS
    return src


@pytest.mark.parametrize("variant", ["t5", "t5-v1.1"])
def test_encoder_states_and_logits_equal_hf_with_padding_in_the_batch(variant):
    hf = _t5(variant, num_decoder_layers=3)  # T5 allows a deeper decoder than encoder
    ours = model_from_t5(hf)
    assert not ours.training
    src = _padded_batch()
    tgt = torch.randint(2, 60, (3, 20))  # beyond max_exact and max_distance: every kind of bucket
    tgt[:, 0] = PAD
    mask = (src != PAD).long()
    with torch.no_grad():
        states = hf.encoder(input_ids=src, attention_mask=mask).last_hidden_state
        theirs = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        assert (ours.encode(src) - states).abs().max() < 1e-4
        mine = ours(src, tgt)
    assert mine.shape == theirs.shape
    assert (mine - theirs).abs().max() < 1e-4


def test_config_options_of_both_variants():
    t5 = model_config_from_t5(_t5("t5", num_decoder_layers=3).config.to_dict())
    assert (t5.positional, t5.norm, t5.norm_first, t5.linear_bias, t5.attention_scale, t5.scale_embedding) == (
        "relative", "rms", True, False, 1.0, False)
    assert (t5.activation, t5.gated_ffn, t5.tie_output, t5.output_scale) == ("relu", False, True, 32**-0.5)
    assert (t5.pad_id, t5.bos_id, t5.eos_id, t5.n_encoder_layers, t5.n_decoder_layers) == (0, 0, 1, 2, 3)
    v11 = {**_t5("t5-v1.1").config.to_dict(), "tie_word_embeddings": False}
    del v11["scale_decoder_outputs"]  # a v1.1 config.json as the Hub has it (transformers 4 wrote no such key)
    v11 = model_config_from_t5(v11, tied=False)
    assert (v11.activation, v11.gated_ffn, v11.tie_output, v11.output_scale) == ("gelu_new", True, False, 1.0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"d_kv": 4}, r"d_kv=4 \* num_heads=4 != d_model=32"),
    ({"feed_forward_proj": "gated-tanh"}, r"feed_forward_proj='gated-tanh' is not supported"),
    ({"architectures": ["T5EncoderModel"]}, r"reads T5ForConditionalGeneration"),
])
def test_unsupported_t5_options_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        model_config_from_t5({**_t5("t5").config.to_dict(), **changes})


def test_weights_without_a_place_are_listed():
    state = dict(_t5("t5").state_dict())
    state["encoder.block.0.layer.0.SelfAttention.q.bias"] = torch.zeros(32)
    state["encoder.block.1.layer.0.DenseReluDense.wi.weight"] = torch.zeros(48, 32)  # in the attention sublayer
    with pytest.raises(ValueError, match=r"no place for: encoder.block.0.layer.0.SelfAttention.q.bias, "
                                         r"encoder.block.1.layer.0.DenseReluDense.wi.weight$"):
        state_from_t5(state)


def test_task_prefix_is_taken_only_when_one_translation_task_is_named():
    one = {"task_specific_params": {"summarization": {"prefix": "summarize: "},
                                    "translation_en_to_de": {"prefix": "translate English to German: "}}}
    assert task_prefix(one) == "translate English to German: "
    two = {"task_specific_params": {"translation_en_to_de": {"prefix": "a: "},
                                    "translation_en_to_fr": {"prefix": "b: "}}}
    assert task_prefix(two) == task_prefix({}) == ""


# ----------------------------------------------------------------------------------------------- decoding


def _copy_trained(hf, low: int = 3, high: int = 30, steps: int = 150):
    """Train `hf` briefly to copy sequences of ids low..high-1 followed by EOS."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(hf.parameters(), lr=5e-3)
    hf.train()
    for _ in range(steps):
        src = torch.full((32, 9), PAD)
        labels = torch.full((32, 9), -100)
        for i, n in enumerate(torch.randint(1, 8, (32,), generator=generator).tolist()):
            tokens = torch.randint(low, high, (n,), generator=generator)
            src[i, :n], labels[i, :n] = tokens, tokens
            src[i, n], labels[i, n] = EOS, EOS
        loss = hf(input_ids=src, attention_mask=(src != PAD).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hf.generation_config.forced_eos_token_id = None  # we stop at the limit without forcing EOS
    return hf.eval()


@pytest.fixture(scope="module")
def trained():
    return {variant: _copy_trained(_t5(variant)) for variant in ("t5", "t5-v1.1")}


def _sources(batch: int = 8):
    """Copy-task sources of lengths 1..8 ending with EOS, right-padded (padding in the batch)."""
    generator = torch.Generator().manual_seed(3)
    src = torch.full((batch, 9), PAD)
    for i in range(batch):
        n = i % 8 + 1
        src[i, :n] = torch.randint(3, 30, (n,), generator=generator)
        src[i, n] = EOS
    return src


def _strip(row: torch.Tensor) -> list[int]:
    """generate's output row without the start token, cut at EOS (or at the padding after it)."""
    out = []
    for token in row.tolist()[1:]:
        if token in (EOS, PAD):
            break
        out.append(token)
    return out


IDS = dict(pad_id=PAD, bos_id=PAD, eos_id=EOS)


@pytest.mark.parametrize("variant", ["t5", "t5-v1.1"])
def test_greedy_equals_generate(trained, variant):
    hf, src = trained[variant], _sources()
    generated = hf.generate(input_ids=src, attention_mask=(src != PAD).long(), num_beams=1, do_sample=False,
                            max_new_tokens=MAX_NEW)
    assert PAD not in generated[:, 1].tolist()  # generate's first tokens are ones our search may produce
    mine = greedy_search(model_from_t5(hf), src, **IDS, max_new_tokens=MAX_NEW)
    assert mine == [_strip(row) for row in generated]
    assert len({len(tokens) for tokens in mine}) >= 3  # EOS at different steps: a real test of stopping


@pytest.mark.parametrize("variant", ["t5", "t5-v1.1"])
def test_beam_4_equals_generate_with_length_penalty_0(trained, variant):
    hf, src = trained[variant], _sources()
    generated = hf.generate(input_ids=src, attention_mask=(src != PAD).long(), num_beams=4, do_sample=False,
                            max_new_tokens=MAX_NEW, length_penalty=0.0, early_stopping=False)
    best = [hyps[0] for hyps in beam_search(model_from_t5(hf), src, **IDS, beam_size=4, alpha=0.0,
                                            max_new_tokens=MAX_NEW)]
    # Tokens only: the scores differ by log(1 - P(<pad>)) a step, since T5's <pad> is its start token, which we
    # take out of the softmax and generate keeps in it (T5 has no logits bias that could make P(<pad>) ~ 0).
    assert [h.tokens for h in best] == [_strip(row) for row in generated]
    assert len({len(h.tokens) for h in best}) >= 3


# ------------------------------------------------------------------------------------- files, tokenizer, CLI


def _lines(syllables: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    parts = syllables.split()
    words = sorted({"".join(rng.choice(parts) for _ in range(rng.randint(1, 3))) for _ in range(300)})
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in range(n)]


TEXT = _lines("ka ro mi tu sé na lo ve ßa ün pe di", 300, seed=0)
PREFIX = "translate German to English: "
EXTRA_IDS = 4


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
    """A T5 directory as save_pretrained writes it (config.json, model.safetensors, tokenizer.json), and the
    same checkpoint as v1.1-style files (lm_head.weight, tie_word_embeddings false) with only spiece.model."""
    root = tmp_path_factory.mktemp("t5")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT + [PREFIX] * 20), model_prefix=str(root / "spiece"), vocab_size=60,
        model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    spm_dir = root / "spm"
    spm_dir.mkdir()
    (root / "spiece.model").rename(spm_dir / "spiece.model")
    (spm_dir / "tokenizer_config.json").write_text(json.dumps({"extra_ids": EXTRA_IDS,
                                                                "tokenizer_class": "T5Tokenizer"}))
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(spm_dir)  # converted by transformers
    vocab = len(hf_tokenizer) + 4  # checkpoints pad the vocabulary (t5-small: 32100 tokens, 32128 rows)
    hf = _copy_trained(_t5("t5", vocab), low=3, high=60)
    hf.config.task_specific_params = {"translation_de_to_en": {"prefix": PREFIX}}
    fast_dir = root / "fast"
    hf.save_pretrained(fast_dir)
    hf_tokenizer.save_pretrained(fast_dir)
    config = {**json.loads((fast_dir / "config.json").read_text()), "tie_word_embeddings": False}
    del config["scale_decoder_outputs"]
    (spm_dir / "config.json").write_text(json.dumps(config))
    state = {name: t.detach().clone().contiguous() for name, t in hf.state_dict().items()}
    state["lm_head.weight"] = torch.randn(vocab, 32, generator=torch.Generator().manual_seed(5))
    safetensors_torch.save_file(state, str(spm_dir / "model.safetensors"))
    return fast_dir, spm_dir, hf, hf_tokenizer


def test_spiece_model_converts_to_the_ids_of_hf_t5_tokenizer(t5_dirs):
    _, spm_dir, _, hf_tokenizer = t5_dirs
    _, ours, _ = load_hf_dir(spm_dir)
    texts = [*TEXT[:100], "", "  ka  ro  ", "mi\ttu\u00a0sé", "ﬁ ＫＡ", "ka € ro", PREFIX + "ka ro"]
    assert ours.encode_batch(texts, add_special_tokens=True) == hf_tokenizer(texts)["input_ids"]
    rng = random.Random(0)
    ids = [[rng.randrange(len(hf_tokenizer)) for _ in range(rng.randint(0, 15))] for _ in range(300)]
    assert ours.decode_batch(ids) == hf_tokenizer.batch_decode(ids, skip_special_tokens=True)


def test_v11_files_with_their_own_lm_head_give_hf_logits(t5_dirs):
    _, spm_dir, _, _ = t5_dirs
    hf = transformers.T5ForConditionalGeneration.from_pretrained(spm_dir).eval()
    state = safetensors_torch.load_file(str(spm_dir / "model.safetensors"))
    hf.lm_head = torch.nn.Linear(32, state["lm_head.weight"].size(0), bias=False)  # untied, as in v1.1
    hf.lm_head.weight.data.copy_(state["lm_head.weight"])
    hf.config.scale_decoder_outputs = False
    model, _, run = load_hf_dir(spm_dir)
    assert (run.model.tie_output, run.model.output_scale, run.decode.prefix) == (False, 1.0, PREFIX)
    src, tgt = _padded_batch(), torch.randint(2, 60, (3, 9))
    tgt[:, 0] = PAD
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt).logits
        assert (model(src, tgt) - theirs).abs().max() < 1e-4


def test_import_hf_then_translate_with_prefix_and_evaluate_match_generate(t5_dirs, tmp_path, capsys):
    fast_dir, _, hf, hf_tokenizer = t5_dirs
    lines = TEXT[:6] + ["ka", "tu ro mi na lo ve"]
    for name in ("test.src", "test.tgt"):
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    files = [f"--set=data.{split}_{side}={tmp_path / ('test.' + side)}" for split in ("train", "test")
             for side in ("src", "tgt")]
    out = tmp_path / "model"
    assert main(["import-hf", str(fast_dir), "--out", str(out), "--set", "data.corpus=files", *files]) == 0
    _, _, run = load_model_dir(out)
    assert (run.task, run.model.positional, run.decode.prefix) == ("translation", "relative", PREFIX)
    capsys.readouterr()

    for prefix in (PREFIX, "summarize: "):  # the imported default, and another given with --prefix
        batch = hf_tokenizer([prefix + line for line in lines], return_tensors="pt", padding=True)
        for beam, options in ((1, {}), (4, {"length_penalty": 0.0, "early_stopping": False})):
            generated = hf.generate(**batch, num_beams=beam, do_sample=False, max_new_tokens=60, **options)
            assert all(EOS in row.tolist() for row in generated)  # ended before any limit
            expected = hf_tokenizer.batch_decode(generated, skip_special_tokens=True)
            result = tmp_path / f"beam{beam}.txt"
            args = ["--beam", str(beam), "--alpha", "0", "--input", str(tmp_path / "test.src"), "--output",
                    str(result)] + ([] if prefix == PREFIX else ["--prefix", prefix])
            assert main(["translate", "--model", str(out), *args]) == 0
            assert result.read_text(encoding="utf-8").splitlines() == expected

    assert main(["evaluate", "--model", str(out), "--split", "test", "--beam", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == len(lines)


def test_exports_that_would_drop_t5_options_refuse_the_model():
    from transformer.interop.ct2 import check_expressible
    from transformer.interop.onnx import export_onnx

    hf = _t5("t5")
    config = model_config_from_t5(hf.config.to_dict())
    with pytest.raises(ValueError, match=r"model.positional='relative' has no CTranslate2 equivalent"):
        check_expressible(config)
    with pytest.raises(ValueError, match=r"model.norm='rms' has no CTranslate2 export here"):
        check_expressible(config.replace(positional="sinusoidal"))
    from transformer.interop.export_seq2seq import hf_family

    with pytest.raises(ValueError, match=r"cannot be written as Marian or BART: .*model.positional='relative'"):
        hf_family(config)
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    with pytest.raises(ValueError, match=r"model.positional='relative' \(T5\) is not exported to ONNX"):
        export_onnx(model_from_t5(hf), "unused", bos_id=PAD, eos_id=EOS)
