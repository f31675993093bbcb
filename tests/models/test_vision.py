"""The Vision Transformer: patches against a closed form, the round trip, learning, reading image files."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.config import ModelConfig
from transformer.data.images import read_image, shift
from transformer.models import VisionTransformer, build_model, patchify, unpatchify


def _config(**changes) -> ModelConfig:
    return ModelConfig(**{"type": "vision", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2, "dropout": 0.0,
                          "image_size": 8, "patch_size": 2, "channels": 1, "n_classes": 10, **changes})


def test_a_patch_is_its_square_of_pixels_channel_by_channel():
    images = torch.randn(2, 3, 6, 4)
    patches = patchify(images, 2)  # (2, 3 * 2, 3 * 2 * 2)
    assert patches.shape == (2, 6, 12)
    for row in range(3):
        for col in range(2):
            expected = images[:, :, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2].reshape(2, -1)
            torch.testing.assert_close(patches[:, row * 2 + col], expected, rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3))
def test_unpatchify_inverts_patchify(batch, channels, rows, cols, patch):
    images = torch.randn(batch, channels, rows * patch, cols * patch)
    patches = patchify(images, patch)
    assert patches.shape == (batch, rows * cols, channels * patch * patch)
    torch.testing.assert_close(unpatchify(patches, patch, channels, rows * patch, cols * patch), images,
                               rtol=0, atol=0)


def test_a_patch_size_that_does_not_divide_the_image_is_an_error():
    with pytest.raises(ValueError, match="cannot be cut into 3 x 3 patches"):
        patchify(torch.zeros(1, 1, 8, 8), 3)
    with pytest.raises(ValueError, match="patch size dividing the image size"):
        _config(patch_size=3)


def test_the_model_reads_cls_and_one_token_a_patch():
    model = build_model(_config()).eval()
    assert isinstance(model, VisionTransformer)
    images = torch.rand(3, 1, 8, 8)
    assert model.hidden_states(images).shape == (3, 1 + 16, 32)
    assert model(images).shape == (3, 10)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\), got \(3, 8, 8\)"):
        model(images[:, 0])


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_model(_config())
    images, labels = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05


def test_a_shift_moves_the_pixels_and_fills_the_border_with_zeros():
    images = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    moved = shift(images.expand(20, 1, 4, 4), torch.Generator().manual_seed(0), 1)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))[0, 0]
    windows = {tuple(padded[dy : dy + 4, dx : dx + 4].flatten().tolist()) for dy in range(3) for dx in range(3)}
    assert all(tuple(m[0].flatten().tolist()) in windows for m in moved)
    assert len({tuple(m.flatten().tolist()) for m in moved}) > 1


def test_an_image_file_is_read_ink_high_whatever_its_background(tmp_path):
    from PIL import Image

    ink = np.zeros((8, 8), dtype=np.uint8)
    ink[2:6, 3:5] = 255  # a white stroke on black, as the training digits
    Image.fromarray(ink).save(tmp_path / "dark.png")
    Image.fromarray(255 - ink).save(tmp_path / "light.png")  # the same stroke drawn in black on white
    dark, light = read_image(tmp_path / "dark.png", 8), read_image(tmp_path / "light.png", 8)
    assert dark.shape == (1, 1, 8, 8)
    torch.testing.assert_close(dark, torch.tensor(ink / 255.0, dtype=torch.float32).view(1, 1, 8, 8))
    torch.testing.assert_close(light, dark)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="is not an image file PIL can read"):
        read_image(tmp_path / "text.png", 8)
