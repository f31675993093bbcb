"""Label-smoothed cross-entropy (section 5.4), padding-aware and computed in fp32; and the same loss fused
with the output projection, computed chunk by chunk so that the (N, V) logits never exist at once."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Shapes: B batch, T target length, D d_model, V vocabulary size, N = B * T rows, C rows of a chunk.

# Rows of logits a chunk of the fused loss computes at once: CHUNK_ELEMENTS // V rows (256 at V = 8,000).
# A chunk's fp32 logits then take 8 MB, which stay in the allocator's reused memory instead of a fresh
# 32-130 MB buffer per step (docs/PERFORMANCE.md, "Training memory").
CHUNK_ELEMENTS = 2**21


def _check_epsilon(epsilon: float) -> None:
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label smoothing epsilon={epsilon} is outside [0, 1); use e.g. 0.1 (the paper) or 0")


def _check_target(target: Tensor, mask: Tensor, vocab: int) -> None:
    if target.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"target dtype {target.dtype} is not an integer type; pass token ids as torch.long")
    if target.device.type == "cpu" and mask.any():
        # A bad id would make gather fail with an opaque message (or a device assert on GPU).
        ids = target[mask]
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"target ids span [{low}, {high}] but the vocabulary size is {vocab}")


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
    _check_epsilon(epsilon)
    if logits.dim() < 2 or logits.shape[:-1] != target.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} does not match target shape {tuple(target.shape)}; "
            "expected logits (B, T, V) and target (B, T)"
        )
    vocab = logits.shape[-1]
    mask = target != pad_id                                      # (B, T)
    _check_target(target, mask, vocab)

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


def linear_label_smoothed_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    pad_id: int,
    epsilon: float = 0.1,
    *,
    summed: bool = False,
    chunk_rows: int | None = None,
) -> tuple[Tensor, int]:
    """``label_smoothed_cross_entropy(F.linear(hidden, weight, bias), target, ...)`` without the (N, V) logits.

    hidden (B, T, D) are the decoder's output states, weight (V, D) and bias (V,) the output projection's
    (``model.output_proj``; the weight may be tied to an embedding). The logits are computed ``chunk_rows``
    rows at a time (default ``CHUNK_ELEMENTS // V``), padding rows are skipped, and each chunk's gradient
    with respect to its logits is turned at once into its share of the gradients of ``hidden``, ``weight``
    and ``bias`` (when they require one), so the logits of a chunk are dropped before the next is computed.
    Memory beyond the inputs: one chunk of logits plus gradients of the size of ``hidden`` and ``weight``,
    instead of the (N, V) logits, their fp32 log-probabilities and their gradient.

    Same value and gradients as the unfused path, dtypes included: under CPU/CUDA autocast the product runs
    in the autocast dtype (bf16 logits, as ``nn.Linear`` gives), the log-softmax in fp32, and the gradient
    of the logits is rounded to that dtype before its products, as autograd does through ``nn.Linear``.
    The gradient of ``weight`` sums the chunks' products in fp32. Returns ``(loss, n_tokens)`` as
    ``label_smoothed_cross_entropy`` does.
    """
    _check_epsilon(epsilon)
    if hidden.dim() < 2 or hidden.shape[:-1] != target.shape:
        raise ValueError(
            f"hidden shape {tuple(hidden.shape)} does not match target shape {tuple(target.shape)}; "
            "expected hidden (B, T, D) and target (B, T)"
        )
    fits = weight.dim() == 2 and weight.shape[1] == hidden.shape[-1]
    if not fits or (bias is not None and bias.shape != weight.shape[:1]):
        raise ValueError(
            f"projection weight {tuple(weight.shape)} / bias {None if bias is None else tuple(bias.shape)} do not "
            f"fit hidden states of width {hidden.shape[-1]}; expected weight (V, {hidden.shape[-1]}) and bias (V,)"
        )
    vocab = weight.shape[0]
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_ELEMENTS // vocab)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be at least 1")
    mask = target != pad_id                                      # (B, T)
    _check_target(target, mask, vocab)
    device = hidden.device.type
    compute_dtype = hidden.dtype
    if torch.is_autocast_enabled(device) and hidden.dtype != torch.float64:
        compute_dtype = torch.get_autocast_dtype(device)         # what nn.Linear would compute in
    rows = mask.reshape(-1).nonzero().squeeze(1)                 # (n,) the non-pad rows
    # Inside an autograd Function's forward, grad mode is off and needs_input_grad ignores no_grad():
    # whether gradients will be wanted is decided here.
    grads = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (hidden, weight, bias))
    total = _LinearSmoothedNLL.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, bias, target.reshape(-1), rows, epsilon, chunk_rows,
        compute_dtype, grads,
    )
    n_tokens = int(rows.numel())
    if summed:
        return total, n_tokens
    return total / max(n_tokens, 1), n_tokens


class _LinearSmoothedNLL(torch.autograd.Function):
    """sum over rows r of ((1 - eps) * (lse_r - z_r[t_r]) + eps * (lse_r - mean_v z_r)), z = hidden @ W^T + b.

    lse_r is the log-sum-exp of row r's logits z_r; this equals the per-row loss of ``_SmoothedNLL``.
    The loss is a scalar, so its gradient is the upstream scalar times the gradient for an upstream 1:
    forward computes that gradient chunk by chunk (G = softmax(z) - (1 - eps) * onehot(t) - eps / V, then
    G @ W for the hidden rows, G^T @ hidden for W and the column sums of G for b) and backward only scales
    it. No logits are kept for backward and none are recomputed there (as Liger-Kernel's fused linear
    cross-entropy does). Without autograd (validation) only the loss is computed.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, rows: Tensor,
                epsilon: float, chunk_rows: int, compute_dtype: torch.dtype, grads: bool) -> Tensor:
        want_hidden, want_weight, want_bias = (grads and needed for needed in ctx.needs_input_grad[:3])
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.index_select(0, rows) if rows.numel() != hidden.shape[0] else hidden  # (n, D)
            h = h.to(compute_dtype)
            t = target.index_select(0, rows)                             # (n,)
            w = weight.to(compute_dtype)                                 # (V, D)
            b = None if bias is None else bias.to(compute_dtype)
            vocab = w.shape[0]
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(h, dtype=hidden.dtype) if want_hidden else None   # (n, D)
            acc = torch.promote_types(weight.dtype, torch.float32)          # fp32 sums (fp64 stays fp64)
            grad_w = torch.zeros_like(weight, dtype=acc) if want_weight else None
            grad_b = torch.zeros_like(bias, dtype=acc) if want_bias else None
            for start in range(0, h.shape[0], chunk_rows):
                h_c, t_c = h[start:start + chunk_rows], t[start:start + chunk_rows]    # (C, D), (C,)
                z = F.linear(h_c, w, b).float()                                         # (C, V) fp32
                lse = torch.logsumexp(z, dim=-1)                                        # (C,)
                nll = lse - z.gather(-1, t_c[:, None]).squeeze(-1)
                per_row = nll if epsilon == 0.0 else (1.0 - epsilon) * nll + epsilon * (lse - z.mean(dim=-1))
                total += per_row.sum()
                if not (want_hidden or want_weight or want_bias):
                    continue
                g = z.sub_(lse[:, None]).exp_()                                         # softmax, in place
                if epsilon:
                    g.sub_(epsilon / vocab)
                g.scatter_add_(-1, t_c[:, None], g.new_full((g.shape[0], 1), -(1.0 - epsilon)))
                g = g.to(compute_dtype)          # nn.Linear's backward sees the gradient in its own dtype
                if want_hidden:
                    grad_h[start:start + chunk_rows] = g @ w                            # (C, D)
                if want_weight:
                    grad_w += g.t() @ h_c                                               # (V, D)
                if want_bias:
                    grad_b += g.sum(0, dtype=acc)
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.rows, ctx.n_rows = rows, hidden.shape[0]
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.grads is None:
            raise RuntimeError("linear_label_smoothed_cross_entropy: a second backward through the same loss "
                               "(retain_graph=True) is not supported; compute the loss again")
        grad_h, grad_w, grad_b = ctx.grads
        ctx.grads = None  # scaled in place below: never used twice
        _, w_dtype, b_dtype = ctx.dtypes
        out_h = out_w = out_b = None
        if grad_h is not None:
            if grad_h.shape[0] == ctx.n_rows:
                out_h = grad_h.mul_(grad)
            else:  # padding rows get 0
                out_h = grad_h.new_zeros((ctx.n_rows, grad_h.shape[1])).index_copy_(0, ctx.rows, grad_h.mul_(grad))
        if grad_w is not None:
            out_w = grad_w.mul_(grad).to(w_dtype)
        if grad_b is not None:
            out_b = grad_b.mul_(grad).to(b_dtype)
        return out_h, out_w, out_b, None, None, None, None, None, None


