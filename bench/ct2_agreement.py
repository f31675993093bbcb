"""Exact token agreement of a CTranslate2 export with our greedy and beam search on a trained model.

usage: python bench/ct2_agreement.py --model runs/NAME [--limit 100] [--quantization float32] [--threads 1]

Exports the model directory (`transformer.interop.ct2.export_model_dir`) into a temporary directory, encodes
the first --limit test sources as `translate` does (at most data.max_len ids each), and counts the sources
whose best tokens are exactly the same under
  greedy:  greedy_search                     and  CTranslate2 beam_size=1
  beam:    beam_search(beam 4, alpha 0)      and  CTranslate2 beam_size=4, length_penalty=0
with the model's max_len_a / max_len_b (the same limit for both). For the sources that agree, it reports the
largest difference between the two engines' log-probabilities of the output.

Every disagreement is explained with our model, teacher-forced: for greedy, the log-probability gap between
the two tokens at the first position where the outputs differ (a tie is a gap CTranslate2's fp32 arithmetic
can flip); for beam, the log-probabilities of both outputs. Below --tie (1e-4 by default) the two engines met a
tie; above it, a bug (with float32 weights; with quantized ones, the quantization). The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, init_interop_threads, set_threads  # noqa: E402

from transformer.config import DecodeConfig  # noqa: E402
from transformer.data.datasets import load_split  # noqa: E402
from transformer.decoding import Hypothesis, beam_search, greedy_search  # noqa: E402
from transformer.decoding.protocol import banned_ids  # noqa: E402
from transformer.inference import load_model_dir  # noqa: E402
from transformer.interop.ct2 import Ct2Translator, export_model_dir, source_limits  # noqa: E402


def step_log_probs(model, src: list[int], tokens: list[int], ids: dict) -> torch.Tensor:
    """Our log-probabilities of every next token after each prefix of `tokens` (PAD and BOS banned, as the
    searches do): (len(tokens) + 1, V)."""
    tgt = torch.tensor([[ids["bos_id"], *tokens]])  # (1, T)
    with torch.inference_mode():
        logits = model(torch.tensor([src]), tgt)[0].float()  # (T, V)
        logits[:, banned_ids(**ids)] = float("-inf")
        return torch.log_softmax(logits, dim=-1)


def sequence_log_prob(model, src: list[int], tokens: list[int], limit: int, ids: dict) -> float:
    """log P(tokens, then EOS unless the output was cut at the length limit) under our model."""
    log_probs = step_log_probs(model, src, tokens, ids)
    total = sum(log_probs[t, token].item() for t, token in enumerate(tokens))
    return total + (log_probs[len(tokens), ids["eos_id"]].item() if len(tokens) < limit else 0.0)


def greedy_gap(model, src: list[int], ours: list[int], theirs: list[int], ids: dict) -> tuple[int, float]:
    """First position where the greedy outputs differ, and our log-prob gap between the two tokens there."""
    eos = ids["eos_id"]
    ours_full, theirs_full = [*ours, eos], [*theirs, eos]
    t = next(i for i, (a, b) in enumerate(zip(ours_full, theirs_full, strict=False)) if a != b)
    log_probs = step_log_probs(model, src, ours[:t], ids)[t]
    return t, abs(log_probs[ours_full[t]].item() - log_probs[theirs_full[t]].item())


def compare(name: str, ours: list, theirs: list, limits: list[int], explain, tie: float, other: str) -> dict:
    """Counts of agreement, ties and other disagreements (`other`: "bugs" for float32 weights); prints each
    disagreement with its explanation. Also how many of our outputs ended with EOS before their limit, and
    their mean length."""
    same = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a.tokens == b.tokens]
    figures = {f"{name}_same": len(same), f"{name}_ties": 0, f"{name}_{other}": 0,
               f"{name}_ended_with_eos": sum(len(h.tokens) < n for h, n in zip(ours, limits, strict=True)),
               f"{name}_mean_tokens": round(sum(len(h.tokens) for h in ours) / max(1, len(ours)), 1),
               f"{name}_max_log_prob_diff": max((abs(ours[i].log_prob - theirs[i].log_prob) for i in same),
                                                default=0.0)}
    for i in sorted(set(range(len(ours))) - set(same)):
        gap, detail = explain(i)
        kind = "ties" if gap < tie else other
        figures[f"{name}_{kind}"] += 1
        print(f"  {name} differs on source {i} ({kind}): {detail}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a trained model directory")
    parser.add_argument("--limit", type=int, default=100, help="the first N test sources (default 100)")
    parser.add_argument("--quantization", default="float32", help="CTranslate2 weight type (default float32)")
    parser.add_argument("--threads", type=int, default=1, help="threads of both engines (default 1)")
    parser.add_argument("--tie", type=float, default=1e-4, help="log-prob gap below which outputs met a tie")
    args = parser.parse_args()
    init_interop_threads()
    set_threads(args.threads)
    model, tokenizer, config = load_model_dir(args.model)
    corpus = load_split(config.data, "test")
    if corpus is None:
        raise ValueError(f"{args.model}'s data config names no test split")
    sources = tokenizer.encode_batch(corpus.src[: args.limit], add_special_tokens=True, max_len=config.data.max_len)
    ids = dict(pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    limits = dict(max_len_a=config.decode.max_len_a, max_len_b=config.decode.max_len_b)
    with tempfile.TemporaryDirectory() as workdir:
        out = export_model_dir(args.model, Path(workdir) / "ct2", quantization=args.quantization)
        translator = Ct2Translator(out, threads=args.threads)
        ct2 = {beam: translator.translate_ids(sources, DecodeConfig(beam=beam, alpha=0.0, **limits)) for beam in (1, 4)}
    limit = source_limits(sources, DecodeConfig(**limits))
    ours: dict[int, list[Hypothesis]] = {1: [], 4: []}
    for i, source in enumerate(sources):  # one at a time: no padding, as CTranslate2 sees each source
        src = torch.tensor([source])
        tokens = greedy_search(model, src, **ids, **limits)[0]
        log_prob = sequence_log_prob(model, source, tokens, limit[i], ids)
        ours[1].append(Hypothesis(tokens, log_prob, log_prob))
        ours[4].append(beam_search(model, src, **ids, beam_size=4, alpha=0.0, **limits)[0][0])

    def explain_greedy(i: int) -> tuple[float, str]:
        t, gap = greedy_gap(model, sources[i], ours[1][i].tokens, ct2[1][i].tokens, ids)
        return gap, f"first at position {t}, log-prob gap {gap:.2e} between the two tokens"

    def explain_beam(i: int) -> tuple[float, str]:
        mine, theirs = (sequence_log_prob(model, sources[i], h.tokens, limit[i], ids) for h in (ours[4][i], ct2[4][i]))
        return abs(mine - theirs), f"log P ours {mine:.6f}, CTranslate2's output {theirs:.6f} (under our model)"

    figures = {"model": str(args.model), "segments": len(sources), "quantization": args.quantization,
               "max_len_a": limits["max_len_a"], "max_len_b": limits["max_len_b"], "threads": args.threads}
    other = "bugs" if args.quantization == "float32" else "quantization"  # int8 weights change the numbers
    figures.update(compare("greedy", ours[1], ct2[1], limit, explain_greedy, args.tie, other))
    figures.update(compare("beam4_alpha0", ours[4], ct2[4], limit, explain_beam, args.tie, other))
    print(f"greedy: {figures['greedy_same']}/{len(sources)} identical; "
          f"beam 4, alpha 0: {figures['beam4_alpha0_same']}/{len(sources)} identical")
    emit_json(figures)


if __name__ == "__main__":
    main()
