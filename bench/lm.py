"""A GPT language model, ours vs Hugging Face GPT2LMHeadModel, trained one after the other for the same minutes.

usage: python bench/lm.py [--config configs/gpt-bible-en.yaml] [--minutes 10] [--threads 2] [--hf-bf16]
                         [--contenders ours,hf]

Both models have the config's dimensions (configs/gpt-bible-en.yaml: d_model 256, 4 heads, d_ff 1024, 4 layers,
pre-LN, GELU, 256 learned positions, tied embeddings, dropout 0.1), each initialized as its authors do. They
read the same data in the same order: the config's BPE tokenizer, trained once here, and the same token-budget
batches of whole verses (TokenBatchSampler, same seed). Both take Adam with the config's betas, eps and clipping,
and the same learning rate: `learning_rate(update, share of the minutes used)`, the trainer's warmup, inverse
square root and cooldown. Ours runs in the trainer's mode (bf16 autocast when the config says so, its fused
output projection + loss, `make_optimizer`'s fused Adam); the peer is a plain fp32 loop over the model's full
logits with torch.optim.Adam (--hf-bf16: under bf16 autocast too). Perplexity of both is computed by the same
code (`mean_nll`, <eos> included) on the valid and test books of the config's `data.tgt`. tokens/s counts the
predicted tokens of the training batches over the training seconds. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, init_interop_threads, machine, set_threads  # noqa: E402

from transformer.config import ModelConfig, RunConfig  # noqa: E402
from transformer.data.batching import TokenBatchSampler, batches, collate_segments, encode_segments  # noqa: E402
from transformer.data.datasets import load_texts  # noqa: E402
from transformer.data.tokenizer import train_bpe  # noqa: E402
from transformer.evaluation.metrics import perplexity  # noqa: E402
from transformer.evaluation.nll import mean_nll  # noqa: E402
from transformer.models import build_model  # noqa: E402
from transformer.training import learning_rate, make_optimizer, set_learning_rate  # noqa: E402
from transformer.training.loss import next_token_loss  # noqa: E402


class HFLogits(nn.Module):
    """A GPT2LMHeadModel called as a plain model: token ids (B, T) -> logits (B, T, V)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, inputs: Tensor) -> Tensor:
        return self.hf(input_ids=inputs).logits  # right padding: no real position sees it, no mask needed


def gpt2_like(m: ModelConfig, bos_id: int, eos_id: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=m.tgt_vocab_size, n_positions=m.max_positions, n_embd=m.d_model,
                        n_layer=m.n_layers, n_head=m.n_heads, n_inner=m.d_ff, activation_function=m.activation,
                        resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=m.attention_dropout,
                        layer_norm_epsilon=m.layer_norm_eps, bos_token_id=bos_id, eos_token_id=eos_id)
    return HFLogits(GPT2LMHeadModel(config))


def train_for(model: nn.Module, optimizer, segments, tokenizer, config: RunConfig, minutes: float,
              bf16: bool) -> dict:
    """Train `model` for `minutes` of training time; return updates, tokens and seconds."""
    t = config.train
    sampler = TokenBatchSampler.from_segments(segments, t.max_tokens, shuffle=True, seed=t.seed)
    budget, seconds, tokens, step, epoch = minutes * 60, 0.0, 0, 0, 0
    model.train()
    while seconds < budget:
        sampler.set_epoch(epoch)
        for batch in batches(segments, sampler, tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, 0,
                             collate_segments):
            started = time.perf_counter()
            set_learning_rate(optimizer, learning_rate(step + 1, seconds / budget, warmup=t.warmup, peak_lr=t.lr,
                                                       cooldown=t.cooldown))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss_sum, n = next_token_loss(model, batch.inputs, batch.targets, tokenizer.pad_id,
                                              t.label_smoothing, summed=True)
            (loss_sum / n).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - started
            tokens, step = tokens + n, step + 1
            if step % 200 == 0:
                print(f"  update {step}: loss {float(loss_sum.detach()) / n:.3f}, {seconds / 60:.1f} min", flush=True)
            if seconds >= budget:
                break
        epoch += 1
    return {"updates": step, "tokens": tokens, "seconds": round(seconds, 1), "tok_s": round(tokens / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/gpt-bible-en.yaml")
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes of each model (default 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hf-bf16", action="store_true", help="train the peer under bf16 autocast too")
    parser.add_argument("--contenders", default="ours,hf", help="which to train, of ours,hf (default: both)")
    args = parser.parse_args()
    init_interop_threads()
    set_threads(args.threads)
    config = RunConfig.load(args.config)
    data, t = config.data, config.train
    train_texts = load_texts(data, "train")
    tokenizer = train_bpe(train_texts, data.vocab_size, data.min_frequency, split_han=data.split_han)
    segments = encode_segments(train_texts, tokenizer, data.max_len)
    held_out = {split: encode_segments(load_texts(data, split), tokenizer, data.max_len) for split in ("valid", "test")}
    m = config.model.replace(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size,
                             pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    print(f"{len(segments):,} training segments, vocabulary {tokenizer.vocab_size}, {args.minutes} min each, "
          f"{args.threads} threads", flush=True)
    figures: dict = {"machine": machine(), "minutes": args.minutes, "threads": args.threads,
                     "train_segments": len(segments)}
    for name in args.contenders.split(","):
        torch.manual_seed(t.seed)
        if name == "ours":
            model = build_model(m)
            optimizer, bf16 = make_optimizer(model, t.lr, t.betas, t.adam_eps, t.weight_decay), t.bf16
        else:
            model = gpt2_like(m, tokenizer.bos_id, tokenizer.eos_id)
            optimizer, bf16 = torch.optim.Adam(model.parameters(), lr=t.lr, betas=t.betas, eps=t.adam_eps), args.hf_bf16
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params:,} parameters, bf16={bf16}", flush=True)
        run = train_for(model, optimizer, segments, tokenizer, config, args.minutes, bf16)
        model.eval()
        for split, held in held_out.items():
            run[f"{split}_perplexity"] = round(perplexity(mean_nll(model, held, tokenizer, t.max_tokens)), 2)
        run |= {"parameters": params, "bf16": bf16}
        print(f"{name}: {run}", flush=True)
        figures[name] = run
    if "ours" in figures and "hf" in figures:
        figures["tok_s_ours_vs_hf"] = round(figures["ours"]["tok_s"] / figures["hf"]["tok_s"], 2)
        figures["test_perplexity_ours_minus_hf"] = round(figures["ours"]["test_perplexity"]
                                                         - figures["hf"]["test_perplexity"], 2)
    emit_json(figures)


if __name__ == "__main__":
    main()
