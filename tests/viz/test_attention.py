"""transformer.viz.attention: the weights of one teacher-forced pass, checked against softmax(Q K^T / sqrt(Dh))
computed by hand from the layers' own projections; rollout against the formula; the PNGs and the CLI."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from transformer.cli import main
from transformer.inference import load_model_dir, translate
from transformer.nn.masks import causal_mask
from transformer.viz import attention as viz
from transformer.viz.attention_plots import DPI, heatmap_size, plot_head, save_attention

SOURCE = "haus baum hund katze"


@pytest.fixture(scope="module")
def translation(model_dir):
    model, tokenizer, config = load_model_dir(model_dir)
    output = viz.translate_ids(model, tokenizer, SOURCE, config)
    return model, tokenizer, config, output, viz.translation_attention(model, tokenizer, SOURCE, output, config)


def _by_hand(attention, query_in, key_in, head, mask=None):
    """softmax(q k^T / sqrt(Dh)) of one head, from the module's q_proj and k_proj: (T, S)."""
    dh = attention.d_head
    q = attention.q_proj(query_in)[0, :, head * dh : (head + 1) * dh]  # (T, Dh)
    k = attention.k_proj(key_in)[0, :, head * dh : (head + 1) * dh]  # (S, Dh)
    scores = q @ k.T / math.sqrt(dh)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _sublayer_input(block, x):
    return block.norm(x) if block.norm_first else x  # pre-LN normalizes before the sublayer, post-LN after


def test_translation_weights_equal_a_hand_computation(translation):
    model, tokenizer, config, output, maps = translation
    src = torch.tensor([tokenizer.encode_batch([SOURCE], add_special_tokens=True)[0]])
    tgt = torch.tensor([[tokenizer.bos_id, *output]])  # the steps' inputs: <bos> and every produced token
    length = tgt.size(1)
    causal = causal_mask(length, length)[0, 0]  # (T, T)
    with torch.no_grad():
        enc = model.encoder.layers[0]
        x = model.src_embed(src)
        memory = model.encode(src)
        dec = model.decoder.layers[0]
        y = model.tgt_embed(tgt)
        after_self = dec.self_attn_block(y, lambda h: dec.self_attn(h, None, causal)[0])
        for head in range(model.encoder.layers[0].self_attn.n_heads):
            encoder = _by_hand(enc.self_attn, _sublayer_input(enc.self_attn_block, x), _sublayer_input(
                enc.self_attn_block, x), head)
            torch.testing.assert_close(maps.encoder[0][head], encoder, atol=1e-5, rtol=1e-5)
            h = _sublayer_input(dec.self_attn_block, y)
            torch.testing.assert_close(maps.decoder[0][head], _by_hand(dec.self_attn, h, h, head, causal),
                                       atol=1e-5, rtol=1e-5)
            cross = _by_hand(dec.cross_attn, _sublayer_input(dec.cross_attn_block, after_self), memory, head)
            torch.testing.assert_close(maps.cross[0][head], cross, atol=1e-5, rtol=1e-5)


def test_gpt_weights_equal_a_hand_computation_under_the_causal_mask(lm_dir):
    model, tokenizer, config = load_model_dir(lm_dir)
    maps = viz.self_attention(model, tokenizer, "the king went to the city.")
    tokens = torch.tensor([viz.single_stack_ids(model, tokenizer, "the king went to the city.")])
    layer = model.stack.layers[0]
    with torch.no_grad():
        x = _sublayer_input(layer.self_attn_block, model.embed(tokens))
        causal = causal_mask(tokens.size(1), tokens.size(1))[0, 0]
        for head in range(layer.self_attn.n_heads):
            torch.testing.assert_close(maps.encoder[0][head], _by_hand(layer.self_attn, x, x, head, causal),
                                       atol=1e-5, rtol=1e-5)


def test_rows_sum_to_one_and_decoder_is_zero_above_the_diagonal(translation):
    *_, maps = translation
    for weights in maps.encoder + maps.decoder + maps.cross:  # one unpadded sentence: every row a distribution
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    for weights in maps.decoder:
        assert (torch.triu(weights, diagonal=1) == 0).all()  # a step never sees a later token
        assert (torch.tril(weights) > 0).all()


