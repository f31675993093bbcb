"""Dropout with a cheaper random mask on the CPU (same distribution as nn.Dropout).

Shapes: any; the mask has the input's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.nn.tracing import tracing


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on the CPU: the same distribution, drawn differently.

    torch's CPU dropout draws its mask with bernoulli_. This draws 31 random bits per element (random_ on
    int32, cheaper: figures in docs/PERFORMANCE.md) and keeps an element when they reach round(p * 2^31),
    i.e. with probability 1 - p up to 2^-31; kept elements are scaled by 1 / (1 - p) as in nn.Dropout.
    Other devices, and traced or compiled code, use F.dropout.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p == 1.0 or self.inplace or tracing():
            return F.dropout(x, self.p, True, self.inplace)
        return _CpuDropout.apply(x, self.p)


class _CpuDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        bits = torch.empty(x.shape, dtype=torch.int32).random_()  # uniform on [0, 2^31)
        scale = (bits >= round(p * 2**31)).to(x.dtype).mul_(1.0 / (1.0 - p))  # 0 or 1 / (1 - p)
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None
