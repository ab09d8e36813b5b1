"""A data set ready to train on (`ImageData`), and `load_data`, which makes one from a data set string."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ticketx.data.imagefolder import load_imagefolder
from ticketx.data.names import DataSpec, check_range, parse_data
from ticketx.data.pixels import adapt, channel_stats
from ticketx.data.registry import DATASETS, LOADERS, data_root
from ticketx.errors import UsageError, did_you_mean


@dataclass
class ImageData:
    """A data set ready to train on: uint8 images, int64 labels, statistics and augmentation policy."""

    name: str  # canonical spec string
    classes: list[str]  # class names after subsetting, index = label
    train_x: torch.Tensor = field(repr=False)  # uint8 [N, C, H, W]
    train_y: torch.Tensor = field(repr=False)  # int64 [N]
    test_x: torch.Tensor = field(repr=False)  # uint8 [M, C, H, W]
    test_y: torch.Tensor = field(repr=False)  # int64 [M]
    mean: tuple[float, ...]  # per channel, [0, 1] pixel units, on train_x
    std: tuple[float, ...]
    flip: bool
    crop_padding: int  # pixels at the final size; 0 = no crop augmentation

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images; the width if an image folder's images are not square."""
        return int(self.train_x.shape[-1])


def load_data(
    text: str | DataSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = True,
) -> ImageData:
    """Load a data set, select its classes, adapt its shape (None = keep native) and compute its statistics."""
    spec = parse_data(text) if isinstance(text, str) else text
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UsageError(f"invalid image size {image_size!r}: expected a positive number of pixels")
    if channels not in (None, 1, 3):
        raise UsageError(f"invalid channel count {channels!r}: expected 1 (grayscale) or 3 (RGB)")
    root = data_root(data_dir)

    if spec.is_imagefolder:
        base = load_imagefolder(Path(spec.base.split(":", 1)[1]), root, image_size)
        info = None
    else:
        if spec.base not in DATASETS:  # a DataSpec built by hand, not by parse_data
            raise UsageError(did_you_mean(spec.base, list(DATASETS), "data set"))
        info = DATASETS[spec.base]
        base = LOADERS[spec.base](root, download, image_size)

    classes = base.classes
    train_x, train_y, test_x, test_y = base.train_x, base.train_y, base.test_x, base.test_y
    if spec.classes is not None:
        check_range(spec.base, spec.classes, len(base.classes))
        train_x, train_y = _select(train_x, train_y, spec.classes, len(classes))
        test_x, test_y = _select(test_x, test_y, spec.classes, len(classes))
        classes = [classes[c] for c in spec.classes]

    train_x = adapt(train_x, image_size, channels)
    test_x = adapt(test_x, image_size, channels)
    size = int(train_x.shape[-1])
    if info is None:
        # Same ratio as CIFAR's 4 px at 32 px (the canonical pad-and-crop), none for tiny images.
        flip, crop = True, (max(1, size // 8) if size >= 16 else 0)
    else:
        flip, crop = info.flip, round(info.crop_padding * size / info.image_size)
    mean, std = channel_stats(train_x)
    return ImageData(
        spec.name,
        list(classes),
        train_x.contiguous(),
        train_y.long().contiguous(),
        test_x.contiguous(),
        test_y.long().contiguous(),
        mean,
        std,
        flip,
        crop,
    )


def _select(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the samples of `classes` and relabel them 0..k-1 in sorted class order."""
    lut = torch.full((num_classes,), -1, dtype=torch.long)
    lut[list(classes)] = torch.arange(len(classes))
    new = lut[y.long()]
    keep = (new >= 0).nonzero().squeeze(1)
    return x[keep], new[keep]
