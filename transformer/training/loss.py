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

    log_probs = F.log_softmax(logits.float(), dim=-1)            # (B, T, V) fp32
    safe_target = torch.where(mask, target, torch.zeros_like(target))
    nll = -log_probs.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)   # (B, T)
    per_token = nll if epsilon == 0.0 else (1.0 - epsilon) * nll - epsilon * log_probs.mean(dim=-1)
    total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
    n_tokens = int(mask.sum())
    if summed:
        return total, n_tokens
    return total / max(n_tokens, 1), n_tokens
