"""Decoding speed: our greedy and beam search vs Hugging Face `generate` (and CTranslate2) on identical weights.

usage: python bench/decode.py [--quick] [--threads 1,2] [--repeats 5]
       python bench/decode.py --model runs/NAME [--limit N]     (int8 BLEU change on the model's test split)
       python bench/decode.py --profile [--threads 1]            (torch.profiler tables: b1 greedy, b32 beam 4)
       python bench/decode.py --kernels [--threads 1]            (MKL vs oneDNN linear products by rows)

A random-weight Hugging Face MarianMTModel (seed 0; vocab 8000, d_model 256, 3+3 layers, 4 heads, d_ff 1024)
is converted with `transformer.interop.huggingface.model_from_hf`, so both run the same weights; CTranslate2
(when installed) gets the same weights through its own Marian converter. Every engine generates exactly 64
tokens per sentence (EOS suppressed until then: min = max = 64 new tokens) from random 32-token sources,
at batch 1 and 32, beam 1 and 4, at 1 and 2 threads. Before timing, our tokens are checked against Hugging
Face's (and the agreement of the other engines is printed). Each figure is the median of --repeats runs
after a warm-up run; the engines take turns within each round, so a slow spell of the machine hits all of
them. tokens/s = batch * 64 / seconds (best hypothesis only). The last line is one JSON object.

Engines: hf (generate, fp32), ours (fp32), ours-int8 (torch.ao.quantization.quantize_dynamic on every
nn.Linear, int8 weights, activations quantized on the fly), ct2-fp32 and ct2-int8.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VOCAB, emit_json, init_interop_threads, machine, marian_config, set_threads  # noqa: E402

from transformer.decoding import beam_search, greedy_search  # noqa: E402

try:  # explicit since the core restructuring (#10); before it, packed weights were built on first use
    from transformer.nn.packed import pack_inference_weights
except ImportError:  # the code before #10, for A/B runs
    pack_inference_weights = None

PAD, EOS, START = 0, 1, 0  # Marian: pad 0, </s> 1, decoding starts from the pad token
NEW_TOKENS, SRC_LEN = 64, 32
CONFIGS = [(1, 1), (1, 4), (32, 1), (32, 4)]  # (batch, beam)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with int8 dynamic quantization on every nn.Linear (the tied output projection too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def sources(batch: int, seed: int) -> Tensor:
    """Random ids (never the special ones 0-2) ending with </s>, as a Marian tokenizer makes them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, SRC_LEN - 1), generator=g)
    return torch.cat([ids, torch.full((batch, 1), EOS)], dim=1)  # (B, S)


# --------------------------------------------------------------------------------------------- engines


def hf_engine(hf: nn.Module) -> Callable[[Tensor, int], list[list[int]]]:
    def run(src: Tensor, beam: int) -> list[list[int]]:
        with torch.inference_mode():
            out = hf.generate(
                input_ids=src, attention_mask=torch.ones_like(src), num_beams=beam, do_sample=False,
                min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS, length_penalty=1.0, early_stopping=False,
            )
        return out[:, 1:].tolist()  # drop the decoder start token

    return run


def our_engine(model: nn.Module) -> Callable[[Tensor, int], list[list[int]]]:
    ids = dict(pad_id=PAD, bos_id=START, eos_id=EOS, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)

    def run(src: Tensor, beam: int) -> list[list[int]]:
        if beam == 1:
            return greedy_search(model, src, **ids)
        # alpha 0: every hypothesis has 64 tokens, so the ranking is by log-prob, as HF's length_penalty=1.
        return [best[0].tokens for best in beam_search(model, src, beam_size=beam, alpha=0.0, **ids)]

    return run


class _Vocabulary:
    """What CTranslate2's Marian loader reads from a tokenizer: token strings by id and two special tokens."""

    eos_token, unk_token = "</s>", "<unk>"

    def __init__(self, size: int):
        self.tokens = ["<pad>", "</s>", "<unk>"] + [f"t{i}" for i in range(3, size)]

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}


