"""Root-mean-square layer normalization (Zhang and Sennrich, 2019), the LayerNorm of T5.

RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps): no mean is subtracted and there is no bias.
Shapes: (..., D).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """x / RMS(x), times a learned per-dimension weight; the mean of squares is taken in fp32."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        if d_model <= 0 or eps < 0:
            raise ValueError(f"RMSNorm needs d_model > 0 and eps >= 0, got d_model={d_model}, eps={eps}")
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean_square = x.float().pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        normed = x * torch.rsqrt(mean_square + self.eps)  # (..., D), fp32 when x is half precision
        return self.weight * normed.to(self.weight.dtype)  # (..., D)
