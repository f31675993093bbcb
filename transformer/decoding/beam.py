"""Batched beam search over the model protocol of `transformer.decoding.protocol`.

Each example keeps K = beam_size live hypotheses; the batch is flattened to B*K rows. The source is encoded
once, the first step runs on the B examples alone, and then memory, source mask and cache are expanded to
B*K rows by index. At every step:

1. Log-probabilities are taken in fp32 after PAD and BOS logits are set to -inf (never produced).
   Candidates are live log-prob + next-token log-prob, K*V per example. At the first step only beam 0 is
   live (the others start at -inf), so no hypothesis appears twice.
2. An EOS candidate that ranks within the K best candidates of its example finishes a hypothesis (as in
   fairseq); a finished hypothesis leaves the beam and is never expanded.
3. The K best non-EOS candidates become the new live beams, and the cache is reordered to their parents.
   Live beams are ranked by raw log-probability; the length penalty only ranks finished hypotheses.

A cache that also has `set_beam_size(K)` and `reorder_beams(parents, kept_examples)` (our DecoderCache)
is expanded and reordered through them instead: it keeps the cross-attention keys and values once per
example, shared by the example's K beams, and copies them only when examples finish.
Before `min_new_tokens` tokens, EOS gets log-prob -inf (after the log-softmax, as in fairseq and HF).

Scores. score = log_prob / lp(length), with the GNMT length penalty lp(n) = ((5 + n) / 6) ** alpha, and
alpha = 0 meaning the raw log-probability. `length` counts the generated tokens *including* EOS (a
hypothesis cut at the length limit has no EOS and its length is the limit). Hypothesis.tokens exclude
BOS and EOS.

Stopping rule (exact). An example is done when one of these holds:
- it has K finished hypotheses and no live beam can beat the worst of them. A live beam with log-prob
  L <= 0 at length l can only end as a hypothesis of log-prob L' <= L (log-probs are <= 0) and length n
  with l < n <= limit, scoring L' / lp(n) <= L / lp(n) <= L / lp(limit), because lp(n) > 0 grows with n
  when alpha >= 0 and L <= 0. Every later hypothesis descends from a current live beam, so once
  max(L) / lp(limit) <= worst kept score, nothing the search could still find would enter the kept K:
  stopping here returns exactly what running on to the length limit would. (Hence alpha < 0 is refused.)
- it reached its length limit: the live beams are then finalized as they are, ranked with the others;
- no live beam has a finite log-prob left (a tiny vocabulary, or a model that put -inf everywhere).
Examples that are done leave the batch (their rows in memory, mask and cache are dropped), so an example's
result does not depend on the others in the batch. The `n_best` best finished hypotheses are returned,
best score first; an example may return fewer when fewer than n_best finite hypotheses exist.

With beam_size=1 and alpha=0 the result equals greedy search.

Shapes: B batch (examples still decoding), K beam, V vocab, T prefix length, S source length, D d_model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from transformer.decoding.protocol import (
    Seq2SeqModel,
    banned_index,
    check_min_new_tokens,
    check_source,
    check_vocab,
    inference,
    length_limits,
    mask_banned_,
)
from transformer.nn.masks import padding_mask
from transformer.special_ids import check_special_ids

logger = logging.getLogger(__name__)


@dataclass
class Hypothesis:
    """A finished hypothesis: tokens without BOS and EOS, score = log_prob / length penalty."""

    tokens: list[int]
    score: float
    log_prob: float


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016); 1 when alpha = 0."""
    return ((5.0 + length) / 6.0) ** alpha


def best_possible_score(log_prob: float, limit: int, alpha: float) -> float:
    """Upper bound on the score of any hypothesis that extends a live beam of log-prob `log_prob`.

    For log_prob <= 0 and alpha >= 0 that is log_prob / lp(limit) (see the module docstring). A log-prob
    above 0 can only be fp rounding; then log_prob itself bounds log_prob / lp(n), as lp(n) >= 1.
    """
    return log_prob / length_penalty(limit, alpha) if log_prob <= 0 else log_prob