def ct2_convert(hf: nn.Module, workdir: Path) -> list[str] | None:
    """Convert `hf` to CTranslate2 fp32 and int8 models under workdir; their vocabulary, or None when
    ctranslate2 is missing."""
    try:
        import ctranslate2
        from ctranslate2.converters import transformers as ct2_transformers
    except ImportError:
        print("ctranslate2 is not installed: its rows are skipped")
        return None

    class Pad0MarianLoader(ct2_transformers.MarianMTLoader):
        def _remove_pad_weights(self, spec):  # the loader assumes pad = the last id; ours is 0: keep every row
            pass

    vocabulary = _Vocabulary(VOCAB)

    class InMemoryConverter(ctranslate2.converters.TransformersConverter):
        def load_model(self, model_class, path, **kwargs):
            return copy.deepcopy(hf)  # the loader edits the model it converts

        def load_tokenizer(self, tokenizer_class, path, **kwargs):
            return vocabulary

    registry = ct2_transformers._MODEL_LOADERS
    saved = registry.get("MarianConfig")
    registry["MarianConfig"] = Pad0MarianLoader()
    hf.config.save_pretrained(workdir / "hf")  # the converter reads the config from a directory
    try:
        for quantization in ("float32", "int8"):
            InMemoryConverter(str(workdir / "hf")).convert(str(workdir / quantization), quantization=quantization)
    finally:
        registry["MarianConfig"] = saved
    return vocabulary.tokens


def ct2_translators(workdir: Path, threads: int) -> dict:
    """CTranslate2 translators of the converted models at `threads` intra-op threads."""
    import ctranslate2

    return {name: ctranslate2.Translator(str(workdir / quantization), device="cpu", inter_threads=1,
                                         intra_threads=threads)
            for name, quantization in (("ct2-fp32", "float32"), ("ct2-int8", "int8"))}


def ct2_engine(translator, tokens: list[str]) -> Callable[[Tensor, int], list[list[int]]]:
    index = {token: i for i, token in enumerate(tokens)}

    def run(src: Tensor, beam: int) -> list[list[int]]:
        batch = [[tokens[i] for i in row] for row in src.tolist()]
        results = translator.translate_batch(
            batch, beam_size=beam, num_hypotheses=1, max_batch_size=0, length_penalty=1.0,
            min_decoding_length=NEW_TOKENS, max_decoding_length=NEW_TOKENS,
        )
        return [[index[t] for t in r.hypotheses[0]] for r in results]

    return run


# ------------------------------------------------------------------------------------------- measuring


def agreement(got: list[list[int]], expected: list[list[int]]) -> float:
    return sum(a == b for a, b in zip(got, expected, strict=True)) / len(expected)


def measure(engines: dict[str, Callable], src: Tensor, beam: int, repeats: int) -> tuple[dict, dict]:
    """Warm-up run of each engine (its output kept for the agreement check), then interleaved timed rounds."""
    outputs, times = {}, {name: [] for name in engines}
    for name, run in engines.items():
        outputs[name] = run(src, beam)
        lengths = {len(row) for row in outputs[name]}
        if lengths != {NEW_TOKENS}:
            raise RuntimeError(f"{name} generated {sorted(lengths)} tokens, not exactly {NEW_TOKENS}")
    for _ in range(repeats):
        for name, run in engines.items():
            time.sleep(0.3)  # let the previous engine's worker threads stop spinning (OpenMP waits ~200 ms)
            started = time.perf_counter()
            run(src, beam)
            times[name].append(time.perf_counter() - started)
    return outputs, times


def speed_bench(args: argparse.Namespace) -> None:
    from transformers import MarianMTModel
    from transformers.utils import logging as hf_logging

    from transformer.interop.huggingface import model_from_hf

    hf_logging.set_verbosity_error()
    print(f"machine: {machine()}")
    torch.manual_seed(0)
    hf = MarianMTModel(marian_config()).eval()
    hf.generation_config.forced_eos_token_id = None  # no forced EOS at the length limit
    hf.generation_config.bad_words_ids = None
    ours = model_from_hf(hf).eval()
    ours_int8 = quantize_int8(ours)
    if pack_inference_weights is not None:  # as `translate` loads a model (load_model_dir(for_decoding=True))
        pack_inference_weights(ours)
    # The random model's greedy output is degenerate (one token repeated), so also compare the logits of a
    # teacher-forced pass over a random target: identical weights give identical logits up to rounding.
    src, tgt = sources(2, seed=7), torch.cat([torch.zeros(2, 1, dtype=torch.long), sources(2, seed=8)], dim=1)
    with torch.inference_mode():
        theirs = hf(input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=tgt).logits
        difference = (ours(src, tgt) - theirs).abs().max().item()
    print(f"max |logit difference| ours vs HF, teacher-forced: {difference:.2e}")
    threads = [int(t) for t in args.threads.split(",")]
    workdir = tempfile.TemporaryDirectory()
    tokens = ct2_convert(hf, Path(workdir.name))
    rows = []
    for n in threads:
        set_threads(n)
        engines = {"hf": hf_engine(hf), "ours": our_engine(ours), "ours-int8": our_engine(ours_int8)}
        if tokens is not None:  # translators of this thread count only: idle ones of another would spin
            for name, translator in ct2_translators(Path(workdir.name), n).items():
                engines[name] = ct2_engine(translator, tokens)
        for batch, beam in CONFIGS:
            src = sources(batch, seed=1000 + batch)
            outputs, times = measure(engines, src, beam, args.repeats)
            same = agreement(outputs["ours"], outputs["hf"])
            if same < 1.0:
                print(f"  WARNING: ours and HF differ on {1 - same:.0%} of the sentences (batch {batch}, beam {beam})")
            for name, t in times.items():
                seconds = statistics.median(t)
                rows.append(dict(threads=n, batch=batch, beam=beam, engine=name, seconds=seconds,
                                 tok_s=batch * NEW_TOKENS / seconds, same_as_hf=agreement(outputs[name], outputs["hf"]),
                                 runs_ms=[round(x * 1000, 1) for x in t]))
            _print_rows([r for r in rows if (r["threads"], r["batch"], r["beam"]) == (n, batch, beam)])
        del engines
    workdir.cleanup()
    figures = _figures(rows)
    figures["max_logit_difference_vs_hf"] = float(f"{difference:.2e}")
    emit_json(figures)


