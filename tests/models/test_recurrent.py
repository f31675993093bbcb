"""The recurrent encoder-decoders (RNN, LSTM, GRU; without attention and with additive attention): the encoder
against a plain torch.nn.LSTM and the LSTM equations, padding, the attention weights against their closed form,
incremental decoding against teacher forcing and recomputation, beam 1 against greedy, and the CLI's train,
translate and evaluate, and its refusals."""

import importlib.util
import io
import json

import pytest
import torch
import yaml

from tests.corpus import run_config, write_corpus
from transformer.cli import main
from transformer.config import ModelConfig
from transformer.decoding import beam_search, greedy_search
from transformer.models import build_model
from transformer.models.recurrent import RecurrentEncoderDecoder
from transformer.nn.masks import padding_mask
from transformer.training.loss import teacher_forced_loss

KINDS = ("rnn", "lstm", "gru")
ATTENTIONS = ("none", "additive")
IDS = dict(pad_id=0, bos_id=1, eos_id=2)


def _model(kind: str = "lstm", attention: str = "additive", **changes) -> RecurrentEncoderDecoder:
    values = dict(type=kind, rnn_attention=attention, src_vocab_size=40, tgt_vocab_size=40, d_model=16, n_heads=1,
                  n_encoder_layers=2, n_decoder_layers=2, dropout=0.0) | changes
    return build_model(ModelConfig(**values)).eval()