def test_shapes_and_labels_of_a_translation(translation):
    model, tokenizer, config, output, maps = translation
    heads, n_src, steps = config.model.n_heads, len(tokenizer.encode(SOURCE)), len(output) + 1  # + the </s> step
    # readable: the text's pieces without Ġ; a token that is only a space shows as ␣
    assert "".join(maps.source_tokens).replace("␣", "") == SOURCE.replace(" ", "")
    assert len(maps.target_tokens) == steps and maps.decoder_inputs[0] == "<bos>"
    assert maps.decoder_inputs[1:] == maps.target_tokens[:-1]
    assert [w.shape for w in maps.encoder] == [(heads, n_src, n_src)] * config.model.n_encoder_layers
    assert [w.shape for w in maps.decoder] == [(heads, steps, steps)] * config.model.n_decoder_layers
    assert [w.shape for w in maps.cross] == [(heads, steps, n_src)] * config.model.n_decoder_layers
    # the output ids with their </s> give the same maps: the final step is counted once
    again = viz.translation_attention(model, tokenizer, SOURCE, [*output, tokenizer.eos_id], config)
    torch.testing.assert_close(again.cross[-1], maps.cross[-1])


def test_the_translated_output_is_what_translate_writes(translation):
    model, tokenizer, config, output, _ = translation
    assert tokenizer.decode(output) == translate(model, tokenizer, [SOURCE], config.decode, config.data.max_len)[0]


@pytest.mark.parametrize(("fixture", "bos_eos"), [("lm_dir", 1), ("bert_dir", 2)])
def test_shapes_of_single_stack_models(request, fixture, bos_eos):
    model, tokenizer, config = load_model_dir(request.getfixturevalue(fixture))
    text = "the man went to the city."
    maps = viz.self_attention(model, tokenizer, text)
    n = len(tokenizer.encode(text)) + bos_eos  # GPT: <bos> first; BERT: <bos> ... <eos> ([CLS] ... [SEP])
    assert len(maps.source_tokens) == n and maps.target_tokens == [] and maps.decoder == maps.cross == []
    assert [w.shape for w in maps.encoder] == [(config.model.n_heads, n, n)] * config.model.n_layers
    causal = fixture == "lm_dir"
    assert all((torch.triu(w, diagonal=1) == 0).all() == causal for w in maps.encoder)