def _print_rows(rows: list[dict]) -> None:
    hf = next(r for r in rows if r["engine"] == "hf")
    ct2 = next((r for r in rows if r["engine"] == "ct2-fp32"), None)
    for r in rows:
        vs_ct2 = f"{ct2['seconds'] / r['seconds']:9.2f}x" if ct2 else "        -"
        print(f"{r['threads']} thr  B={r['batch']:<3d} beam={r['beam']}  {r['engine']:10s} "
              f"{r['seconds'] * 1000:9.1f} ms {r['tok_s']:8.0f} tok/s  "
              f"vs HF {hf['seconds'] / r['seconds']:5.2f}x  vs ct2-fp32 {vs_ct2}  "
              f"same tokens as HF {r['same_as_hf']:4.0%}  runs {r['runs_ms']}", flush=True)


def _figures(rows: list[dict]) -> dict:
    def ratio(threads: int, batch: int, beam: int, engine: str, peer: str) -> float | None:
        where = (threads, batch, beam)
        pick = {r["engine"]: r["seconds"] for r in rows if (r["threads"], r["batch"], r["beam"]) == where}
        if engine not in pick or peer not in pick:
            return None
        return round(pick[peer] / pick[engine], 3)

    figures = {
        "b1_greedy_vs_hf": ratio(1, 1, 1, "ours", "hf"),
        "b32_beam4_vs_hf": ratio(1, 32, 4, "ours", "hf"),
        "b32_beam4_vs_ct2_fp32_1thread": ratio(1, 32, 4, "ours", "ct2-fp32"),  # goal: >= 1 (translating a file)
        "b1_greedy_ct2_int8_vs_hf_1thread": ratio(1, 1, 1, "ct2-int8", "hf"),  # what a user who deploys gets
        "b1_greedy_vs_ct2_fp32_1thread": ratio(1, 1, 1, "ours", "ct2-fp32"),
        "b1_greedy_int8_vs_ct2_fp32_1thread": ratio(1, 1, 1, "ours-int8", "ct2-fp32"),
        "b1_greedy_int8_vs_ct2_int8_1thread": ratio(1, 1, 1, "ours-int8", "ct2-int8"),
        "threads_of_headline": 1,
    }
    for n in sorted({r["threads"] for r in rows}):
        for batch, beam in CONFIGS:
            for engine in ("ours", "ours-int8", "ct2-fp32", "ct2-int8"):
                value = ratio(n, batch, beam, engine, "hf")
                if value is not None:
                    figures[f"t{n}_b{batch}_beam{beam}_{engine}_vs_hf"] = value
    figures["tok_s"] = {f"t{r['threads']}_b{r['batch']}_beam{r['beam']}_{r['engine']}": round(r["tok_s"]) for r in rows}
    figures["same_as_hf"] = {f"t{r['threads']}_b{r['batch']}_beam{r['beam']}_{r['engine']}": r["same_as_hf"]
                             for r in rows if r["same_as_hf"] < 1.0}
    figures["load_avg_end"] = machine()["load_avg"]
    return figures


# --------------------------------------------------------------------------------- int8 BLEU on a model