class _Finished:
    """The best `size` finished hypotheses of one example, best score first (earlier first on ties)."""

    def __init__(self, size: int):
        self.size = size
        self.hypotheses: list[Hypothesis] = []

    def add(self, hypothesis: Hypothesis) -> None:
        if self.full and hypothesis.score <= self.hypotheses[-1].score:
            return
        position = len(self.hypotheses)
        while position > 0 and self.hypotheses[position - 1].score < hypothesis.score:
            position -= 1
        self.hypotheses.insert(position, hypothesis)
        del self.hypotheses[self.size :]

    @property
    def full(self) -> bool:
        return len(self.hypotheses) >= self.size

    @property
    def worst_score(self) -> float:
        return self.hypotheses[-1].score


def _check_settings(beam_size: int, n_best: int, alpha: float) -> None:
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size={beam_size!r} must be an integer >= 1")
    if not isinstance(n_best, int) or n_best < 1:
        raise ValueError(f"n_best={n_best!r} must be an integer >= 1")
    if n_best > beam_size:
        raise ValueError(f"n_best={n_best} exceeds beam_size={beam_size}; raise beam_size or lower n_best")
    if alpha < 0:
        raise ValueError(f"alpha={alpha} must be >= 0 (0 ranks by raw log-probability; GNMT uses 0.6-1.0)")


