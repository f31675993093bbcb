"""The Bible's books: which are held out (two schemes of whole books) and which genre each belongs to.

Book numbers follow the database (1 = Genesis ... 66 = Revelation, the Protestant order).

Held-out schemes (`data.bible_split`):
- "books" (default, the translation split of Carlson, Riddell & Rockmore 2018): test Judges, 1 Samuel,
  Philippians, Hebrews; valid Ruth, Jonah, Philemon.
- "genres" (the genre classifier of configs/bert-bible-*.yaml): the "books" test and valid books, plus one more
  test book and one more valid book for each genre the "books" split lacks, so both hold every genre. Pretraining
  under this scheme never reads a test or valid book, in any translation.
"""

from __future__ import annotations

N_BOOKS = 66

# The six genres, in canonical order, with their books (ranges inclusive).
GENRES: tuple[str, ...] = ("Law", "History", "Wisdom and Poetry", "Prophets", "Gospels and Acts",
                           "Epistles and Revelation")
_GENRE_FIRST_BOOK = (1, 6, 18, 23, 40, 45)  # Genesis, Joshua, Job, Isaiah, Matthew, Romans

BOOK_SPLITS: dict[str, dict[str, frozenset[int]]] = {
    "books": {
        "test": frozenset({7, 9, 50, 58}),  # Judges, 1 Samuel, Philippians, Hebrews
        "valid": frozenset({8, 32, 57}),  # Ruth, Jonah, Philemon
    },
    "genres": {
        # + Numbers (Law), Ecclesiastes (Wisdom), Hosea (Prophets), John (Gospels)
        "test": frozenset({7, 9, 50, 58} | {4, 21, 28, 43}),
        # + Leviticus (Law), Song of Songs (Wisdom), Joel (Prophets), Mark (Gospels), 1 John (Epistles)
        "valid": frozenset({8, 32, 57} | {3, 22, 29, 41, 62}),
    },
}
SPLITS = BOOK_SPLITS["books"]  # the default scheme


def check_book(book_number: int) -> None:
    if not 1 <= book_number <= N_BOOKS:
        raise ValueError(f"book_number={book_number} is outside 1..{N_BOOKS} (1 = Genesis, 66 = Revelation)")


def check_scheme(scheme: str) -> None:
    if scheme not in BOOK_SPLITS:
        raise ValueError(f"data.bible_split={scheme!r}: use one of {sorted(BOOK_SPLITS)}")


def bible_split(book_number: int, scheme: str = "books") -> str:
    """The split ('train', 'valid' or 'test') a book belongs to under `scheme`."""
    check_book(book_number)
    check_scheme(scheme)
    for name, books in BOOK_SPLITS[scheme].items():
        if book_number in books:
            return name
    return "train"


def held_out_books(scheme: str) -> frozenset[int]:
    """The books no training split of `scheme` reads (its test and valid books)."""
    check_scheme(scheme)
    return BOOK_SPLITS[scheme]["test"] | BOOK_SPLITS[scheme]["valid"]


def genre_of(book_number: int) -> int:
    """The index into GENRES of a book's genre."""
    check_book(book_number)
    return sum(book_number >= first for first in _GENRE_FIRST_BOOK) - 1
