"""GPT-2 import and export (interop/hf_gpt2.py) against transformers' own GPT2LMHeadModel.

The Hugging Face side is a small GPT2LMHeadModel with a byte-level BPE trained here on the tiny text corpus
(tests/corpus.py), trained for a few seconds so that greedy continuations end with <|endoftext|> at different
lengths, then saved with save_pretrained. Nothing is downloaded.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

from tests.corpus import lm_config, write_text_corpus  # noqa: E402
from transformer.api import load  # noqa: E402
from transformer.cli import main  # noqa: E402
from transformer.config import RunConfig  # noqa: E402
from transformer.interop import load_hf_dir  # noqa: E402
from transformer.interop.export_hf import export_hf  # noqa: E402
from transformer.interop.hf_gpt2 import PAD_LOGIT_BIAS  # noqa: E402
from transformer.training.trainer import train  # noqa: E402

EOT = "<|endoftext|>"
SMALL = dict(n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=48, layer_norm_epsilon=1e-4,
             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
PROMPTS = ["the man", "a woman wept", "his son came to the", "the"]
MAX_NEW = 12


def _train_tokenizer(lines: list[str]):
    """A GPT-2-style byte-level BPE with <|endoftext|> as its last id, wrapped as GPT2TokenizerFast."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300, min_frequency=1, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([EOT])
    return transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def _fit(hf, tokenizer, lines: list[str], steps: int = 120) -> None:
    """A few Adam steps on <|endoftext|> line <|endoftext|>: the model learns where lines end."""
    eos = tokenizer.eos_token_id
    rows = [[eos, *tokenizer(line).input_ids, eos] for line in lines]
    optimizer = torch.optim.Adam(hf.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    hf.train()
    for _ in range(steps):
        batch = [rows[int(i)] for i in torch.randint(len(rows), (16,), generator=generator)]
        width = max(map(len, batch))
        ids = torch.tensor([r + [eos] * (width - len(r)) for r in batch])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in batch])
        loss = hf(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hf.eval()


def _save_gpt2(out: Path, corpus: Path, fit: bool = True, **changes) -> Path:
    lines = (corpus / "train.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = _train_tokenizer(lines)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{**SMALL, "vocab_size": len(tokenizer), "bos_token_id": eos,
                                        "eos_token_id": eos, **changes})
    hf = transformers.GPT2LMHeadModel(config).eval()
    if fit:
        _fit(hf, tokenizer, lines)
    hf.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text_corpus(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, corpus):
    return _save_gpt2(tmp_path_factory.mktemp("hf") / "gpt2", corpus)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, gpt2_dir, corpus):
    """`transformer import-hf` of gpt2_dir, with the text corpus as its data (for evaluate and fine-tuning)."""
    out = tmp_path_factory.mktemp("ours") / "gpt2"
    data = [arg for split in ("train", "valid", "test")
            for arg in ("--set", f"data.{split}_text={corpus / f'{split}.txt'}")]
    assert main(["import-hf", str(gpt2_dir), "--out", str(out), "--set", "data.corpus=text", *data]) == 0
    return out


def _hf(path: Path, **kwargs):
    return transformers.GPT2LMHeadModel.from_pretrained(path, **kwargs).eval()


def _batch(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and HF's attention mask (1 = real token)."""
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def _compare_real_positions(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> None:
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=1e-4)


def test_hidden_states_and_logits_equal_hf_with_padding_in_the_batch(gpt2_dir, imported):
    hf, bundle = _hf(gpt2_dir), load(imported)
    tok, vocab = bundle.tokenizer, hf.config.vocab_size
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (vocab - 1, vocab - 1, vocab)  # <|endoftext|>; <pad> added
    assert bundle.config.model.pad_logit == PAD_LOGIT_BIAS and not bundle.config.model.output_bias
    rows = [[tok.bos_id, *tok.encode(p)] for p in PROMPTS]
    ids, mask = _batch(rows, tok.pad_id)
    with torch.no_grad():
        theirs = hf(input_ids=ids.masked_fill(mask == 0, tok.eos_id), attention_mask=mask, output_hidden_states=True)
        hidden, logits = bundle.model.hidden_states(ids), bundle.model(ids)
    _compare_real_positions(hidden, theirs.hidden_states[-1], mask)  # after ln_f
    _compare_real_positions(logits[..., :vocab], theirs.logits, mask)
    # The added <pad> takes no probability: the log-probabilities of the real tokens are GPT-2's too.
    assert bool((logits[..., vocab] <= PAD_LOGIT_BIAS + 1e3).all())
    _compare_real_positions(logits.log_softmax(-1)[..., :vocab], theirs.logits.log_softmax(-1), mask)


def test_hf_tokenizer_and_ours_give_the_same_ids(gpt2_dir, imported):
    hf_tokenizer, tok = transformers.AutoTokenizer.from_pretrained(gpt2_dir), load(imported).tokenizer
    for text in [*PROMPTS, "The KING went — to the city.", "ünïcödé 漢字"]:
        assert tok.encode(text) == hf_tokenizer(text).input_ids
        assert tok.decode(tok.encode(text)) == text


def _hf_greedy(hf, prompt_ids: list[int], eos: int, max_new: int = MAX_NEW) -> list[int]:
    out = hf.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                      do_sample=False, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=eos)
    return out[0, len(prompt_ids):].tolist()


