"""Packed inference weights: one explicit step after a model is loaded for decoding (as fairseq's
`make_generation_fast_`), never during training.

`pack_inference_weights(model)` gives every module that declares `PACKS` (multi-head attention, the
feed-forward, the output projection) copies of its linear weights concatenated along the outputs and
transposed to (in, out): Q, K and V of self-attention become one product, K and V of the memory another, and
a product of a few rows (a decoding step) reads the (in, out) layout faster than F.linear's (out, in) one
(figures in docs/PERFORMANCE.md). The copies are plain tensors outside the state_dict, built once and only
read afterwards, so concurrent searches can share them.

A module uses its packed weights only without autograd, and only while the linear layers they were built
from are still its own (a quantized or replaced layer is called as a module). `model.train()` and
`load_state_dict` drop them; a model whose parameters change in some other way (an in-place update, `.to()`)
needs `pack_inference_weights` again.

Shapes: N rows, I inputs, O outputs.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn


class PackedLinear(NamedTuple):
    """The linear layers `sources` as one product: x @ weight_t + bias."""

    weight_t: Tensor  # (I, O), the layers' weights concatenated along the outputs, transposed
    bias: Tensor | None  # (O,)
    sources: tuple[nn.Linear, ...]

    def __call__(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.size(-1))  # (N, I)
        out = torch.mm(rows, self.weight_t) if self.bias is None else torch.addmm(self.bias, rows, self.weight_t)
        return out.view(*x.shape[:-1], self.weight_t.size(1))  # (..., O)


def pack_linears(linears: tuple[nn.Linear, ...]) -> PackedLinear:
    with torch.no_grad():
        weight_t = torch.cat([m.weight for m in linears]).t().contiguous()  # (I, O)
        biases = [m.bias for m in linears]
        bias = None if any(b is None for b in biases) else torch.cat(biases)  # (O,)
    return PackedLinear(weight_t, bias, linears)


class Packable(nn.Module):
    """A module with linear layers that have a packed inference form.

    Subclasses name them in PACKS: {pack name: (names of nn.Linear submodules, concatenated in this order)}.
    """

    PACKS: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._packed: dict[str, PackedLinear] | None = None
        self.register_load_state_dict_post_hook(_drop_after_load)

    def pack(self) -> None:
        """Build the packed weights of every PACKS entry whose layers are all plain nn.Linear."""
        packed = {}
        for name, sources in self.PACKS.items():
            linears = tuple(self._modules[s] for s in sources)
            if all(_plain_linear(m) for m in linears):
                packed[name] = pack_linears(linears)
        self._packed = packed

    def unpack(self) -> None:
        self._packed = None

    def packed(self, name: str) -> PackedLinear | None:
        """The packed form `name`, when it exists, autograd is off and its layers are still this module's."""
        pack = None if self._packed is None or torch.is_grad_enabled() else self._packed.get(name)
        if pack is None:
            return None
        sources = self.PACKS[name]
        return pack if all(self._modules[s] is m for s, m in zip(sources, pack.sources, strict=True)) else None

    def train(self, mode: bool = True) -> Packable:
        if mode:
            self.unpack()  # training changes the weights: the packed copies would go stale
        return super().train(mode)


def _drop_after_load(module: nn.Module, incompatible_keys: object) -> None:
    module.unpack()


def _plain_linear(module: nn.Module | None) -> bool:
    """A plain nn.Linear without hooks, whose weights may be used directly."""
    return type(module) is nn.Linear and not module._forward_hooks and not module._forward_pre_hooks


def pack_inference_weights(model: nn.Module) -> nn.Module:
    """Put `model` in eval mode and pack the weights of every Packable module in it; returns `model`."""
    model.eval()
    for module in model.modules():
        if isinstance(module, Packable):
            module.pack()
    return model


def unpack_inference_weights(model: nn.Module) -> nn.Module:
    """Drop every packed copy in `model` (they are rebuilt only by pack_inference_weights)."""
    for module in model.modules():
        if isinstance(module, Packable):
            module.unpack()
    return model
