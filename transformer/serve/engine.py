"""The model side of `transformer serve`: a loaded model directory and the batch runner the DynamicBatcher
calls on its worker thread (batching.py). Nothing here knows about HTTP, except `ServeError`'s status."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformer.api import Loaded
from transformer.inference import Translation, load_model_dir, translate_scored

# The endpoint each task's model answers (see `ServedModel.require`).
TASK_ENDPOINTS = {"translation": "/api/translate", "lm": "/api/generate", "mlm": "/api/embed",
                  "classify": "/api/embed"}


class ServeError(Exception):
    """An error the client caused, answered with `status` and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServedModel:
    """A model directory loaded for decoding, and what each endpoint runs on it."""

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        model, tokenizer, config = load_model_dir(self.model_dir, for_decoding=True, device=device)
        self.loaded = Loaded(model, tokenizer, config)
        self.config = config

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def model_type(self) -> str:
        return self.config.model.type

    def endpoints(self) -> list[str]:
        return [TASK_ENDPOINTS[self.task]] if self.task in TASK_ENDPOINTS else []

    def require(self, endpoint: str) -> None:
        """ServeError 400 when this model's kind does not answer `endpoint`."""
        if endpoint in self.endpoints():
            return
        use = f"; it answers {self.endpoints()[0]}" if self.endpoints() else "; it answers only /api/info"
        raise ServeError(400, f"POST {endpoint} is not available: this server's model ({self.model_dir.name}) was "
                              f"trained for task {self.task!r} (model type {self.model_type}){use}")

    def count_tokens(self, text: str, prefix: str = "") -> int:
        """The ids of `text` as decoding sees it (prefix and the tokenizer's special tokens included)."""
        return len(self.loaded.tokenizer.encode_batch([prefix + text], add_special_tokens=True)[0])

    def default_beam(self, nbest: int) -> int:
        """The beam of a request that named none: the model's decode.beam, raised to `nbest`."""
        return max(self.config.decode.beam, nbest)

    def run(self, key: Hashable, items: list[Any]) -> list[Any]:
        """The batch runner: key[0] names the work ("translate", "generate", "embed")."""
        work = {"translate": self._translate, "generate": self._generate, "embed": self._embed}[key[0]]
        return work(key, items)

    def _translate(self, key: tuple, texts: list[str]) -> list[Any]:
        """key ("translate", beam, nbest, attention): one translate_scored batch of `texts`."""
        _, beam, nbest, attention = key
        decode = replace(self.config.decode, beam=beam, batch_size=len(texts))
        found = translate_scored(self.loaded.model, self.loaded.tokenizer, texts, decode, self.config.data.max_len,
                                 n_best=nbest)
        results: list[Any] = []
        for text, hypotheses in zip(texts, found, strict=True):
            result = {"translation": hypotheses[0].text, "nbest": [_hypothesis(h) for h in hypotheses],
                      "attention": None}
            if attention:
                try:
                    result["attention"] = self.attention(text, hypotheses[0])
                except ValueError as error:  # e.g. a text with no tokens
                    result = ServeError(422, f"no attention maps for this text: {error}")
            results.append(result)
        return results

    def attention(self, text: str, best: Translation) -> dict:
        """The cross-attention of the best translation of `text` (its search's tokens, teacher-forced):
        {source_tokens, target_tokens, cross: (layers, heads, T, S)} (transformer.viz.attention). Runs on the
        batcher's one worker thread: the layers keep the weights of the last pass, so passes must not overlap."""
        from transformer.viz.attention import translation_attention

        maps = translation_attention(self.loaded.model, self.loaded.tokenizer, text, list(best.tokens), self.config)
        return {"source_tokens": list(maps.source_tokens), "target_tokens": list(maps.target_tokens),
                "cross": [layer.float().tolist() for layer in maps.cross]}

    def _generate(self, key: tuple, requests: list[dict]) -> list[Any]:
        """Each request alone (sampling with its own seed): {"text": continuation}."""
        results: list[Any] = []
        for request in requests:
            try:
                [text] = self.loaded.generate(request["prompt"], max_new_tokens=request["max_new_tokens"],
                                              temperature=request["temperature"], top_k=request["top_k"],
                                              top_p=request["top_p"], seed=request["seed"])
                results.append({"text": text})
            except ValueError as error:  # e.g. prompt + max_new_tokens past the model's positions
                results.append(ServeError(422, str(error)))
        return results

    def _embed(self, key: tuple, batches: list[Sequence[str]]) -> list[Any]:
        """key ("embed", normalize): every request's texts embedded in one call, split back per request."""
        _, normalize = key
        texts = [text for batch in batches for text in batch]
        vectors = self.loaded.embed(texts, normalize=normalize).float().tolist()
        results, start = [], 0
        for batch in batches:
            rows = vectors[start : start + len(batch)]
            start += len(batch)
            results.append({"vectors": rows, "dim": len(rows[0]) if rows else 0})
        return results


def _hypothesis(h: Translation) -> dict:
    return {"text": h.text, "score": h.score if math.isfinite(h.score) else None}
