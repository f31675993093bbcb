"""Packed inference weights: one explicit step after a model is loaded for decoding (as fairseq's
`make_generation_fast_`), never during training.

`pack_inference_weights(model)` gives every module that declares `PACKS` (multi-head attention, the feed-
forward, the output projection) copies of its linear weights concatenated along the outputs and transposed to
(in, out): Q, K and V of self-attention become one product, K and V of the memory another, and a product of a
few rows (a decoding step) reads the (in, out) layout faster than F.linear's (out, in) one. Products of many
rows (beam search over a batch) go through oneDNN instead, when the build has it, with the weights reordered
once into its blocked layout: its fp32 kernels ran ~2x MKL's on the decoder's shapes on the AMD CPU of
docs/PERFORMANCE.md, where MKL takes its AVX2 path. The copies are plain tensors outside the state_dict, built
once and only read afterwards, so concurrent searches can share them.

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

# Products of at least this many rows use the oneDNN-reordered weights (measured: docs/PERFORMANCE.md).
ONEDNN_MIN_ROWS = 16


class PackedLinear(NamedTuple):
    """The linear layers `sources` as one product: x @ weight_t + bias."""

    weight_t: Tensor  # (I, O), the layers' weights concatenated along the outputs, transposed
    bias: Tensor | None  # (O,)
    sources: tuple[nn.Linear, ...]
    onednn_weight: Tensor | None = None  # the same (O, I) weights in oneDNN's blocked layout (opaque)

    def __call__(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.size(-1))  # (N, I)
        if self.onednn_weight is not None and rows.size(0) >= ONEDNN_MIN_ROWS and _onednn_applies(rows):
            out = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.onednn_weight, self.bias, "none", [], "")
        elif self.bias is None:
            out = torch.mm(rows, self.weight_t)
        else:
            out = torch.addmm(self.bias, rows, self.weight_t)
        return out.view(*x.shape[:-1], self.weight_t.size(1))  # (..., O)


def pack_linears(linears: tuple[nn.Linear, ...], onednn: bool | None = None) -> PackedLinear:
    """One PackedLinear of `linears`; `onednn` (default: where the build and the weights allow it) adds the
    oneDNN layout."""
    with torch.no_grad():
        weight = torch.cat([m.weight for m in linears])  # (O, I)
        biases = [m.bias for m in linears]
        bias = None if any(b is None for b in biases) else torch.cat(biases)  # (O,)
        if onednn is None:
            onednn = onednn_available() and _onednn_applies(weight)
        onednn_weight = torch.ops.mkldnn._reorder_linear_weight(weight, 128) if onednn else None
    return PackedLinear(weight.t().contiguous(), bias, linears, onednn_weight)


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear with reordered weights (x86 and ARM CPU builds do)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _onednn_applies(x: Tensor) -> bool:
    """fp32 on the CPU with autocast off: the reordered weights are fp32 and oneDNN's op ignores autocast."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")


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