def teacher_forced_loss(
    model: nn.Module,
    src: Tensor,
    tgt_in: Tensor,
    tgt_out: Tensor,
    pad_id: int,
    epsilon: float = 0.1,
    *,
    summed: bool = False,
) -> tuple[Tensor, int]:
    """The label-smoothed loss of an encoder-decoder on a teacher-forced batch, as ``(loss, n_tokens)``.

    src (B, S), tgt_in (B, T) (starting with BOS) and tgt_out (B, T) (ending with EOS) are token ids. The
    model's ``decoder_states`` go through ``linear_label_smoothed_cross_entropy`` with its ``output_proj``,
    so the (B, T, V) logits never exist (see ``_projected_loss``). Call it inside the autocast region of the
    forward pass, if any: the projection then runs in the autocast dtype, as it would inside the model.
    """
    states = getattr(model, "decoder_states", None)
    return _projected_loss(model, None if states is None else lambda: states(src, tgt_in),
                           lambda: model(src, tgt_in), tgt_out, pad_id, epsilon, summed)


def next_token_loss(
    model: nn.Module, inputs: Tensor, targets: Tensor, pad_id: int, epsilon: float = 0.0, *, summed: bool = False
) -> tuple[Tensor, int]:
    """The loss of a decoder-only model predicting `targets` (B, T), each input position's next token, from
    `inputs` (B, T), as ``(loss, n_tokens)``: through its ``hidden_states`` and the fused projection and loss,
    as ``teacher_forced_loss``. With epsilon 0 it is the negative log-likelihood (perplexity = exp of it)."""
    states = getattr(model, "hidden_states", None)
    return _projected_loss(model, None if states is None else lambda: states(inputs), lambda: model(inputs),
                           targets, pad_id, epsilon, summed)