def _batch(lengths=(7, 4, 2), tgt_len: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources (B, S) right-padded to their longest, and teacher-forced targets (B, T) starting with BOS."""
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        src[row, :n] = torch.randint(3, 40, (n,))
    tgt = torch.randint(3, 40, (len(lengths), tgt_len))
    tgt[:, 0] = 1
    return src, tgt


def test_lstm_encoder_outputs_equal_a_plain_bidirectional_torch_lstm_on_each_unpadded_source():
    model = _model("lstm", "none")  # two encoder layers
    reference = torch.nn.LSTM(16, 16, num_layers=2, batch_first=True, bidirectional=True)
    weights = {}
    for layer in range(2):
        for name, value in model.encoder.forward_rnns[layer].state_dict().items():  # weight_ih_l0, ...
            weights[name.replace("l0", f"l{layer}")] = value
        for name, value in model.encoder.backward_rnns[layer].state_dict().items():
            weights[name.replace("l0", f"l{layer}") + "_reverse"] = value
    reference.load_state_dict(weights)
    src, _ = _batch()
    with torch.no_grad():
        memory = model.encode(src)  # (B, S, 2H)
        for row, n in enumerate((7, 4, 2)):
            expected, _ = reference(model.encoder.embed(src[row : row + 1, :n]))  # (1, n, 2H)
            torch.testing.assert_close(memory[row, :n], expected[0], rtol=1e-5, atol=1e-6)
            assert not memory[row, n:].any()  # padding gets no annotation


def test_lstm_forward_annotations_follow_the_lstm_equations():
    """h_t = o * tanh(c_t), c_t = f * c_{t-1} + i * g, with [i, f, g, o] = W x_t + b + U h_{t-1} (torch's gate
    order), computed here step by step from the weights."""
    model = _model("lstm", "none", n_encoder_layers=1, rnn_bidirectional=False)
    rnn = model.encoder.forward_rnns[0]
    src, _ = _batch(lengths=(5,))
    with torch.no_grad():
        x = model.encoder.embed(src)[0]  # (S, H)
        h, c, outputs = torch.zeros(16), torch.zeros(16), []
        for x_t in x:
            gates = rnn.weight_ih_l0 @ x_t + rnn.bias_ih_l0 + rnn.weight_hh_l0 @ h + rnn.bias_hh_l0
            i, f, g, o = gates.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        torch.testing.assert_close(model.encode(src)[0], torch.stack(outputs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_padding_a_source_changes_neither_its_annotations_nor_its_logits(kind, attention):
    model = _model(kind, attention)
    src, tgt = _batch()
    padded = torch.cat([src, torch.zeros(3, 5, dtype=torch.long)], dim=1)  # five more pads on every row
    with torch.no_grad():
        torch.testing.assert_close(model.encode(padded)[:, : src.size(1)], model.encode(src), rtol=0, atol=1e-6)
        torch.testing.assert_close(model(padded, tgt), model(src, tgt), rtol=0, atol=1e-5)
        alone = model(src[2:, :2], tgt[2:])  # the shortest source in a batch of its own, unpadded
        torch.testing.assert_close(model(src, tgt)[2:], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_decode_step_with_and_without_a_cache_gives_the_teacher_forced_logits(kind, attention):
    model = _model(kind, attention)
    src, tgt = _batch()
    with torch.no_grad():
        expected = model(src, tgt)  # (B, T, V)
        memory, src_mask = model.encode(src), padding_mask(src, 0)
        whole, _ = model.decode_step(tgt, memory, src_mask, None)
        first, cache = model.decode_step(tgt[:, :3], memory, src_mask, None)
        steps = [first]
        for i in range(3, tgt.size(1)):  # one token a step, as the searches feed them
            logits, cache = model.decode_step(tgt[:, i : i + 1], memory, src_mask, cache)
            steps.append(logits)
    torch.testing.assert_close(whole, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_greedy_with_a_cache_equals_recomputation_and_beam_1_equals_greedy(kind, attention):
    model = _model(kind, attention)
    src, _ = _batch(lengths=(7, 4, 2, 5))
    cached = greedy_search(model, src, **IDS, max_len_b=8)
    assert cached == greedy_search(model, src, **IDS, max_len_b=8, use_cache=False)
    assert [h[0].tokens for h in beam_search(model, src, **IDS, max_len_b=8, beam_size=1, alpha=0.0)] == cached
    found = beam_search(model, src, **IDS, max_len_b=8, beam_size=4, n_best=4)
    recomputed = beam_search(model, src, **IDS, max_len_b=8, beam_size=4, n_best=4, use_cache=False)
    assert [[h.tokens for h in hs] for hs in found] == [[h.tokens for h in hs] for hs in recomputed]
    scores = [h.score for hs in found for h in hs]
    assert scores == pytest.approx([h.score for hs in recomputed for h in hs], rel=1e-5)
    for hypotheses in found:
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


def test_attention_weights_are_the_additive_score_softmaxed_over_the_real_source_words():
    """alpha_ij = softmax_j(v^T tanh(W s_i + U h_j + b)) over the unpadded j, s_i the decoder's top state."""
    model = _model("gru", "additive")
    attention = model.decoder.attention
    queries = []
    attention.register_forward_hook(lambda module, args, output: queries.append(args[0]))
    src, tgt = _batch()
    with torch.no_grad():
        weights = model.alignments(src, tgt)  # (B, T, S)
        s, h = queries[0], model.encode(src)  # (B, T, H), (B, S, 2H)
        W, U, b, v = attention.query_proj.weight, attention.key_proj.weight, attention.key_proj.bias, \
            attention.score.weight[0]
        scores = torch.tanh((s @ W.T)[:, :, None, :] + (h @ U.T + b)[:, None, :, :]) @ v  # (B, T, S)
        scores = scores.masked_fill(src[:, None, :] == 0, float("-inf"))
        torch.testing.assert_close(weights, torch.softmax(scores, dim=-1), rtol=1e-5, atol=1e-6)
    assert weights[2, :, 2:].abs().max() == 0 and torch.allclose(weights.sum(-1), torch.ones(3, 6))


def test_without_attention_the_decoder_reads_the_source_only_through_its_summary():
    """Cho et al.'s fixed-length vector: changing every annotation but →h at the last word and ←h at the first
    changes no logit."""
    model = _model("lstm", "none")
    src, tgt = _batch(lengths=(7, 7))
    with torch.no_grad():
        memory, src_mask = model.encode(src), padding_mask(src, 0)
        changed = torch.randn_like(memory)
        changed[:, -1, :16], changed[:, 0, 16:] = memory[:, -1, :16], memory[:, 0, 16:]
        torch.testing.assert_close(model.decode_step(tgt, changed, src_mask, None)[0],
                                   model.decode_step(tgt, memory, src_mask, None)[0], rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_adam_fits_a_small_batch_through_the_fused_loss(kind, attention):
    model = _model(kind, attention).train()
    src, tgt = _batch()
    out = torch.roll(tgt, -1, dims=1)
    out[:, -1] = 2
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        loss, n = teacher_forced_loss(model, src, tgt, out, 0, 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bf16_autocast_runs_the_rnns_and_the_loss_stays_close():
    model = _model("lstm", "additive")
    src, tgt = _batch()
    with torch.no_grad():
        fp32, _ = teacher_forced_loss(model, src, tgt, tgt, 0, 0.1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = teacher_forced_loss(model, src, tgt, tgt, 0, 0.1)
    assert torch.isfinite(bf16) and abs(bf16.item() - fp32.item()) < 0.05


def test_parameters_are_counted_once_with_tied_embeddings_and_an_lstm_has_four_gates():
    tied, untied = _model("lstm"), _model("lstm", share_embeddings=False, tie_output=False)
    assert tied.output_proj.weight is tied.encoder.embed.weight is tied.decoder.embed.weight
    assert untied.num_parameters() - tied.num_parameters() == 2 * 40 * 16
    assert tied.encoder.forward_rnns[0].weight_ih_l0.shape == (4 * 16, 16) and tied.max_positions is None


@pytest.fixture(scope="module")
def lstm_dir(tmp_path_factory):
    """`transformer train` of a tiny LSTM with attention for a few steps, through a YAML config."""
    root = tmp_path_factory.mktemp("lstm")
    (root / "corpus").mkdir()
    tree = run_config(write_corpus(root / "corpus"), max_steps=6, eval_every=6)
    tree["model"] = {"type": "lstm", "rnn_attention": "additive", "d_model": 32, "n_heads": 4,
                     "n_encoder_layers": 1, "n_decoder_layers": 1, "dropout": 0.1}
    config = root / "lstm.yaml"
    config.write_text(yaml.safe_dump(tree))
    assert main(["train", str(config), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


def test_train_writes_a_model_directory_that_translate_and_evaluate_use(lstm_dir, capsys, monkeypatch):
    assert (lstm_dir / "model.safetensors").is_file()
    assert json.loads((lstm_dir / "metrics.jsonl").read_text().splitlines()[-1])
    monkeypatch.setattr("sys.stdin", io.StringIO("haus baum\nwort gott licht\n"))
    assert main(["translate", "--model", str(lstm_dir), "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["evaluate", "--model", str(lstm_dir), "--split", "test", "--limit", "4", "--beam", "1"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) >= {"bleu", "chrf"}
    assert main(["embeddings", "--model", str(lstm_dir), "--nearest", "haus", "--k", "3"]) == 0
    assert "token embedding matrix (target side, shared with the source)" in capsys.readouterr().out


HAS_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


@pytest.mark.parametrize("command", [
    pytest.param(["export-onnx", "--out", "OUT"], marks=pytest.mark.skipif(not HAS_ONNX, reason="needs onnx")),
    ["export-ct2"], ["export-hf", "--out", "OUT"], ["attention", "--text", "haus baum", "--align"]])
def test_transformer_only_commands_refuse_a_recurrent_model_in_one_line(lstm_dir, tmp_path, capsys, command):
    args = [str(tmp_path / "out") if arg == "OUT" else arg for arg in command]
    assert main([args[0], "--model", str(lstm_dir), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert "model.type='lstm'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
