"""The Vision Transformer (Dosovitskiy et al., 2021): an image read as a sequence of patches by the encoder.

An image is cut into P x P patches; each patch, flattened, is projected to d_model (the patch embedding, the
image's counterpart of a token embedding). A learned [CLS] vector goes first, learned positions are added,
and the same encoder stack as the paper's reads the sequence; the class is a linear head on [CLS]'s output.

Shapes: B batch, C channels, H x W image, P patch side, N = (H / P) * (W / P) patches, D d_model, K classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transformer.nn.dropout import Dropout
from transformer.nn.layers import Encoder
from transformer.nn.positional import LearnedPositionalEmbedding


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C * P * P), patches in row-major order, each flattened channel by channel."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"an image of {h} x {w} pixels cannot be cut into {patch} x {patch} patches; "
                         "choose a patch size that divides both sides")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)  # (B, C, H/P, P, W/P, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)  # (B, N, C*P*P)


def unpatchify(patches: Tensor, patch: int, channels: int, height: int, width: int) -> Tensor:
    """The inverse of `patchify`: (B, N, C * P * P) -> (B, C, H, W)."""
    b = patches.size(0)
    x = patches.reshape(b, height // patch, width // patch, channels, patch, patch)  # (B, H/P, W/P, C, P, P)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, height, width)  # (B, C, H, W)


class VisionTransformer(nn.Module):
    """Patches -> [CLS] + patch embeddings + positions -> encoder -> head on [CLS] -> class logits (B, K)."""

    def __init__(self, image_size: int, patch_size: int, channels: int, n_classes: int, stack: Encoder,
                 d_model: int, dropout: float = 0.0):
        super().__init__()
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Linear(channels * patch_size * patch_size, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.positions = LearnedPositionalEmbedding(n_patches + 1, d_model)
        self.dropout = Dropout(dropout)
        self.stack = stack
        self.head = nn.Linear(d_model, n_classes)

    def hidden_states(self, images: Tensor, need_weights: bool = False) -> Tensor:
        """images (B, C, H, W) -> the encoder's output (B, 1 + N, D), [CLS] first."""
        if images.dim() != 4 or images.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"images must have shape (B, {self.channels}, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        x = self.patch_embed(patchify(images, self.patch_size))  # (B, N, D)
        x = torch.cat([self.cls.expand(x.size(0), -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = self.dropout(x + self.positions(x.size(1)))
        return self.stack(x, None, need_weights)  # (B, 1 + N, D): every patch sees every other

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> class logits (B, K)."""
        return self.head(self.hidden_states(images)[:, 0])  # (B, K)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
