"""`transformer.load(DIR)`: any model directory, loaded as the model, tokenizer and config it was written
with, with what its kind of model does (translate, generate, perplexity, embed, classify texts or images).

    bundle = transformer.load("runs/gpt-bible-en")
    bundle.generate("In the beginning", max_new_tokens=40, seed=0)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from transformer.config import BAG_TYPES, RunConfig
from transformer.data.batching import encode_segments
from transformer.data.tokenizer import Tokenizer
from transformer.decoding.sampling import sample
from transformer.evaluation.metrics import perplexity
from transformer.evaluation.nll import masked_nll, mean_nll
from transformer.inference import load_model_dir, translate
from transformer.model_dir import WEIGHTS_FILE


@dataclass
class Loaded:
    """A loaded model directory: `model` (in eval mode), `tokenizer`, `config` (`config.task` says its kind)."""

    model: nn.Module
    tokenizer: Tokenizer | None  # None for an image model
    config: RunConfig

    @property
    def task(self) -> str:
        return self.config.task

    def _require(self, task: str, what: str) -> None:
        if self.task != task:
            raise ValueError(f"{what} needs a model trained for task {task!r}; this one was trained for {self.task!r}")

    def translate(self, lines: Sequence[str], **decode_changes) -> list[str]:
        """Translations of `lines` (decode settings from config.yaml, changed by e.g. beam=1)."""
        self._require("translation", "translate")
        decode = replace(self.config.decode, **decode_changes)
        return translate(self.model, self.tokenizer, lines, decode, self.config.data.max_len)

    def generate_tokens(
        self, prompt: str, *, max_new_tokens: int = 100, temperature: float = 1.0, top_k: int | None = None,
        top_p: float | None = None, num_samples: int = 1, seed: int | None = None,
    ) -> Iterator[Tensor]:
        """Each step's new token ids (num_samples,), as `decoding.sampling.sample` yields them."""
        self._require("lm", "generate")
        tok = self.tokenizer
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return sample(self.model, [tok.bos_id, *tok.encode(prompt)], eos_id=tok.eos_id, pad_id=tok.pad_id,
                      bos_id=tok.bos_id, vocab_size=self.config.model.tgt_vocab_size, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p, num_samples=num_samples,
                      generator=generator, max_positions=getattr(self.model, "max_positions", None))

    def generate(self, prompt: str, **settings) -> list[str]:
        """`num_samples` continuations of `prompt`, as text (the prompt not repeated); settings as
        `generate_tokens`."""
        steps = [step.tolist() for step in self.generate_tokens(prompt, **settings)]
        samples = [list(column) for column in zip(*steps, strict=True)] if steps else []
        return [self.tokenizer.decode(ids) for ids in samples]

    def perplexity(self, texts: Sequence[str], max_tokens: int | None = None) -> float:
        """exp of the mean negative log-likelihood per predicted token of `texts`, one segment each: every next
        token (<eos> included) for a language model, the masked tokens under a fixed masking for an mlm one."""
        if self.task not in ("lm", "mlm"):
            raise ValueError(f"perplexity needs a model trained for task 'lm' or 'mlm'; this one was trained for "
                             f"{self.task!r}")
        segments = encode_segments(texts, self.tokenizer, self.config.data.max_len)
        score = mean_nll if self.task == "lm" else masked_nll
        return perplexity(score(self.model, segments, self.tokenizer, max_tokens or self.config.train.max_tokens))


    def embed(self, texts: Sequence[str], normalize: bool = False, batch_size: int = 64) -> Tensor:
        """Sentence embeddings (N, D) of an encoder-only model: the mean (or, per model.embed_pooling, the [CLS]
        state or the maximum) of each text's non-pad token states (<bos> and <eos>, BERT's [CLS] and [SEP],
        included), L2-normalized when `normalize` or model.embed_normalize. A bag-of-words or n-gram
        classifier's: the mean of its rows, the vector its linear layer reads."""
        if self.config.model.type not in ("encoder_only", *BAG_TYPES):
            raise ValueError(f"embed needs an encoder-only model (task 'mlm' or 'classify') or a bag classifier; "
                             f"this one was trained for {self.task!r}")
        from transformer.data.batching import pad_ids

        tok, rows, m = self.tokenizer, [], self.config.model
        normalize = normalize or m.embed_normalize
        encoded = tok.encode_batch(list(texts), max_len=self.config.data.max_len)
        ids = [[tok.bos_id, *row, tok.eos_id] for row in encoded]
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                batch = pad_ids(ids[start : start + batch_size], tok.pad_id)
                rows.append(self.model.sentence_embedding(batch, m.embed_pooling, normalize))
        return torch.cat(rows) if rows else torch.empty(0, self.config.model.d_model)

    def classify_texts(self, texts: Sequence[str]) -> Tensor:
        """Class probabilities (N, K) of texts, the classes named by `config.model.labels`."""
        self._require("classify", "classify_texts")
        from transformer.evaluation.classification import predict

        c = self.config
        examples = [(ids, 0) for ids in self.tokenizer.encode_batch(list(texts), max_len=c.data.max_len)]
        if not examples:
            return torch.empty(0, c.model.n_classes)
        with torch.inference_mode():
            return predict(self.model, examples, self.tokenizer, c.train.max_tokens)

    def score_labelled(self, texts: Sequence[str], labels: Sequence[str], where: str = "the texts") -> dict[str, float]:
        """Cross-entropy, accuracy and balanced accuracy of a classifier on `texts` labelled `labels` (names from
        config.model.labels; `where` names the data in the error for a label the model does not know)."""
        self._require("classify", "score_labelled")
        from transformer.evaluation.classification import encode_labelled, evaluate_examples

        c = self.config
        examples = encode_labelled(texts, labels, c.model.labels, self.tokenizer, c.data.max_len, where)
        with torch.inference_mode():
            return evaluate_examples(self.model, examples, self.tokenizer, c.train.max_tokens)

    def classify(self, images: Tensor) -> Tensor:
        """Class probabilities (B, K) of images (B, C, H, W) as `data.images.read_for_model` makes them (ours:
        pixels in [0, 1], ink high; an imported ViT's: normalized as its ViTImageProcessor does)."""
        self._require("image", "classify")
        with torch.inference_mode():
            return torch.softmax(self.model(images).float(), dim=-1)

    def classify_file(self, path: str | Path) -> Tensor:
        """Class probabilities (K,) of one image file, read as the model reads files (`data.images.read_for_model`:
        ours grey and inverted, an imported ViT's as its ViTImageProcessor)."""
        from transformer.data.images import read_for_model

        return self.classify(read_for_model(path, self.config.model))[0]


def load(model_dir: str | Path, weights: str = WEIGHTS_FILE, device: str | None = None) -> Loaded:
    """The model directory `model_dir` (written by `transformer train` or `import-hf`), ready for inference
    (packed weights on the CPU: see nn/packed.py) on `device` (a --device value; default: the CPU)."""
    model, tokenizer, config = load_model_dir(model_dir, weights, for_decoding=True, device=device)
    return Loaded(model, tokenizer, config)
