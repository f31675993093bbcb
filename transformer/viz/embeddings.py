"""Probe a model's input token embedding matrix: nearest words, analogies (A - B + C) and a 2-D PCA picture.

The matrix is the one the model looks its input tokens up in: a GPT's or BERT's token embedding, and for an
encoder-decoder the target side's (the decoder's input, the language the model writes), which is also the
source side's when the model shares its embeddings (model.share_embeddings). Similarity is the cosine.

A word the tokenizer splits into several subword tokens has no row of its own: its vector is the mean of its
pieces' rows, and the result says so. The answers (candidates) are whole-word tokens only, those that begin a
word (byte-level BPE's 'Ġ' tokens, SentencePiece's '▁' ones, WordPiece's tokens without '##') and contain a
letter or digit: a piece from inside a word ('alem') or punctuation is no answer to "which word is near".

Shapes: V vocabulary, D d_model, N words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_SPECIAL = re.compile(r"<[^<>]*>|\[[^\[\]]*\]")  # <pad>, </s>, [CLS], [MASK]: special tokens, never words


@dataclass
class EmbeddingTable:
    """A token embedding matrix (V, D), the tokenizer that makes its ids, and which side of the model it is."""

    matrix: np.ndarray  # (V, D)
    hf_tokenizer: object  # a tokenizers.Tokenizer
    side: str  # e.g. "target (shared with the source)", "input"

    def label(self, token_id: int) -> str:
        """The token as a user reads it: its text, whitespace and word markers stripped."""
        return self.hf_tokenizer.decode([token_id], skip_special_tokens=False).strip() or "␣"


def model_embeddings(model, tokenizer) -> EmbeddingTable:
    """The input token embedding matrix of a loaded model (see the module's docstring for which one)."""
    from transformer.models.recurrent import RecurrentEncoderDecoder

    sides = ((model.src_embed.tokens, model.tgt_embed.tokens) if hasattr(model, "tgt_embed") else
             (model.encoder.embed, model.decoder.embed) if isinstance(model, RecurrentEncoderDecoder) else None)
    if sides is not None:  # an encoder-decoder: the paper's or a recurrent one
        side = "target side, shared with the source" if sides[0] is sides[1] else "target side: the decoder's input"
        return EmbeddingTable(_rows(sides[1].weight), tokenizer.target_hf_tokenizer, side)
    if hasattr(model, "embed") and hasattr(model.embed, "tokens"):
        return EmbeddingTable(_rows(model.embed.tokens.weight), tokenizer.hf_tokenizer, "input tokens")
    raise ValueError(f"{type(model).__name__} has no token embedding (an image model reads pixels); give a "
                     "translation, language or BERT model")


def _rows(weight) -> np.ndarray:
    return weight.detach().float().cpu().numpy()


def _marker(vocab: dict[str, int]) -> str:
    """How the vocabulary marks a word's beginning: 'Ġ' (byte-level BPE), '▁' (SentencePiece) or '' (WordPiece,
    which marks the continuation '##' instead)."""
    for marker in ("Ġ", "▁"):
        if any(token.startswith(marker) for token in vocab):
            return marker
    return ""


def candidates(table: EmbeddingTable) -> np.ndarray:
    """Ids of the whole-word tokens: begin a word, hold a letter or digit, are no special token (an added token,
    <unk>, or one spelled <...> or [...]); sorted."""
    vocab = table.hf_tokenizer.get_vocab(with_added_tokens=True)
    special = set(table.hf_tokenizer.get_added_tokens_decoder())
    marker = _marker(vocab)
    special.add(_unk_id(table.hf_tokenizer))
    keep = []
    for token, i in vocab.items():
        if i in special or i >= table.matrix.shape[0] or _SPECIAL.fullmatch(token):
            continue
        begins = token.startswith(marker) if marker else not token.startswith("##")
        rest = token[len(marker):] if marker else token
        if begins and any(ch.isalnum() for ch in rest):
            keep.append(i)
    return np.array(sorted(keep), dtype=np.int64)


def word_pieces(table: EmbeddingTable, word: str) -> list[int]:
    """The ids of `word` as it is written inside a text (after a space), refused when empty or unknown."""
    if not word.strip():
        raise ValueError(f"word {word!r} is empty; give a word, e.g. --nearest God")
    vocab = table.hf_tokenizer.get_vocab(with_added_tokens=True)
    text = word.strip() if _marker(vocab) == "" else " " + word.strip()
    ids = table.hf_tokenizer.encode(text, add_special_tokens=False).ids
    if not ids or _unk_id(table.hf_tokenizer) in ids:
        raise ValueError(f"word {word!r} is not in the model's vocabulary (it encodes to <unk>); try another word")
    marker = _marker(vocab)
    word_ids = [i for i in ids if not marker or table.hf_tokenizer.id_to_token(i) != marker]
    return word_ids or ids  # a bare 'Ġ' (the space before a word no token begins with) is no piece of the word


def _unk_id(hf_tokenizer) -> int | None:
    found = hf_tokenizer.token_to_id("<unk>")
    return hf_tokenizer.token_to_id("[UNK]") if found is None else found


def word_vector(table: EmbeddingTable, word: str) -> tuple[np.ndarray, list[int], str | None]:
    """The word's vector (D,): its token's row, or the mean of its pieces' rows with a note saying so."""
    ids = word_pieces(table, word)
    vector = table.matrix[ids].mean(axis=0)
    if len(ids) == 1:
        return vector, ids, None
    pieces = "|".join(table.label(i) for i in ids)
    return vector, ids, f"{word.strip()!r} is {len(ids)} tokens ({pieces}): using their mean"


def cosine_ranking(table: EmbeddingTable, vector: np.ndarray, exclude: set[int], k: int) -> list[tuple[str, float]]:
    """The k whole-word tokens most cosine-similar to `vector`, best first, leaving out the ids in `exclude`."""
    if k < 1:
        raise ValueError(f"--k {k}: ask for at least 1 neighbour")
    ids = np.array([i for i in candidates(table) if int(i) not in exclude], dtype=np.int64)
    rows = table.matrix[ids]  # (C, D)
    norms = np.linalg.norm(rows, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
    similarity = rows @ vector / np.maximum(norms, 1e-12)  # (C,)
    order = np.argsort(-similarity, kind="stable")[:k]
    return [(table.label(int(ids[j])), float(similarity[j])) for j in order]


def nearest(table: EmbeddingTable, word: str, k: int = 10) -> tuple[list[tuple[str, float]], list[str]]:
    """The word's k nearest whole-word tokens by cosine (the word's own token left out), and the notes."""
    vector, ids, note = word_vector(table, word)
    return cosine_ranking(table, vector, set(ids), k), [note] if note else []


def analogy(table: EmbeddingTable, a: str, b: str, c: str, k: int = 10) -> tuple[list[tuple[str, float]], list[str]]:
    """A - B + C ("king - man + woman"): the k whole-word tokens nearest by cosine to unit(A) - unit(B) +
    unit(C) (3CosAdd, Mikolov et al. 2013), the tokens of A, B and C left out; and the notes."""
    vectors, excluded, notes = [], set(), []
    for word in (a, b, c):
        vector, ids, note = word_vector(table, word)
        vectors.append(vector / max(float(np.linalg.norm(vector)), 1e-12))
        excluded |= set(ids)
        notes += [note] if note else []
    return cosine_ranking(table, vectors[0] - vectors[1] + vectors[2], excluded, k), notes


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal-component coordinates (N, 2) of the rows of `vectors` (N, D), N >= 2."""
    if vectors.shape[0] < 2:
        raise ValueError(f"a PCA picture needs at least 2 words, got {vectors.shape[0]}; name more words")
    centered = vectors - vectors.mean(axis=0)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    coords = u[:, :2] * s[:2]
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))  # two columns even for N = 2 (one component)


def plot_words(table: EmbeddingTable, words: list[str], out_path) -> tuple[np.ndarray, list[str]]:
    """A PNG of the words' 2-D PCA coordinates, each point labelled; returns the coordinates and the notes."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [word_vector(table, word) for word in words]
    coords = pca_2d(np.stack([vector for vector, _, _ in found]))
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.scatter(coords[:, 0], coords[:, 1], s=18)
    for word, (x, y) in zip(words, coords, strict=True):
        ax.annotate(word, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=9)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"token embeddings ({table.side}), 2-D PCA of {len(words)} words", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(Path(out_path), dpi=100)
    plt.close(fig)
    return coords, [note for _, _, note in found if note]