def masked_token_loss(
    model: nn.Module, inputs: Tensor, targets: Tensor, pad_id: int, epsilon: float = 0.0, *, summed: bool = False
) -> tuple[Tensor, int]:
    """The loss of an encoder-only model predicting the original tokens `targets` (B, T) at its masked
    positions (`pad_id` elsewhere: not counted) from `inputs` (B, T), as ``(loss, n_tokens)``: through its
    ``mlm_states`` and the fused projection and loss, as ``teacher_forced_loss``."""
    states = getattr(model, "mlm_states", None)
    return _projected_loss(model, None if states is None else lambda: states(inputs), lambda: model(inputs),
                           targets, pad_id, epsilon, summed)


def _projected_loss(
    model: nn.Module,
    states: Callable[[], Tensor] | None,
    logits: Callable[[], Tensor],
    target: Tensor,
    pad_id: int,
    epsilon: float,
    summed: bool,
) -> tuple[Tensor, int]:
    """The loss of ``model``'s output projection of ``states()`` (B, T, D) against ``target``, fused chunk by
    chunk. A model without states (a wrapper such as DDP's), or whose output projection is not a plain
    ``nn.Linear`` (quantized, with hooks), goes through its full ``logits()`` and
    ``label_smoothed_cross_entropy``: the same loss."""
    proj = getattr(model, "output_proj", None)
    plain = type(proj) is nn.Linear and not proj._forward_hooks and not proj._forward_pre_hooks
    if plain and states is not None:
        return linear_label_smoothed_cross_entropy(states(), proj.weight, proj.bias, target, pad_id, epsilon,
                                                   summed=summed)
    return label_smoothed_cross_entropy(logits(), target, pad_id, epsilon, summed=summed)
