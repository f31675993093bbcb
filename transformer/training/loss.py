"""Label-smoothed cross-entropy (section 5.4), padding-aware and computed in fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Shapes: B batch, T target length, V vocabulary size.


def label_smoothed_cross_entropy(
    logits: Tensor,
    target: Tensor,
    pad_id: int,
    epsilon: float = 0.1,
    *,
    summed: bool = False,
) -> tuple[Tensor, int]:
    """Cross-entropy with label smoothing, ignoring positions whose target is ``pad_id``.

    Per token the loss is ``(1 - eps) * -log p(target) + eps * mean_v(-log p(v))`` (the uniform
    distribution over all V classes, the definition of ``F.cross_entropy(label_smoothing=eps)``).
    Padding positions count in neither term. Log-softmax runs in fp32 whatever the logits' dtype.

    Returns ``(loss, n_tokens)``: the loss is the sum over non-pad tokens divided by ``n_tokens``, or the
    plain sum with ``summed=True`` (for gradient accumulation: add the sums of the micro-batches, divide
    by the total token count). A batch with no non-pad token gives a loss of 0 with finite gradients.
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label smoothing epsilon={epsilon} is outside [0, 1); use e.g. 0.1 (the paper) or 0")
    if logits.dim() < 2 or logits.shape[:-1] != target.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} does not match target shape {tuple(target.shape)}; "
            "expected logits (B, T, V) and target (B, T)"
        )
    if target.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"target dtype {target.dtype} is not an integer type; pass token ids as torch.long")
    vocab = logits.shape[-1]
    mask = target != pad_id                                      # (B, T)
    if target.device.type == "cpu" and mask.any():
        # A bad id would make gather fail with an opaque message (or a device assert on GPU).
        ids = target[mask]
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"target ids span [{low}, {high}] but the vocabulary size is {vocab}")

    safe_target = torch.where(mask, target, torch.zeros_like(target))
    weight = mask.to(torch.float32)                              # (B, T): 1 for real tokens, 0 for padding
    total = _SmoothedNLL.apply(logits.reshape(-1, vocab), safe_target.reshape(-1), weight.reshape(-1), epsilon)
    n_tokens = int(mask.sum())
    if summed:
        return total, n_tokens
    return total / max(n_tokens, 1), n_tokens


class _SmoothedNLL(torch.autograd.Function):
    """sum_i w_i * ((1 - eps) * -log p_i(t_i) + eps * mean_v(-log p_i(v))) over rows i of logits (N, V).

    The same function autograd would differentiate, with its gradient in closed form:
    w_i * (softmax(z_i) - (1 - eps) * onehot(t_i) - eps / V). That spares the (N, V) buffers autograd's
    version fills and adds up for the gather, the mean and the log-softmax backward (with the fp32 cast of
    bf16 logits, ~100 of ~390 ms of a one-thread bf16 step of the `small` model with an 8,000 vocabulary
    before this change; docs/PERFORMANCE.md). Rows with weight 0 (padding) count 0 even if their logits
    are not finite.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, weight: Tensor, epsilon: float) -> Tensor:
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32)  # (N, V) fp32 whatever the logits' dtype
        nll = -log_probs.gather(-1, target[:, None]).squeeze(-1)  # (N,)
        per_token = nll if epsilon == 0.0 else (1.0 - epsilon) * nll - epsilon * log_probs.mean(dim=-1)
        ctx.save_for_backward(log_probs, target, weight)
        ctx.epsilon, ctx.dtype = epsilon, logits.dtype
        return torch.where(weight != 0, per_token * weight, 0.0).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        log_probs, target, weight = ctx.saved_tensors
        epsilon = ctx.epsilon
        scale = (grad * weight)[:, None]  # (N, 1)
        # In place: the log-probs are not needed again (a second backward through this loss, with
        # retain_graph, fails autograd's version check instead of reading them), and a fresh (N, V)
        # buffer costs page faults on every step here.
        out = log_probs.exp_().mul_(scale)  # softmax * w
        if epsilon:
            out.sub_(scale * (epsilon / log_probs.size(-1)))
        out.scatter_add_(-1, target[:, None], scale * -(1.0 - epsilon))
        return out.to(ctx.dtype), None, None, None