def beam_search(
    model: Seq2SeqModel,
    src: Tensor,
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    n_best: int = 1,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Beam search for every example of `src` (B, S); per example the n_best hypotheses, best first.

    The length limit is as in `greedy_search`. EOS gets log-prob -inf before `min_new_tokens` tokens (set
    after the log-softmax, as fairseq's min_len and Hugging Face's min_new_tokens do). `use_cache=False`
    recomputes the whole prefix every step.
    """
    _check_settings(beam_size, n_best, alpha)
    check_special_ids(pad_id, bos_id, eos_id)
    check_min_new_tokens(min_new_tokens)
    check_source(src)
    src = src.long()
    src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
    batch, k = src.size(0), beam_size
    if batch == 0:
        return []
    limits = length_limits(src_mask, max_len_a, max_len_b, max_new_tokens,
                           getattr(model, "max_positions", None))  # within a learned position table
    eos = torch.tensor([eos_id], device=src.device)
    rules = _Rules([_Finished(k) for _ in range(batch)], limits, eos, pad_id, alpha)
    banned = banned_index(pad_id, bos_id, eos_id, src.device)
    group = torch.arange(k, device=src.device)  # (K,)
    with inference(model):
        memory = model.encode(src, src_mask)  # (B, S, D)
        tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
        logits, cache = model.decode_step(tokens, memory, src_mask, None)  # (B, 1, V)
        check_vocab(logits.size(-1), pad_id, bos_id, eos_id)
        expand = torch.arange(batch, device=src.device).repeat_interleave(k)  # (B*K,)
        memory, src_mask = memory[expand], src_mask[expand]  # (B*K, ...)
        # A cache that can keep one cross-attention row per example for its K beams says so by
        # implementing set_beam_size / reorder_beams; any other is reordered row by row.
        grouped = use_cache and hasattr(cache, "set_beam_size") and hasattr(cache, "reorder_beams")
        if use_cache:
            cache = cache.set_beam_size(k) if grouped else cache.reorder(expand)
        else:
            cache = None
        log_probs = torch.log_softmax(mask_banned_(logits[:, -1], banned), dim=-1)[expand]  # (B*K, V)
        start = torch.full((batch, k), float("-inf"), device=src.device)  # (B, K)
        start[:, 0] = 0.0  # one live beam per example at the first step
        beams = _Beams(tokens[expand], start, list(range(batch)))
        step = 0
        while True:
            if step < min_new_tokens:
                log_probs[:, eos_id] = float("-inf")
            parents, beams, done = _step(log_probs, beams, rules, step)
            keep = [i for i, is_done in enumerate(done) if not is_done]
            if not keep:
                break
            kept = None
            if len(keep) < len(beams.examples):
                kept = torch.tensor(keep, device=src.device)  # (B',)
                rows = (kept[:, None] * k + group).view(-1)  # (B'*K,)
                parents, memory, src_mask = parents[rows], memory[rows], src_mask[rows]
                beams = _Beams(beams.tokens[rows], beams.log_probs[kept], [beams.examples[i] for i in keep])
            if cache is not None:  # the beams' parents, and the kept examples only
                cache = cache.reorder_beams(parents, kept) if grouped else cache.reorder(parents)
            inputs = beams.tokens if cache is None else beams.tokens[:, -1:]  # (B*K, T) or (B*K, 1)
            logits, new_cache = model.decode_step(inputs, memory, src_mask, cache)  # (B*K, t, V)
            cache = new_cache if use_cache else None
            log_probs = torch.log_softmax(mask_banned_(logits[:, -1], banned), dim=-1)  # (B*K, V)
            step += 1
    logger.debug("beam_search: %d examples, beam %d, %d steps", batch, k, step + 1)
    return [f.hypotheses[:n_best] for f in rules.finished]


@dataclass
class _Rules:
    """What one search keeps beside its live beams: the finished hypotheses of every example, the length
    limits, EOS (1,), PAD and the length-penalty alpha."""

    finished: list[_Finished]
    limits: list[int]
    eos: Tensor
    pad_id: int
    alpha: float


@dataclass
class _Beams:
    """The live beams of the examples still decoding, K consecutive rows per example."""

    tokens: Tensor  # (B*K, T) prefixes, BOS first
    log_probs: Tensor  # (B, K); -inf for a dead beam
    examples: list[int]  # the example behind each group of K rows


def _step(log_probs: Tensor, beams: _Beams, rules: _Rules, step: int) -> tuple[Tensor, _Beams, list[bool]]:
    """One beam step from the next-token log-probs (B*K, V): finish EOS candidates, select live beams,
    decide which examples are done.

    Returns the parent row of every new beam (B*K,), the new beams and, per example, whether it is done.
    """
    n, k = beams.log_probs.shape
    vocab = log_probs.size(-1)
    eos, finished, alpha = rules.eos, rules.finished, rules.alpha
    length = step + 1  # generated tokens, EOS included, of every hypothesis made at this step
    candidates = log_probs.view(n, k, vocab).add_(beams.log_probs[:, :, None])  # (B, K, V), in place
    # One top-2K serves both selections: at most K of them are EOS (one per beam), so the K best non-EOS
    # candidates are among them, in the same order as a top-K without EOS would give.
    top = candidates.view(n, k * vocab).topk(min(2 * k, k * vocab), dim=1)  # (B, 2K)
    kth_best = top.values[:, k - 1 : k]  # (B, 1)
    eos_scores = candidates.index_select(2, eos).view(n, k)  # (B, K)
    finishing = (eos_scores >= kth_best) & torch.isfinite(eos_scores)  # (B, K)
    non_eos_first = torch.argsort((top.indices % vocab == eos).to(torch.uint8), dim=1, stable=True)[:, :k]
    live_values, live_indices = top.values.gather(1, non_eos_first), top.indices.gather(1, non_eos_first)  # (B, K)
    alive = torch.isfinite(live_values)  # (B, K)
    # NaN (a row whose every allowed logit was -inf) counts as -inf: a dead beam, never a hypothesis.
    live_values = live_values.masked_fill(~alive, float("-inf"))
    new_tokens = torch.where(alive, live_indices % vocab, rules.pad_id)  # (B, K): dead beams hold PAD
    parents = (torch.arange(n, device=log_probs.device)[:, None] * k + live_indices // vocab).view(-1)
    new_prefixes = torch.cat([beams.tokens[parents], new_tokens.view(-1, 1)], dim=1)  # (B*K, T + 1)

    penalty = length_penalty(length, alpha)
    if finishing.any():
        prefixes = beams.tokens[:, 1:].tolist()
        eos_list = eos_scores.tolist()
        for i, beam in finishing.nonzero().tolist():
            log_prob = eos_list[i][beam]
            finished[beams.examples[i]].add(Hypothesis(prefixes[i * k + beam], log_prob / penalty, log_prob))
    live_list = live_values.tolist()
    done = []
    for i, example in enumerate(beams.examples):
        best_live = max(live_list[i])
        limit = rules.limits[example]
        if length >= limit:
            rows = new_prefixes[i * k : (i + 1) * k, 1:].tolist()
            for beam, log_prob in enumerate(live_list[i]):
                if log_prob != float("-inf"):
                    finished[example].add(Hypothesis(rows[beam], log_prob / penalty, log_prob))
            done.append(True)
        elif best_live == float("-inf"):
            done.append(True)
        else:
            pool = finished[example]
            done.append(pool.full and best_possible_score(best_live, limit, alpha) <= pool.worst_score)
    return parents, _Beams(new_prefixes, live_values, beams.examples), done
