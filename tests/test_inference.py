"""translate(): order kept, and a line beam search finds no hypothesis for becomes an empty line."""

import logging

import pytest
import torch

import transformer.inference as inference_module
from tests.corpus import WORDS, cipher
from transformer.config import DecodeConfig, ModelConfig
from transformer.data.tokenizer import train_bpe
from transformer.inference import translate
from transformer.models import build_model

LINES = ["haus baum", "wort gott licht erde", "katze"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = train_bpe([*WORDS, *map(cipher, WORDS)] * 3, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size)
    return build_model(config).eval(), tokenizer


def test_a_line_without_hypothesis_becomes_an_empty_line_and_a_warning(model_and_tokenizer, monkeypatch, caplog):
    """beam_search may return fewer than n_best hypotheses, none at all when no finite one exists."""
    model, tokenizer = model_and_tokenizer
    decode = DecodeConfig(beam=2, max_len_b=5)
    expected = translate(model, tokenizer, LINES, decode)
    no_hypothesis = tokenizer.encode_batch([LINES[1]], add_special_tokens=True)[0]
    real_beam_search = inference_module.beam_search

    def beam_search_finding_nothing_for_line_2(model, src, **kwargs):
        found = real_beam_search(model, src, **kwargs)
        rows = [[t for t in row.tolist() if t != tokenizer.pad_id] for row in src]
        return [[] if row == no_hypothesis else best for row, best in zip(rows, found, strict=True)]

    monkeypatch.setattr(inference_module, "beam_search", beam_search_finding_nothing_for_line_2)
    with caplog.at_level(logging.WARNING, logger="transformer.inference"):
        outputs = translate(model, tokenizer, LINES, decode)
    assert outputs == [expected[0], "", expected[2]]
    assert "no hypothesis for line 2" in caplog.text
