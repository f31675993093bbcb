import math

import pytest
import torch
from torch.testing import assert_close

from transformer.nn import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TokenEmbedding, sinusoidal_table


def test_sinusoidal_equals_the_formula_of_section_3_5():
    d_model = 16
    table = SinusoidalPositionalEncoding(d_model, max_len=8)(50)  # grows past max_len
    for pos in (0, 1, 7, 49):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_offset_continues_the_sequence_and_marian_layout_concatenates():
    pe = SinusoidalPositionalEncoding(8)
    assert_close(pe(3, offset=5), pe(8)[5:])
    interleaved, concatenated = sinusoidal_table(4, 8), sinusoidal_table(4, 8, interleaved=False)
    assert_close(concatenated[:, :4], interleaved[:, 0::2])
    assert_close(concatenated[:, 4:], interleaved[:, 1::2])


def test_learned_table_too_short_says_the_limit_and_the_fix():
    pe = LearnedPositionalEmbedding(max_len=200, d_model=8)
    assert pe(200).shape == (200, 8)
    with pytest.raises(ValueError, match=r"230 positions exceeds .* max_len=200.*sinusoidal"):
        pe(30, offset=200)


def test_token_embedding_is_scaled_by_sqrt_d_model():
    emb = TokenEmbedding(10, 16)
    ids = torch.tensor([[1, 2, 3]])
    assert_close(emb(ids), emb.weight[ids] * 4.0)


@pytest.mark.parametrize("bad", [10, -1])
def test_out_of_range_token_id_names_id_and_vocab(bad):
    emb = TokenEmbedding(10, 16)
    with pytest.raises(ValueError, match=rf"token id {bad} is out of range for a vocabulary of size 10"):
        emb(torch.tensor([[1, bad, 3]]))


def test_learned_row_offset_keeps_rows_before_position_0():
    pe = LearnedPositionalEmbedding(max_len=4, d_model=6, row_offset=2)  # BART's table: max_len + 2 rows
    assert pe.weight.shape == (6, 6)
    assert_close(pe(3, offset=1), pe.weight[3:6])
    with pytest.raises(ValueError, match=r"5 positions exceeds the learned positional table of max_len=4"):
        pe(3, offset=2)
