"""Text classification with an encoder-only model: examples as token ids and a label, batches of them, and
accuracy (a fraction in [0, 1]) with the balanced accuracy beside it (the mean of the per-class recalls, so a
small class counts as much as a large one)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.data.batching import TokenBatchSampler, pad_ids
from transformer.data.tokenizer import Tokenizer
from transformer.devices import model_device

Example = tuple[list[int], int]  # (token ids of the text, without <bos>/<eos>; the label's index)


@dataclass
class LabelledBatch:
    """`tokens` (B, T) = <bos> + text + <eos>, right-padded; `labels` (B,) class indices."""

    tokens: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.numel()


def encode_labelled(texts: Sequence[str], labels: Sequence[str], label_names: Sequence[str], tokenizer: Tokenizer,
                    max_len: int, where: str) -> list[Example]:
    """Each text's ids (cut to `max_len` tokens: a long text keeps its label) and its label's index in
    `label_names`; a label outside them is an error naming it and `where` the data came from."""
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"{where}: labels {unknown[:5]} are not among the {len(index)} the model knows "
                         f"({sorted(index)[:10]}); every label must occur in the training data")
    ids = tokenizer.encode_batch(list(texts), max_len=max_len)
    return [(row, index[label]) for row, label in zip(ids, labels, strict=True)]


def stratified_subset(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Indices (sorted) of `fraction` of the examples of each class, at least one each, drawn with `seed`."""
    if fraction >= 1:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    array, chosen = np.asarray(labels), []
    for label in np.unique(array):
        members = np.flatnonzero(array == label)
        chosen.extend(rng.permutation(members)[: max(1, round(fraction * len(members)))].tolist())
    return sorted(chosen)


def collate_labelled(examples: Sequence[Example], tokenizer: Tokenizer) -> LabelledBatch:
    tok = tokenizer
    tokens = pad_ids([[tok.bos_id, *ids, tok.eos_id] for ids, _ in examples], tok.pad_id)  # (B, T)
    return LabelledBatch(tokens, torch.tensor([label for _, label in examples], dtype=torch.long))


def labelled_batches(examples: Sequence[Example], sampler: TokenBatchSampler, tokenizer: Tokenizer,
                     start: int = 0) -> Iterator[LabelledBatch]:
    """The sampler's batches for its current epoch, from batch number `start` on."""
    for number, indices in enumerate(sampler):
        if number >= start:
            yield collate_labelled([examples[i] for i in indices], tokenizer)


def example_sampler(examples: Sequence[Example], max_tokens: int, shuffle: bool, seed: int = 0) -> TokenBatchSampler:
    return TokenBatchSampler([(0, len(ids) + 1) for ids, _ in examples], max_tokens, shuffle, seed)


@torch.no_grad()
def predict(model: nn.Module, examples: Sequence[Example], tokenizer: Tokenizer, max_tokens: int) -> Tensor:
    """Class probabilities (N, K) of `examples`, in their order (batched by length under `max_tokens`)."""
    sampler = example_sampler(examples, max_tokens, shuffle=False)
    rows: dict[int, Tensor] = {}
    for indices in sampler:
        batch = collate_labelled([examples[i] for i in indices], tokenizer)
        probs = torch.softmax(model.classify(batch.tokens.to(model_device(model))).float(), dim=-1).cpu()  # (B, K)
        rows.update(zip(indices, probs, strict=True))
    return torch.stack([rows[i] for i in range(len(examples))])


def classification_scores(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Mean cross-entropy, accuracy and balanced accuracy (over the classes present in `labels`)."""
    predicted = probs.argmax(dim=-1)
    recalls = [float((predicted[labels == c] == c).float().mean()) for c in labels.unique().tolist()]
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), labels)
    return {"loss": float(nll), "accuracy": float((predicted == labels).float().mean()),
            "balanced_accuracy": sum(recalls) / len(recalls)}


def evaluate_examples(model: nn.Module, examples: Sequence[Example], tokenizer: Tokenizer,
                      max_tokens: int) -> dict[str, float]:
    """`classification_scores` of `model` on `examples`."""
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return classification_scores(predict(model, examples, tokenizer, max_tokens), labels)