def test_greedy_generation_equals_hf_generate(gpt2_dir, imported):
    hf, bundle = _hf(gpt2_dir), load(imported)
    tok, ended = bundle.tokenizer, 0
    for prompt in PROMPTS:
        ours = [int(step[0]) for step in bundle.generate_tokens(prompt, max_new_tokens=MAX_NEW, top_k=1)]
        theirs = _hf_greedy(hf, [tok.eos_id, *tok.encode(prompt)], tok.eos_id)  # our generate starts with bos
        assert ours == theirs, prompt
        ended += ours[-1] == tok.eos_id
    assert ended >= 2  # most continuations end with <|endoftext|> before MAX_NEW: EOS handling is compared too


def test_generate_cli_prints_hf_greedy_continuation(gpt2_dir, imported, capsys):
    hf, tok = _hf(gpt2_dir), load(imported).tokenizer
    expected = tok.decode(_hf_greedy(hf, [tok.eos_id, *tok.encode("the king")], tok.eos_id, 8))
    assert main(["generate", "--model", str(imported), "--prompt", "the king", "--max-new-tokens", "8",
                 "--top-k", "1"]) == 0
    assert capsys.readouterr().out == f"the king{expected}\n"


def _hf_perplexity(hf, lines: list[str], tok) -> float:
    """exp of GPT-2's mean NLL over each line's tokens and the closing <|endoftext|>, the line opened by one."""
    total, count = 0.0, 0
    with torch.no_grad():
        for line in lines:
            ids = torch.tensor([[tok.eos_id, *tok.encode(line), tok.eos_id]])
            loss = hf(input_ids=ids, labels=ids).loss  # mean over the ids.size(1) - 1 predictions
            total, count = total + float(loss) * (ids.size(1) - 1), count + ids.size(1) - 1
    return math.exp(total / count)