def bleu_bench(args: argparse.Namespace) -> None:
    """fp32 vs int8 dynamic quantization of a trained model directory: test BLEU, chrF and decoding time."""
    from transformer.data.datasets import load_split
    from transformer.evaluation.metrics import corpus_bleu, corpus_chrf
    from transformer.inference import load_model_dir, translate

    set_threads(int(args.threads.split(",")[0]))
    model, tokenizer, config = load_model_dir(args.model)
    corpus = load_split(config.data, "test")
    if corpus is None:
        raise ValueError(f"{args.model}'s data config names no test split")
    src, refs = corpus.src[: args.limit], corpus.tgt[: args.limit]
    figures = {"model": str(args.model), "segments": len(src), "beam": config.decode.beam}
    for name, m in (("fp32", model), ("int8", quantize_int8(model))):
        started = time.perf_counter()
        hyps = translate(m, tokenizer, src, config.decode, config.data.max_len)
        seconds = time.perf_counter() - started
        bleu, chrf = corpus_bleu(hyps, refs), corpus_chrf(hyps, refs)
        print(f"{name}: {bleu.detail}  chrF {chrf.score:.2f}  {seconds:.1f} s")
        figures[f"{name}_bleu"], figures[f"{name}_chrf"] = round(bleu.score, 2), round(chrf.score, 2)
        figures[f"{name}_seconds"] = seconds
    figures["bleu_change"] = round(figures["int8_bleu"] - figures["fp32_bleu"], 2)
    figures["speedup"] = round(figures["fp32_seconds"] / figures["int8_seconds"], 3)
    for name in ("fp32", "int8"):
        figures[f"{name}_seconds"] = round(figures[f"{name}_seconds"], 2)
    emit_json(figures)


def profile_search(threads: int, batch: int, beam: int) -> None:
    """torch.profiler's top ops of our decoding (packed, as `translate` runs) and of HF generate, 64 tokens."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import MarianMTModel

    from transformer.interop.huggingface import model_from_hf

    set_threads(threads)
    torch.manual_seed(0)
    hf = MarianMTModel(marian_config()).eval()
    ours = model_from_hf(hf).eval()
    if pack_inference_weights is not None:
        pack_inference_weights(ours)
    engines = {"ours": our_engine(ours), "hf": hf_engine(hf)}
    src = sources(batch, seed=1001)
    for name, run in engines.items():
        for _ in range(2):
            run(src, beam)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(src, beam)
        print(f"\n{name}, batch {batch} beam {beam}, 64 tokens, {threads} thread(s):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))


def linear_kernels(threads: int, repeats: int) -> None:
    """ms per product of the decoder's linear shapes by rows: MKL on (in, out) weights vs oneDNN's reordered
    weights (the two kernels of transformer/nn/packed.py)."""
    from transformer.nn.packed import pack_linears

    set_threads(threads)
    shapes = {"qkv 256->768": (256, 768), "out 256->256": (256, 256), "ffn 256->1024": (256, 1024),
              "ffn 1024->256": (1024, 256), "vocab 256->8000": (256, VOCAB)}
    rows_list = (1, 4, 8, 16, 32, 64, 128)
    print(f"{threads} thread(s), ms per product, median of {repeats} x 20 calls: mkl / onednn (ratio)")
    print(f"{'shape':<18}" + "".join(f"{f'N={n}':>22}" for n in rows_list))
    for name, (n_in, n_out) in shapes.items():
        packed = pack_linears((nn.Linear(n_in, n_out),), onednn=True)
        mkl = packed._replace(onednn_weight=None)
        cells = []
        for n in rows_list:
            x = torch.randn(n, n_in)
            ms = {}
            with torch.inference_mode():
                for label, fn in (("mkl", mkl), ("onednn", packed)):
                    fn(x)
                    runs = []
                    for _ in range(repeats):
                        started = time.perf_counter()
                        for _ in range(20):
                            fn(x)
                        runs.append((time.perf_counter() - started) / 20 * 1000)
                    ms[label] = statistics.median(runs)
            cells.append(f"{ms['mkl']:.3f}/{ms['onednn']:.3f} ({ms['mkl'] / ms['onednn']:.2f}x)")
        print(f"{name:<18}" + "".join(f"{c:>22}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine (median; default 5)")
    parser.add_argument("--quick", action="store_true", help="1 thread, 3 runs")
    parser.add_argument("--model", type=Path, help="a trained model directory: int8 vs fp32 BLEU on its test split")
    parser.add_argument("--limit", type=int, help="with --model: only the first N test segments")
    parser.add_argument("--profile", action="store_true",
                        help="torch.profiler tables of batch-1 greedy and batch-32 beam-4 instead")
    parser.add_argument("--kernels", action="store_true", help="MKL vs oneDNN linear products by rows instead")
    args = parser.parse_args()
    init_interop_threads()
    if args.quick:
        args.threads, args.repeats = "1", 3
    if args.profile:
        profile_search(int(args.threads.split(",")[0]), batch=1, beam=1)
        profile_search(int(args.threads.split(",")[0]), batch=32, beam=4)
    elif args.kernels:
        linear_kernels(int(args.threads.split(",")[0]), args.repeats)
    elif args.model is not None:
        bleu_bench(args)
    else:
        speed_bench(args)


if __name__ == "__main__":
    main()
