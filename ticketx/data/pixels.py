"""Whole-set operations on uint8 image tensors [N, C, H, W]: resize, grayscale, shape adaptation, statistics.

Shape adaptation happens here, on the data side, once per load, so a model never needs to know
which set it is trained on. Every operation works chunk by chunk, so a large set never needs a
float copy of itself in memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ticketx.errors import UsageError

# Elements (bytes of uint8) processed per chunk when resizing, converting or decoding:
# 2**26 B = 64 MiB of uint8.
CHUNK_ELEMS = 2**26
# Per-channel statistics are estimated on at most this many training images: beyond ~1e5
# images the estimate is exact to ~1e-3, and reading all 1.8M Places365 images would take minutes.
_STATS_MAX_IMAGES = 100_000
# ITU-R BT.601 luma, the weights PIL ('L') and torchvision's rgb_to_grayscale use.
_LUMA = (0.299, 0.587, 0.114)


def chunk(per_item: int, budget: int = CHUNK_ELEMS) -> int:
    """How many items of `per_item` elements fit in one chunk of `budget` elements."""
    return max(1, budget // max(1, per_item))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear antialiased resize of a uint8 batch, chunked so no float copy of the set is made."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    n, c = x.shape[:2]
    out = torch.empty((n, c, *size), dtype=torch.uint8)
    step = chunk(c * max(x.shape[-2] * x.shape[-1], size[0] * size[1]))
    for a in range(0, n, step):
        # torch resizes uint8 directly (with rounding) on CPU: no float round trip needed.
        out[a : a + step] = F.interpolate(x[a : a + step].contiguous(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """RGB uint8 [N, 3, H, W] -> luma uint8 [N, 1, H, W] (BT.601, rounded)."""
    n, _, h, w = x.shape
    out = torch.empty((n, 1, h, w), dtype=torch.uint8)
    weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
    step = chunk(3 * h * w)
    for a in range(0, n, step):
        y = (x[a : a + step].float() * weights).sum(dim=1, keepdim=True)
        out[a : a + step] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def adapt(x: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    """Resize to `image_size` square and convert to `channels` (None = keep as it is)."""
    # Convert RGB -> gray before resizing and gray -> RGB after: both orders give the same
    # image, but this one resizes the fewest channels.
    if channels == 1 and x.shape[1] == 3:
        x = to_gray(x)
    if image_size is not None:
        x = resize(x, (image_size, image_size))
    if channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    if channels is not None and x.shape[1] != channels:
        raise UsageError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")
    return x


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std in [0, 1] pixel units.

    Computed from a per-channel histogram of the 256 uint8 values: exact integer counts, no
    float copy of the images, and several times faster than summing in float64.
    """
    n, c = x.shape[:2]
    if n == 0:
        return (0.0,) * c, (1.0,) * c
    # An evenly spaced sample of a very large set: see _STATS_MAX_IMAGES.
    stride = math.ceil(n / _STATS_MAX_IMAGES)
    rows = torch.arange(0, n, stride)
    hist = torch.zeros((c, 256), dtype=torch.int64)
    step = chunk(c * x.shape[-2] * x.shape[-1])
    for a in range(0, len(rows), step):
        part = x[a : a + step] if stride == 1 else x[rows[a : a + step]]
        for k in range(c):
            hist[k] += torch.bincount(part[:, k].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255
    h = hist.to(torch.float64)
    count = h.sum(dim=1)
    mean = (h * values).sum(dim=1) / count
    var = ((h * values.square()).sum(dim=1) / count - mean.square()).clamp_(min=0)
    std = var.sqrt()
    # A constant channel would give std 0 and an infinite scale: leave it unscaled instead.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())
