"""Images for the Vision Transformer: scikit-learn's bundled 8 x 8 digits (no download), a fixed split, batches
with an optional shift augmentation, and reading a user's image file for `transformer predict`.

The split of the 1,797 digits is stratified and fixed: the images of each class, in `load_digits()` order,
are shuffled by numpy's `default_rng(0)`; the first 20% of each class (rounded down) are test, the next 10%
valid, the rest train: 355 test, 176 valid, 1,266 train images (per-class counts: docs/RESULTS.md). The
dataset lists its images in a repeating 0, 1, ..., 9 order, so a split by index alone would put whole
classes in one split.
Pixels are scaled from the dataset's 0..16 to 0..1 (ink is high).

Shapes: B batch, C channels, H x W image.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from transformer.config import SPLIT_NAMES, ModelConfig

DIGITS_SIZE, DIGITS_CLASSES, DIGITS_MAX = 8, 10, 16.0


@dataclass
class ImageBatch:
    images: Tensor  # (B, C, H, W), float
    labels: Tensor  # (B,), int64

    def __len__(self) -> int:
        return self.labels.numel()


def digits_splits(targets: np.ndarray) -> dict[str, list[int]]:
    """The indices of each split of the digits, given their labels in dataset order (the module's rule)."""
    out: dict[str, list[int]] = {split: [] for split in SPLIT_NAMES}
    rng = np.random.default_rng(0)
    for label in range(int(targets.max()) + 1):
        members = rng.permutation(np.flatnonzero(targets == label))
        n_test, n_valid = len(members) // 5, len(members) // 10
        out["test"] += members[:n_test].tolist()
        out["valid"] += members[n_test : n_test + n_valid].tolist()
        out["train"] += members[n_test + n_valid :].tolist()
    return {split: sorted(indices) for split, indices in out.items()}


def load_digits_split(split: str) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 8, 8) in [0, 1] and labels (N,) of one split of scikit-learn's digits."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_NAMES)}")
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the digits come with scikit-learn; install it: pip install scikit-learn") from None
    digits = load_digits()
    keep = digits_splits(digits.target)[split]
    images = torch.tensor(digits.images[keep], dtype=torch.float32).unsqueeze(1) / DIGITS_MAX  # (N, 1, 8, 8)
    return images, torch.tensor(digits.target[keep], dtype=torch.long)


def shift(images: Tensor, generator: torch.Generator, max_shift: int) -> Tensor:
    """Each image moved by up to `max_shift` pixels in each direction, the uncovered border filled with 0."""
    if max_shift <= 0:
        return images
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def image_batches(images: Tensor, labels: Tensor, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                  shuffle: bool = True, max_shift: int = 0) -> Iterator[ImageBatch]:
    """The batches of one epoch from batch number `start` on: a shuffled order and shifts that depend only on
    (seed, epoch, batch number), so a resumed run sees the same batches."""
    order = list(range(labels.numel()))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    for number in range(start, n_image_batches(labels.numel(), batch_size)):
        index = torch.tensor(order[number * batch_size : (number + 1) * batch_size])
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + number)
        yield ImageBatch(shift(images[index], generator, max_shift), labels[index])


def n_image_batches(n_images: int, batch_size: int) -> int:
    return -(-n_images // batch_size)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_for_model(path: str | Path, model: ModelConfig) -> Tensor:
    """An image file as vision model `model` reads it (1, C, H, W): with model.image_mean (an imported ViT) as
    ViTImageProcessor does (`read_image_normalized`), else as our digits (`read_image`: grey, ink high)."""
    if model.image_mean:
        return read_image_normalized(path, model.image_size, model.image_mean, model.image_std, model.image_resample)
    return read_image(path, model.image_size, model.channels, model.image_resample)


def labelled_image_files(root: str | Path, labels: tuple[str, ...], n_classes: int) -> list[tuple[Path, int]]:
    """(file, class index) of the image files in `root`/<class>/, one folder per class named by `labels` (or
    0..n_classes-1 when the classes have no names), sorted by folder and name."""
    root, names = Path(root), list(labels) or [str(i) for i in range(n_classes)]
    if not root.is_dir():
        raise FileNotFoundError(f"--images {root}: no such directory; give a folder with one subfolder per class")
    found: list[tuple[Path, int]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in names:
            raise ValueError(f"--images {root}: folder {folder.name!r} names no class of the model; name the "
                             f"folders after its classes: {names}")
        found += [(path, names.index(folder.name)) for path in sorted(folder.iterdir())
                  if path.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise ValueError(f"--images {root} holds no image files ({', '.join(IMAGE_SUFFIXES)}) in class folders "
                         f"named {names}")
    return found


def read_image(path: str | Path, size: int, channels: int = 1, resample: str = "lanczos") -> Tensor:
    """An image file as the model's input (1, C, size, size) in [0, 1], ink high: resized, converted to
    grey (or RGB), and inverted when its background is light (a dark digit drawn on white)."""
    pixels = _read_pixels(path, size, "L" if channels == 1 else "RGB", resample) / 255.0  # (size, size[, C])
    tensor = torch.from_numpy(pixels).reshape(size, size, channels).permute(2, 0, 1)  # (C, H, W)
    if float(tensor.mean()) > 0.5:  # light background: make the ink high, as in the training images
        tensor = 1.0 - tensor
    return tensor.unsqueeze(0)  # (1, C, H, W)


def read_image_normalized(path: str | Path, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                          resample: str = "bilinear") -> Tensor:
    """An image file as Hugging Face's ViTImageProcessor (PIL backend) makes it (1, C, size, size): RGB (grey
    when `mean` has one value), resized to size x size with `resample`, pixels / 255, minus `mean`, over `std`
    (per channel)."""
    channels = len(mean)
    pixels = _read_pixels(path, size, "L" if channels == 1 else "RGB", resample) * np.float32(1 / 255)
    tensor = torch.from_numpy(pixels).reshape(size, size, channels).permute(2, 0, 1)  # (C, H, W)
    mean_t, std_t = torch.tensor(mean).reshape(-1, 1, 1), torch.tensor(std).reshape(-1, 1, 1)
    return ((tensor - mean_t) / std_t).unsqueeze(0)  # (1, C, H, W)


def _read_pixels(path: str | Path, size: int, mode: str, resample: str) -> np.ndarray:
    """The file's pixels in PIL mode `mode` as float32 0..255, (size, size) or (size, size, C); resized to
    size x size with PIL filter `resample` ("none": the file must be size x size already)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if resample != "none":
                image = image.resize((size, size), getattr(Image.Resampling, resample.upper()))
            elif image.size != (size, size):
                raise ValueError(f"{path} is {image.size[0]} x {image.size[1]} pixels and the model does not resize "
                                 f"(image_resample='none'); give a {size} x {size} image")
            return np.asarray(image, dtype=np.float32)
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image file PIL can read (PNG, JPEG, ...)") from None
