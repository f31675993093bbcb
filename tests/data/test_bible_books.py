"""The Bible's held-out schemes and genres (data/bible_books.py), and the labelled verses of the classify task."""

from collections import Counter

import pytest

from tests.data.test_corpora import needs_bible
from transformer.config import BIBLE_SPLITS, DataConfig
from transformer.data.bible_books import BOOK_SPLITS, GENRES, bible_split, genre_of, held_out_books
from transformer.data.corpora import load_bible_verses
from transformer.data.datasets import load_labelled, load_texts


def test_the_config_names_the_schemes_the_data_module_has():
    assert tuple(BOOK_SPLITS) == BIBLE_SPLITS


@pytest.mark.parametrize(("first", "last", "genre"), [(1, 5, "Law"), (6, 17, "History"), (18, 22, "Wisdom and Poetry"),
                                                      (23, 39, "Prophets"), (40, 44, "Gospels and Acts"),
                                                      (45, 66, "Epistles and Revelation")])
def test_each_book_has_its_genre(first, last, genre):
    assert {GENRES[genre_of(book)] for book in range(first, last + 1)} == {genre}
    assert genre_of(first - 1) != genre_of(first) if first > 1 else True


def test_the_genre_scheme_holds_out_every_genre_in_test_and_in_valid_and_keeps_the_translation_split():
    genres = BOOK_SPLITS["genres"]
    for split in ("test", "valid"):
        assert {GENRES[genre_of(book)] for book in genres[split]} == set(GENRES)
        assert BOOK_SPLITS["books"][split] <= genres[split]  # the translation test set stays held out
    assert genres["test"].isdisjoint(genres["valid"])
    assert held_out_books("genres") == genres["test"] | genres["valid"]
    assert bible_split(4, "genres") == "test" and bible_split(4) == "train"  # Numbers
    with pytest.raises(ValueError, match="data.bible_split='x'"):
        bible_split(4, "x")


@needs_bible
def test_pretraining_under_the_genre_scheme_reads_no_held_out_book_in_any_translation():
    data = DataConfig(tgt="2", translations=("k", "2"), bible_split="genres")
    train = load_texts(data, "train")
    for code in ("k", "2"):
        held_out = {verse for split in ("test", "valid") for verse in load_bible_verses(code, split, "genres")[0]}
        kept = set(load_bible_verses(code, "train", "genres")[0])
        assert held_out and not (held_out - kept) & set(train)  # no verse only a held-out book has is trained on
    assert len(train) == sum(len(load_bible_verses(c, "train", "genres")[0]) for c in ("k", "2"))


@needs_bible
def test_the_labelled_verses_carry_their_books_genre():
    data = DataConfig(tgt="2", bible_split="genres")
    texts, labels = load_labelled(data, "test")
    _, books = load_bible_verses("2", "test", "genres")
    assert labels == [GENRES[genre_of(book)] for book in books] and len(texts) == len(labels)
    assert set(Counter(labels)) == set(GENRES)
    assert texts[0].startswith("And the LORD spoke unto Moses in the wilderness of Sinai")  # Numbers 1:1
