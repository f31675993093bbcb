"""Text classifiers that ignore word order, or see only local order: what came before the Transformer (issue #14).

`BagOfWords`: a text is the multiset of its tokens. Its vector is the mean of their embedding rows, and a linear
layer maps that vector to the class logits,

    h = 1/|x| sum_{t in x} E[t]          logits = W dropout(h) + b,

the pad positions left out of the sum and of the count |x|.

`NGramClassifier`: fastText's classifier (Joulin et al., 2016, "Bag of Tricks for Efficient Text Classification"),
the same mean over the text's tokens and its token n-grams for n = 2..ngram_order, so that it sees local word
order ("not good" is not "good not"). As in fastText, the unigrams keep their own rows (the first V rows of the
table, so that order 1 is exactly the bag of words), and an n-gram of n >= 2 is hashed into one of B bucket rows
after them (rows V..V+B-1), colliding n-grams sharing a row. The hash is fastText's, h <- h * 116049371 + id over
the n-gram's ids, taken modulo B at every step so that it never overflows int64; it depends on the ids alone, so
it is the same on every machine and run. An n-gram is kept when none of its tokens is a pad.

A bag is a multiset: its rows are summed in a canonical order (the items' ids sorted), so the mean does not
depend on the token order, not even in its last bit. The classify task reads these models through `classify`
(tokens -> logits) as it reads BERT's; `sentence_embedding` is the mean vector h (`transformer embed`).
What needs a Transformer (token types, attention maps, ONNX and CTranslate2 export) is refused by name.

Shapes: B batch, T tokens, N items of the bag (tokens and n-grams), D d_model, K classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model_config import BAG_TYPES, ModelConfig

HASH_MULTIPLIER = 116049371  # fastText's (src/dictionary.cc, addWordNgrams)


def ngram_ids(tokens: Tensor, n: int, buckets: int, offset: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """The n-grams of each row, as row ids offset + hash(n-gram) mod buckets, and whether each is kept (none of
    its tokens is a pad): tokens (B, T) -> ids, keep (B, max(T - n + 1, 0))."""
    width = max(tokens.size(1) - n + 1, 0)
    h = torch.zeros(tokens.size(0), width, dtype=torch.long, device=tokens.device)  # (B, T-n+1)
    keep = torch.ones_like(h, dtype=torch.bool)
    for i in range(n):  # the n-gram's i-th token, at positions i..i+width-1
        piece = tokens[:, i : i + width].long()  # (B, T-n+1)
        h = (h * HASH_MULTIPLIER + piece) % buckets
        keep &= piece != pad_id
    return offset + h, keep


class BagOfWords(nn.Module):
    """The mean of the embedding rows of a text's non-pad tokens -> dropout -> a linear layer to K classes."""

    model_type = "bag_of_words"

    def __init__(self, vocab_size: int, d_model: int, n_classes: int, dropout: float = 0.0, pad_id: int = 0,
                 table_rows: int | None = None):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"model.type={self.model_type!r} needs model.n_classes >= 2 (the classify task sets it "
                             f"from the data's labels), got {n_classes}")
        self.vocab_size, self.pad_id = vocab_size, pad_id
        # the table (V [+ buckets], D), as `embed.tokens`, where `transformer embeddings` looks for a model's
        self.embed = nn.ModuleDict({"tokens": nn.Embedding(table_rows or vocab_size, d_model)})
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, n_classes)  # (K, D)
        nn.init.uniform_(self.embed.tokens.weight, -1 / d_model, 1 / d_model)  # fastText's initialization
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def bag(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The bag's items as table rows, and which are real (not pads): tokens (B, T) -> rows, keep (B, N)."""
        return tokens, tokens != self.pad_id

    def mean_vector(self, tokens: Tensor) -> Tensor:
        """h, the mean of the rows of the bag's items: tokens (B, T) -> (B, D); a text of pads only gets zeros."""
        rows, keep = self.bag(tokens)  # (B, N), (B, N)
        rows = rows.masked_fill(~keep, -1).sort(dim=1).values  # a canonical order, left out items (-1) first
        keep = rows >= 0
        vectors = self.embed.tokens(rows.clamp(min=0)) * keep.unsqueeze(-1)  # (B, N, D)
        count = keep.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        return vectors.sum(dim=1) / count  # (B, D)

    def classify(self, tokens: Tensor, token_types: Tensor | None = None) -> Tensor:
        """Class logits: tokens (B, T) -> (B, K)."""
        if token_types is not None:
            raise ValueError(f"model.type={self.model_type!r} reads no token types (segments); classify the "
                             "tokens alone, or use an encoder_only model (model.type_vocab_size)")
        return self.classifier(self.dropout(self.mean_vector(tokens)))  # (B, K)

    def forward(self, tokens: Tensor) -> Tensor:
        """Class logits: tokens (B, T) -> (B, K)."""
        return self.classify(tokens)

    def sentence_embedding(self, tokens: Tensor, pooling: str = "mean", normalize: bool = False) -> Tensor:
        """The text's vector h (B, D), the classifier's input, L2-normalized on request. Only pooling="mean"
        is a bag's: it has no [CLS] state, nor token states to take the maximum of."""
        if pooling != "mean":
            raise ValueError(f"model.embed_pooling={pooling!r}: model.type={self.model_type!r} embeds a text as "
                             "the mean of its rows; set model.embed_pooling=mean")
        vectors = self.mean_vector(tokens)  # (B, D)
        return F.normalize(vectors, dim=-1) if normalize else vectors

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class NGramClassifier(BagOfWords):
    """fastText: the mean of the rows of a text's tokens and of its hashed n-grams (n = 2..order) -> dropout ->
    a linear layer to K classes. The table holds V token rows, then `buckets` n-gram rows."""

    model_type = "ngram"

    def __init__(self, vocab_size: int, d_model: int, n_classes: int, dropout: float = 0.0, pad_id: int = 0,
                 order: int = 2, buckets: int = 65536):
        if order < 1 or buckets < 1:
            raise ValueError(f"model.ngram_order={order} and model.ngram_buckets={buckets} must be >= 1")
        super().__init__(vocab_size, d_model, n_classes, dropout, pad_id,
                         table_rows=vocab_size + (buckets if order > 1 else 0))
        self.order, self.buckets = order, buckets

    def bag(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The tokens' own rows, then those of the n-grams, n = 2..order: tokens (B, T) -> rows, keep (B, N)."""
        rows, keep = [tokens.long()], [tokens != self.pad_id]
        for n in range(2, self.order + 1):
            ids, kept = ngram_ids(tokens, n, self.buckets, self.vocab_size, self.pad_id)  # (B, T-n+1)
            rows.append(ids)
            keep.append(kept)
        return torch.cat(rows, dim=1), torch.cat(keep, dim=1)  # (B, N)


def build_bag_classifier(config: ModelConfig) -> BagOfWords:
    """The model of model.type "bag_of_words" or "ngram": d_model is the embedding size, the vocabulary
    tgt_vocab_size (the classify task sets it and n_classes from its tokenizer and labels)."""
    c = config
    if c.type == "bag_of_words":
        return BagOfWords(c.tgt_vocab_size, c.d_model, c.n_classes, c.dropout, c.pad_id)
    if c.type == "ngram":
        return NGramClassifier(c.tgt_vocab_size, c.d_model, c.n_classes, c.dropout, c.pad_id, c.ngram_order,
                               c.ngram_buckets)
    raise ValueError(f"model.type={c.type!r} is no bag classifier: use {' or '.join(map(repr, BAG_TYPES))}")