def test_evaluate_cli_perplexity_equals_hf(gpt2_dir, imported, corpus, capsys):
    lines = (corpus / "test.txt").read_text(encoding="utf-8").splitlines()
    expected = _hf_perplexity(_hf(gpt2_dir), lines, load(imported).tokenizer)
    assert main(["evaluate", "--model", str(imported), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == len(lines)
    assert result["perplexity"] == pytest.approx(expected, abs=2e-3)


def test_fine_tuning_an_imported_gpt2_lowers_its_loss_and_it_still_exports(imported, corpus, tmp_path):
    tree = {"task": "lm", "data": {"corpus": "text", **{f"{s}_text": str(corpus / f"{s}.txt")
                                                       for s in ("train", "valid", "test")}},
            "train": {"init_from": str(imported), "max_steps": 20, "eval_every": 20, "max_tokens": 512,
                      "warmup": 1, "lr": 1e-3, "label_smoothing": 0.0, "seed": 0}}
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    texts = (corpus / "valid.txt").read_text(encoding="utf-8").splitlines()
    before = load(imported).perplexity(texts)
    train(RunConfig.load(str(path)), tmp_path / "tuned", progress_bar=False)
    tuned = load(tmp_path / "tuned")
    assert tuned.config.model == load(imported).config.model  # the same architecture and special ids
    assert tuned.perplexity(texts) < before
    fixed = tuned.model.output_proj.bias  # a buffer: 0 for every real token, the fixed logit for <pad>
    assert not fixed.requires_grad and fixed[:-1].eq(0).all() and fixed[-1] == PAD_LOGIT_BIAS
    _export_logits_match(tmp_path / "tuned", tmp_path / "tuned-hf")  # still a GPT-2


@pytest.mark.parametrize("changes, named", [
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True (supported: False)"),
    ({"add_cross_attention": True}, "add_cross_attention=True (supported: False)"),
    ({"scale_attn_weights": False}, "scale_attn_weights=False (supported: True)"),
    ({"activation_function": "tanh"}, "activation_function='tanh' (supported: ['gelu', 'gelu_new',"),
])
def test_unsupported_config_is_refused_naming_the_key(gpt2_dir, tmp_path, changes, named):
    copy = tmp_path / "gpt2"
    shutil.copytree(gpt2_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(ValueError, match="options we do not support") as error:
        load_hf_dir(copy)
    assert named in str(error.value) and "Supported: pre-LN GPT-2 layers" in str(error.value)


def test_other_gpt2_heads_are_refused_naming_their_weights(gpt2_dir, tmp_path):
    double = transformers.GPT2DoubleHeadsModel(transformers.GPT2Config.from_pretrained(gpt2_dir))
    double.save_pretrained(tmp_path / "double")
    shutil.copy(gpt2_dir / "tokenizer.json", tmp_path / "double")
    with pytest.raises(ValueError, match=r"weights a 2-layer GPT2LMHeadModel does not have: multiple_choice_head"):
        load_hf_dir(tmp_path / "double")


def test_untied_head_own_pad_token_and_upcast_attention_keep_parity(tmp_path, corpus):
    """tie_word_embeddings=false (lm_head loaded), a pad_token_id of the checkpoint's own (no row added), and
    reorder_and_upcast_attn (eager attention in fp32: the same numbers)."""
    hf_dir = _save_gpt2(tmp_path / "gpt2", corpus, fit=False, tie_word_embeddings=False, pad_token_id=0,
                        reorder_and_upcast_attn=True, activation_function="relu")
    hf = _hf(hf_dir, attn_implementation="eager")
    with torch.no_grad():
        for p in hf.parameters():  # away from GPT-2's N(0, 0.02) init, so that every part shows in the logits
            p.normal_(std=0.3)
        hf.save_pretrained(hf_dir)
        model, tok, run = load_hf_dir(hf_dir)
    assert (run.model.tie_output, run.model.output_bias, run.model.tgt_vocab_size, tok.pad_id) == (
        False, False, hf.config.vocab_size, 0)
    ids, mask = _batch([[tok.bos_id, *tok.encode(p)] for p in PROMPTS], tok.pad_id)
    with torch.no_grad():
        _compare_real_positions(model(ids), hf(input_ids=ids, attention_mask=mask).logits, mask)


def test_the_hub_layout_of_gpt2_weights_imports_too(gpt2_dir, tmp_path):
    """The Hub's gpt2 model.safetensors: names without "transformer.", no lm_head (tied), and the causal-mask
    buffers h.N.attn.bias / masked_bias of older transformers versions."""
    import safetensors.torch

    hub = tmp_path / "hub"
    shutil.copytree(gpt2_dir, hub)
    state = {name.removeprefix("transformer."): tensor for name, tensor in _hf(gpt2_dir).state_dict().items()
             if name != "lm_head.weight"}
    for i in range(SMALL["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64))[None, None]
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(hub / "model.safetensors"))
    ours, original = load_hf_dir(hub)[0], load_hf_dir(gpt2_dir)[0]
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), original(ids), atol=0, rtol=0)


def test_a_vocabulary_larger_than_the_tokenizer_gives_pad_an_unused_row(tmp_path, corpus):
    """vocab_size past the tokenizer (padded vocabularies): <pad> is the first unused id, a row the model has,
    with the model's own logit as HF computes it (no fixed logit, no row added)."""
    probe = _train_tokenizer((corpus / "train.txt").read_text(encoding="utf-8").splitlines())
    hf_dir = _save_gpt2(tmp_path / "gpt2", corpus, fit=False, vocab_size=len(probe) + 8)
    model, tok, run = load_hf_dir(hf_dir)
    assert (tok.pad_id, run.model.tgt_vocab_size, run.model.pad_logit) == (len(probe), len(probe) + 8, None)
    ids, mask = _batch([[tok.bos_id, *tok.encode(p)] for p in PROMPTS], tok.pad_id)
    with torch.no_grad():
        _compare_real_positions(model(ids), _hf(hf_dir)(input_ids=ids, attention_mask=mask).logits, mask)


# ------------------------------------------------------------------------------------------------ export


def _export_logits_match(model_dir: Path, out: Path) -> None:
    """`transformer export-hf`, then GPT2LMHeadModel.from_pretrained(out) gives our logits (every real token's),
    and AutoTokenizer.from_pretrained(out) our ids."""
    assert main(["export-hf", "--model", str(model_dir), "--out", str(out)]) == 0
    bundle, hf = load(model_dir), _hf(out)
    tok, vocab = bundle.tokenizer, hf.config.vocab_size
    ids, mask = _batch([[tok.bos_id, *tok.encode(p)] for p in PROMPTS], tok.pad_id)
    with torch.no_grad():
        theirs = hf(input_ids=ids.clamp(max=vocab - 1), attention_mask=mask).logits
        _compare_real_positions(bundle.model(ids)[..., :vocab], theirs, mask)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert [hf_tokenizer(p).input_ids for p in PROMPTS] == [tok.encode(p) for p in PROMPTS]
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id) == (tok.bos_id, tok.eos_id)


def test_export_of_an_imported_gpt2_gives_back_gpt2(gpt2_dir, imported, tmp_path):
    out = tmp_path / "back"
    _export_logits_match(imported, out)
    config = json.loads((out / "config.json").read_text())
    original = json.loads((gpt2_dir / "config.json").read_text())
    assert config["vocab_size"] == original["vocab_size"] and config["pad_token_id"] is None  # <pad> removed
    ids = torch.tensor([[original["eos_token_id"], 5, 17, 42, 99]])
    with torch.no_grad():
        torch.testing.assert_close(_hf(out)(ids).logits, _hf(gpt2_dir)(ids).logits, atol=1e-5, rtol=1e-5)


def test_export_of_a_model_trained_with_gpt2_options(tmp_path, corpus):
    tree = lm_config(corpus, max_steps=4, eval_every=4)
    tree["model"].update(norm_first=True, scale_embedding=False, activation="gelu_new", layer_norm_eps=1e-6)
    train(RunConfig.from_dict(tree), tmp_path / "gpt", progress_bar=False)
    _export_logits_match(tmp_path / "gpt", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (0, 1, 2)  # ours


def test_export_refuses_a_model_gpt2_cannot_express(lm_dir, tmp_path):
    """conftest's lm_dir is post-LN with embeddings scaled by sqrt(d_model) and ReLU: all GPT-2 can express
    but the first two, which are named."""
    with pytest.raises(ValueError, match="cannot be written as GPT-2") as error:
        export_hf(lm_dir, tmp_path / "hf")
    assert "norm_first=False (GPT-2: True)" in str(error.value)
    assert "scale_embedding=True (GPT-2: False)" in str(error.value)
    assert not (tmp_path / "hf").exists()


def _built_model_dir(path: Path, corpus: Path, **model) -> Path:
    """A decoder-only model directory with random weights (no training): GPT-2's options, changed by `model`."""
    from transformer.data.tokenizer import train_bpe
    from transformer.model_dir import save_weights, write_config
    from transformer.models import build_model

    tokenizer = train_bpe((corpus / "train.txt").read_text(encoding="utf-8").splitlines(), 300, 1)
    tokenizer.save(path)
    size = tokenizer.vocab_size
    config = RunConfig.from_dict({
        "task": "lm", "data": {"corpus": "text", "train_text": str(corpus / "train.txt")}, "train": {"max_steps": 1},
        "model": {"d_model": 32, "n_heads": 4, "d_ff": 48, "n_layers": 2, "norm_first": True, "positional": "learned",
                  "max_positions": 64, "scale_embedding": False, "activation": "gelu_new", "src_vocab_size": size,
                  "tgt_vocab_size": size, **model}})
    write_config(path, config)
    torch.manual_seed(0)
    built = build_model(config.model)
    with torch.no_grad():
        for weight in built.parameters():
            weight.normal_(std=0.3)
    save_weights(built, path / "model.safetensors")
    return path


@pytest.mark.parametrize("options", [{"activation": "relu"}, {"activation": "swish"},
                                     {"activation": "gelu", "tie_output": False}])
def test_export_writes_each_activation_and_an_untied_head(tmp_path, corpus, options):
    _export_logits_match(_built_model_dir(tmp_path / "ours", corpus, **options), tmp_path / "hf")


@pytest.mark.parametrize("options, named", [
    ({"positional": "sinusoidal"}, "positional='sinusoidal' (GPT-2: 'learned')"),
    ({"norm": "rms"}, "norm='rms' (GPT-2: 'layernorm')"),
    ({"linear_bias": False}, "linear_bias=False (GPT-2: True)"),
    ({"layernorm_embedding": True}, "layernorm_embedding=True (GPT-2: False)"),
    ({"output_bias": True}, "output_bias=True (GPT-2: False)"),
])
def test_export_refuses_each_option_gpt2_lacks(tmp_path, corpus, options, named):
    model_dir = _built_model_dir(tmp_path / "ours", corpus, **options)
    with pytest.raises(ValueError, match="cannot be written as GPT-2") as error:
        export_hf(model_dir, tmp_path / "hf")
    assert named in str(error.value)