def test_shapes_of_a_vit_and_its_rollout_grid(vit_dir):
    model, _, config = load_model_dir(vit_dir)
    m = config.model
    maps = viz.vit_attention(model, torch.rand(1, m.channels, m.image_size, m.image_size))
    n = (m.image_size // m.patch_size) ** 2 + 1
    assert maps.source_tokens[0] == "[CLS]" and len(maps.source_tokens) == n
    assert [w.shape for w in maps.encoder] == [(m.n_heads, n, n)] * m.n_layers
    grid = viz.cls_rollout(maps.encoder, m.image_size // m.patch_size)
    assert grid.shape == (4, 4) and 0 < grid.sum() <= 1  # the [CLS] row over the patches, [CLS] itself left out


def test_rollout_equals_the_formula():
    rng = np.random.default_rng(0)
    layers = [rng.random((3, 5, 5)) for _ in range(4)]
    layers = [w / w.sum(-1, keepdims=True) for w in layers]  # row-stochastic heads
    expected = np.eye(5)
    for w in layers:  # Abnar & Zuidema: A' = 0.5 * mean_heads(A) + 0.5 * I; R = A'_L ... A'_1
        expected = (0.5 * w.mean(0) + 0.5 * np.eye(5)) @ expected
    np.testing.assert_allclose(viz.rollout([torch.tensor(w) for w in layers]), expected, rtol=1e-12)
    np.testing.assert_allclose(viz.rollout(layers).sum(-1), np.ones(5))


def test_readable_tokens_strip_markers_and_join_byte_pieces():
    from transformer.data.tokenizer import train_bpe

    tokenizer = train_bpe(["hello world"] * 20, vocab_size=300, split_han=False)
    ids = tokenizer.encode("hello 起 world")
    labels = viz.readable_tokens(tokenizer.hf_tokenizer, ids)
    pieces = [tokenizer.hf_tokenizer.id_to_token(i) for i in ids]
    assert pieces[0] == "hello" and pieces[1] == "Ġ" and pieces[-1] == "Ġworld" and len(pieces) == 6
    assert labels == ["hello", "␣", "起", "起", "起", "world"]  # 起's three bytes each show the character


def test_heatmap_png_has_the_expected_pixel_size(tmp_path):
    path = plot_head(np.eye(3), ["a", "b", "c"], ["x", "y", "z"], "t", tmp_path / "h.png")
    width, height = heatmap_size(3, 3)
    with Image.open(path) as image:
        assert image.size == (round(width * DPI), round(height * DPI))
        assert np.asarray(image.convert("L")).std() > 0  # something is drawn


def test_save_attention_writes_a_png_per_head_and_a_grid_per_kind(translation, tmp_path):
    model, _, config, _, maps = translation
    written = save_attention(maps, tmp_path, layer=1)  # one layer's heads, and each kind's grid of all layers
    heads = config.model.n_heads
    assert len(written) == 3 * (heads + 1) and all(p.stat().st_size > 0 for p in written)
    steps, n_src = len(maps.target_tokens), len(maps.source_tokens)
    with Image.open(tmp_path / "cross-layer1-head3.png") as image:
        assert image.size == tuple(round(side * DPI) for side in heatmap_size(steps, n_src))
    assert written[-1].name == "cross-grid.png"


def test_align_prints_one_line_per_output_token_naming_a_source_token(model_dir, translation, capsys):
    *_, maps = translation
    assert main(["attention", "--model", str(model_dir), "--text", SOURCE, "--align", "--layer", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("translation: ")
    rows = [line.split("\t") for line in lines[1:]]
    assert [row[0] for row in rows] == maps.target_tokens
    assert all(row[1] in maps.source_tokens for row in rows)
    expected = [source for _, source, _ in viz.alignment(maps, 0)]
    assert [row[1] for row in rows] == expected


def test_vit_command_draws_the_rollout_over_the_image(vit_dir, tmp_path, capsys):
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype("uint8")).save(tmp_path / "digit.png")
    assert main(["attention", "--model", str(vit_dir), "--image", str(tmp_path / "digit.png"), "--out",
                 str(tmp_path / "out"), "--layer", "-1"]) == 0
    with Image.open(tmp_path / "out" / "rollout.png") as image:
        assert image.size == (800, 420)
    assert (tmp_path / "out" / "encoder-layer1-head0.png").is_file()


@pytest.mark.parametrize(("fixture", "extra", "message"), [
    ("model_dir", [], "give it with --text"),
    ("lm_dir", ["--image", "x.png"], "--image"),
    ("vit_dir", ["--text", "hello"], "give the image with --image"),
    ("model_dir", ["--text", SOURCE, "--layer", "7"], "--layer 7"),
    ("lm_dir", ["--text", "the man", "--align"], "--align needs a translation model"),
])
def test_cli_errors_are_one_line_and_exit_2(request, fixture, extra, message, tmp_path, capsys):
    args = ["attention", "--model", str(request.getfixturevalue(fixture)), "--out", str(tmp_path), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_model_loaded_for_decoding_gives_the_same_maps(model_dir, translation):
    """The server's models carry packed inference weights (nn/packed.py); the weights must not change."""
    *_, output, maps = translation
    model, tokenizer, config = load_model_dir(model_dir, for_decoding=True)
    packed = viz.translation_attention(model, tokenizer, SOURCE, output, config)
    for ours, theirs in zip(maps.encoder + maps.decoder + maps.cross, packed.encoder + packed.decoder + packed.cross,
                            strict=True):
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
