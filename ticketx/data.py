"""Data sets: a registry of loaders, decoded once to uint8 tensors, batched augmentation on device.

A data set string names a base set and optionally a subset of its classes:

    cifar10            all classes
    cifar10[0-4]       classes 0..4, relabelled 0..4
    cifar100[0,5,7]    classes 0, 5, 7, relabelled 0, 1, 2 (always in sorted order)
    imagefolder:PATH   the user's own images: PATH/train/<class>/*, PATH/test/<class>/* (or val/)

Every base set is decoded ONCE into uint8 tensors [N, C, H, W] and cached under
`data_root()/cache`, so later runs never parse pickles, .mat files or JPEGs again. Shape
adaptation (resize, grayscale <-> RGB) happens here, on the data side, once per load, so a model
never needs to know which set it is trained on. Batches are cut from tensors that live on the
training device (cifar10-airbench `CifarLoader`): indexing a uint8 tensor on the GPU and doing
crop/flip for the whole batch at once is far faster than per-sample PIL transforms in a DataLoader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence, TypeVar

import torch
import torch.nn.functional as F

from ticketx import store
from ticketx.errors import TicketxError, UsageError, did_you_mean

__all__ = [
    "DATASETS",
    "Batches",
    "DataSpec",
    "DatasetInfo",
    "ImageData",
    "data_root",
    "dataset_rows",
    "load_data",
    "parse_data",
    "register",
    "split_validation",
]

log = logging.getLogger(__name__)

# Bump when the layout of a decoded cache changes: old caches are then simply ignored.
_CACHE_VERSION = 1
# Elements (bytes of uint8) processed per chunk when resizing, converting or decoding, so that
# a large set never needs a float copy of itself in memory: 2**26 B = 64 MiB of uint8.
_CHUNK_ELEMS = 2**26
# Per-channel statistics are estimated on at most this many training images: beyond ~1e5
# images the estimate is exact to ~1e-3, and reading all 1.8M Places365 images would take minutes.
_STATS_MAX_IMAGES = 100_000
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_IMAGEFOLDER = "imagefolder"


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """What `ticketx datasets` shows about a base set, and what must be on disk for it."""

    name: str
    num_classes: int
    image_size: int  # native side in pixels
    channels: int
    flip: bool  # random horizontal flip is label-preserving
    crop_padding: int  # random-crop padding in pixels at the native size (0 = no crop)
    description: str
    files: tuple[str, ...] = ()  # relative to data_root()/name; all must exist ('dir/' = a folder)
    archives: tuple[str, ...] = ()  # downloaded archives torchvision can extract without network
    aliases: tuple[str, ...] = ()


# Raw base set as a loader returns it: native size, all classes.
@dataclass
class _Base:
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


_Loader = Callable[[Path, bool, "int | None"], _Base]

DATASETS: dict[str, DatasetInfo] = {}
_LOADERS: dict[str, _Loader] = {}
_ALIASES: dict[str, str] = {}


def register(
    name: str,
    *,
    num_classes: int,
    image_size: int,
    channels: int,
    flip: bool,
    crop_padding: int,
    description: str,
    files: Sequence[str] = (),
    archives: Sequence[str] = (),
    aliases: Sequence[str] = (),
) -> Callable[[_Loader], _Loader]:
    """Decorator: add a loader `(root, download, image_size) -> _Base` to the registry under `name`."""

    def deco(loader: _Loader) -> _Loader:
        if name in DATASETS or name in _ALIASES:
            raise ValueError(f"data set {name!r} registered twice")
        DATASETS[name] = DatasetInfo(
            name, num_classes, image_size, channels, flip, crop_padding, description, tuple(files), tuple(archives), tuple(aliases)
        )
        _LOADERS[name] = loader
        for alias in aliases:
            _ALIASES[alias] = name
        return loader

    return deco


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where data sets live: `data_dir`, else $TICKETX_DATA, else the user cache folder + /data."""
    if data_dir:
        return Path(data_dir).expanduser().absolute()
    env = os.environ.get("TICKETX_DATA")
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ticketx")) / "data"


def _cache_dir(root: Path) -> Path:
    return root / "cache"


def _present(folder: Path, rels: Sequence[str]) -> bool:
    return all((folder / rel.rstrip("/")).exists() for rel in rels)


def _has_cache(root: Path, name: str) -> bool:
    folder = _cache_dir(root)
    return folder.is_dir() and any(folder.glob(f"{name}-*v{_CACHE_VERSION}.pt"))


def dataset_rows(data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per data set for `ticketx datasets`.

    Keys: name, classes, image_size, channels, present (bool: usable without network), path,
    description. The last row is `imagefolder:PATH`, whose classes/size/channels/present are None.
    """
    root = data_root(data_dir)
    rows = []
    for info in DATASETS.values():
        folder = root / info.name
        present = (
            _present(folder, info.files)
            or bool(info.archives and _present(folder, info.archives))
            or _has_cache(root, info.name)
        )
        rows.append(
            {
                "name": info.name,
                "classes": info.num_classes,
                "image_size": info.image_size,
                "channels": info.channels,
                "present": present,
                "path": str(folder) if info.files else "",
                "description": info.description,
            }
        )
    rows.append(
        {
            "name": f"{_IMAGEFOLDER}:PATH",
            "classes": None,
            "image_size": None,
            "channels": None,
            "present": None,
            "path": "",
            "description": "your own images: PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg (or val/)",
        }
    )
    return rows


# --------------------------------------------------------------------------------------------
# Parsing 'cifar10[0-4]'
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """A parsed data set string: base set and an optional sorted subset of its class indices."""

    base: str  # 'cifar10', 'digits', 'imagefolder:/abs/path'
    classes: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """Canonical text: 'cifar10[0-4]', 'cifar100[0,5,7]', 'digits'."""
        if self.classes is None:
            return self.base
        return f"{self.base}[{_format_classes(self.classes)}]"

    @property
    def is_imagefolder(self) -> bool:
        return self.base.startswith(_IMAGEFOLDER + ":")

    def __str__(self) -> str:
        return self.name


def _format_classes(classes: Sequence[int]) -> str:
    # Runs of three or more consecutive classes are written as ranges: [0-2,7], [0,1], [3,5,7].
    parts: list[str] = []
    i = 0
    while i < len(classes):
        j = i
        while j + 1 < len(classes) and classes[j + 1] == classes[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{classes[i]}-{classes[j]}")
        else:
            parts.extend(str(c) for c in classes[i : j + 1])
        i = j + 1
    return ",".join(parts)


_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_SYNTAX = "expected e.g. 'cifar10', 'cifar10[0-4]', 'cifar100[0,5,7]' or 'imagefolder:PATH[0-2]'"


def _parse_classes(text: str, selector: str) -> tuple[int, ...]:
    if not selector.strip():
        raise UsageError(f"invalid data set {text!r}: empty class list []; {_SYNTAX}")
    out: list[int] = []
    for part in selector.split(","):
        m = _PART.match(part)
        if not m:
            raise UsageError(f"invalid data set {text!r}: bad class selector {part.strip()!r}; {_SYNTAX}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"invalid data set {text!r}: reversed range {lo}-{hi}; write {hi}-{lo}")
        out.extend(range(lo, hi + 1))
    dupes = sorted({c for c in out if out.count(c) > 1})
    if dupes:
        raise UsageError(f"invalid data set {text!r}: class {', '.join(map(str, dupes))} selected twice")
    return tuple(sorted(out))


def _check_range(label: str, classes: Sequence[int], num_classes: int) -> None:
    bad = [c for c in classes if c >= num_classes]
    if bad:
        raise UsageError(
            f"class {', '.join(map(str, bad))} out of range for {label}: it has {num_classes} classes (0-{num_classes - 1})"
        )


def parse_data(text: str) -> DataSpec:
    """Parse 'cifar10', 'cifar10[0-2,7]', 'fmnist', 'imagefolder:PATH[0-4]' into a DataSpec."""
    if not isinstance(text, str):
        raise UsageError(f"invalid data set {text!r}: expected a string")
    raw = text.strip()
    selector: str | None = None
    # Only a trailing [...] is a class selector, so a folder path may itself contain brackets.
    if raw.endswith("]"):
        i = raw.rfind("[")
        if i < 0:
            raise UsageError(f"invalid data set {text!r}: unbalanced ']'; {_SYNTAX}")
        raw, selector = raw[:i], raw[i + 1 : -1]
    classes = _parse_classes(text, selector) if selector is not None else None

    head, sep, rest = raw.partition(":")
    if sep:
        if head.strip().lower() != _IMAGEFOLDER:
            raise UsageError(did_you_mean(head.strip(), [_IMAGEFOLDER], "data set prefix"), "write imagefolder:PATH")
        if not rest.strip():
            raise UsageError(f"invalid data set {text!r}: imagefolder needs a folder, e.g. imagefolder:~/pets")
        path = os.path.abspath(os.path.expanduser(rest.strip()))
        return DataSpec(f"{_IMAGEFOLDER}:{path}", classes)

    key = raw.strip().lower()
    if "[" in key or "]" in key:
        raise UsageError(f"invalid data set {text!r}: unbalanced brackets; {_SYNTAX}")
    if key == _IMAGEFOLDER:
        raise UsageError(f"invalid data set {text!r}: imagefolder needs a folder, e.g. imagefolder:~/pets")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise UsageError(did_you_mean(key, [*DATASETS, f"{_IMAGEFOLDER}:PATH"], "data set"))
    info = DATASETS[key]
    if classes is not None:
        _check_range(info.name, classes, info.num_classes)
        if classes == tuple(range(info.num_classes)):
            classes = None  # every class: one canonical name for one data set
    return DataSpec(key, classes)


# --------------------------------------------------------------------------------------------
# The loaded data
# --------------------------------------------------------------------------------------------


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
        base = _load_imagefolder(Path(spec.base.split(":", 1)[1]), root, image_size)
        info = None
    else:
        if spec.base not in DATASETS:
            raise UsageError(did_you_mean(spec.base, list(DATASETS), "data set"))
        info = DATASETS[spec.base]
        base = _LOADERS[spec.base](root, download, image_size)

    classes = base.classes
    train_x, train_y, test_x, test_y = base.train_x, base.train_y, base.test_x, base.test_y
    if spec.classes is not None:
        _check_range(spec.base, spec.classes, len(base.classes))
        train_x, train_y = _select(train_x, train_y, spec.classes, len(classes))
        test_x, test_y = _select(test_x, test_y, spec.classes, len(classes))
        classes = [classes[c] for c in spec.classes]

    train_x = _adapt(train_x, image_size, channels)
    test_x = _adapt(test_x, image_size, channels)
    size = int(train_x.shape[-1])
    if info is None:
        # Same ratio as CIFAR's 4 px at 32 px (the canonical pad-and-crop), none for tiny images.
        flip, crop = True, (max(1, size // 8) if size >= 16 else 0)
    else:
        flip, crop = info.flip, round(info.crop_padding * size / info.image_size)
    mean, std = _channel_stats(train_x)
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


def _chunk(per_item: int, budget: int = _CHUNK_ELEMS) -> int:
    """How many items of `per_item` elements fit in one chunk of `budget` elements."""
    return max(1, budget // max(1, per_item))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear antialiased resize of a uint8 batch, chunked so no float copy of the set is made."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    n, c = x.shape[:2]
    out = torch.empty((n, c, *size), dtype=torch.uint8)
    step = _chunk(c * max(x.shape[-2] * x.shape[-1], size[0] * size[1]))
    for a in range(0, n, step):
        # torch resizes uint8 directly (with rounding) on CPU: no float round trip needed.
        out[a : a + step] = F.interpolate(x[a : a + step].contiguous(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out


# ITU-R BT.601 luma, the weights PIL ('L') and torchvision's rgb_to_grayscale use.
_LUMA = (0.299, 0.587, 0.114)


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.empty((n, 1, h, w), dtype=torch.uint8)
    weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
    step = _chunk(3 * h * w)
    for a in range(0, n, step):
        y = (x[a : a + step].float() * weights).sum(dim=1, keepdim=True)
        out[a : a + step] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _adapt(x: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    # Convert RGB -> gray before resizing and gray -> RGB after: both orders give the same
    # image, but this one resizes the fewest channels.
    if channels == 1 and x.shape[1] == 3:
        x = _to_gray(x)
    if image_size is not None:
        x = _resize(x, (image_size, image_size))
    if channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    if channels is not None and x.shape[1] != channels:
        raise UsageError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")
    return x


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
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
    step = _chunk(c * x.shape[-2] * x.shape[-1])
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


# --------------------------------------------------------------------------------------------
# Validation split
# --------------------------------------------------------------------------------------------


def _stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out), both sorted; `fraction` of every class held out.

    The total held out is round(fraction * N), shared among classes by largest remainder, so
    per-class rounding never drifts the total; a class always keeps at least one sample.
    """
    y = y.long()
    n = len(y)
    labels, counts = torch.unique(y, sorted=True, return_counts=True)
    exact = [fraction * int(c) for c in counts]
    take = [math.floor(e) for e in exact]
    extra = round(fraction * n) - sum(take)
    # Largest fractional part first; ties by class order, so the result is deterministic.
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - take[i]), i))
    for i in order[: max(0, extra)]:
        take[i] += 1
    g = torch.Generator().manual_seed(seed)
    held = []
    for label, count, k in zip(labels.tolist(), counts.tolist(), take):
        k = min(k, count - 1)
        idx = (y == label).nonzero().squeeze(1)
        held.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    held_idx = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(n, dtype=torch.bool)
    keep[held_idx] = False
    return keep.nonzero().squeeze(1), held_idx


def split_validation(data: ImageData, fraction: float, seed: int) -> tuple[ImageData, tuple[torch.Tensor, torch.Tensor]]:
    """Hold out a seeded, stratified `fraction` of train: (data with the rest, (val_x, val_y))."""
    if not 0 <= fraction < 1:
        raise UsageError(f"invalid validation fraction {fraction!r}: expected 0 <= fraction < 1")
    if fraction == 0:
        c, h, w = data.train_x.shape[1:]
        return data, (torch.empty((0, c, h, w), dtype=torch.uint8), torch.empty(0, dtype=torch.long))
    keep, held = _stratified_split(data.train_y, fraction, seed)
    train_x = data.train_x[keep]
    # Statistics come from the images actually trained on, never from the held-out ones.
    mean, std = _channel_stats(train_x)
    rest = dataclasses.replace(data, train_x=train_x, train_y=data.train_y[keep], mean=mean, std=std)
    return rest, (data.train_x[held], data.train_y[held])


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


class Batches:
    """Tensor-resident batches (cifar10-airbench style): uint8 on the training device is far faster than per-sample PIL.

    The whole set is moved to `device` once as uint8 (4x smaller than float). Each epoch draws
    one permutation and all crop offsets and flip coins up front from `generator`, then cuts
    batches by indexing and augments the whole batch with tensor ops.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        drop_last: bool | None = None,
        pad_mode: Literal["zeros", "reflect"] = "zeros",
    ) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"Batches needs uint8 images [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise TicketxError("no images to make batches from (the data set or class subset is empty)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        channels = x.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {channels}-channel images")
        if pad_mode not in ("zeros", "reflect"):
            raise ValueError(f"pad_mode must be 'zeros' or 'reflect', got {pad_mode!r}")
        if pad_mode == "reflect" and crop_padding >= min(x.shape[-2:]):
            raise ValueError(f"reflection padding {crop_padding} needs images larger than that")
        self.device = torch.device(device)
        # The images keep their layout: on CPU `x` may be a memory-mapped cache far larger than
        # RAM (Places365), and a channels_last copy would read all of it. Batches come out in
        # channels_last from the normalisation instead (`_normalise`).
        self.x = x.to(self.device)
        self.y = y.to(self.device, dtype=torch.long)
        self.batch_size = min(batch_size, len(x))
        self.train = train
        # Augmentation only ever applies to training batches.
        self.crop_padding = int(crop_padding) if train else 0
        self.flip = bool(flip) and train
        self.pad_mode = pad_mode
        self.channels_last = channels_last
        self.dtype = dtype
        self.drop_last = train if drop_last is None else drop_last
        # x_float = x_uint8 / 255 ... normalised = (x/255 - mean) / std = x * scale + shift:
        # one fused multiply-add per batch instead of divide, subtract, divide.
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, channels, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, channels, 1, 1).to(self.device)

    def __len__(self) -> int:
        n = len(self.x)
        return max(1, n // self.batch_size) if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch()

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: (float images [B, C, H, W] in `dtype`, int64 labels [B]) on the device."""
        n, bs, steps = len(self.x), self.batch_size, len(self)
        order = offsets = flips = None
        if self.train:
            # Everything random is drawn here, on the CPU generator, in a fixed order: the same
            # seed gives the same batches on any device.
            order = torch.randperm(n, generator=generator).to(self.device)
            p = self.crop_padding
            if p > 0:
                offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator).to(self.device)
            if self.flip:
                flips = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        for b in range(steps):
            sl = slice(b * bs, (b + 1) * bs)
            with _one_cpu_thread(self.device):  # restored before the consumer's training step
                if order is None:
                    xb, yb = self.x[sl], self.y[sl]
                else:
                    idx = order[sl]
                    xb, yb = self.x[idx], self.y[idx]
                    if offsets is not None:
                        xb = random_crop(xb, offsets[sl], self.crop_padding, self.pad_mode)
                    if flips is not None:
                        xb = torch.where(flips[sl].view(-1, 1, 1, 1), xb.flip(3), xb)
                out = self._normalise(xb)
            yield out, yb

    def _normalise(self, xb: torch.Tensor) -> torch.Tensor:
        # One pass from uint8 to the output: the int->float conversion, the normalisation and
        # the memory-format change are a single addcmul writing into a tensor of the wanted
        # layout and dtype (no float temporary, no extra channels_last copy).
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(xb.shape, dtype=self.dtype, device=xb.device, memory_format=fmt)
        return torch.addcmul(self._shift, xb, self._scale, out=out)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Assemble a batch on one CPU thread (results are the same on any number of threads).

    A batch is a few small memory-bound ops: a second thread gains little (measured on a
    2-vCPU VM: 55k vs 81k CIFAR images/s when idle, either way ~1% of a resnet20 step) and
    stalls badly when other processes compete for the cores (13k images/s at 2 threads).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_crop(x: torch.Tensor, offsets: torch.Tensor, padding: int, mode: str = "zeros") -> torch.Tensor:
    """Pad a batch by `padding` and crop each image back at its own (dy, dx) in [0, 2*padding].

    Zero padding matches torchvision's RandomCrop(size, padding) used by open_lth and
    Frankle & Carbin 2019; 'reflect' is cifar10-airbench's choice. Every image gets its own
    offset with no Python loop.
    """
    b, c, h, w = x.shape
    p = padding
    padded = F.pad(x, (p, p, p, p), mode="constant" if mode == "zeros" else "reflect")
    # Every crop window as a strided view [B, C, 2p+1, 2p+1, H, W] (no copy); one advanced
    # index then copies each sample's own window. ~1.5x faster on CPU than two gathers with
    # full-size int64 index tensors, and the same kernel on CUDA.
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    return windows[torch.arange(b, device=x.device), :, offsets[:, 0], offsets[:, 1]]


# --------------------------------------------------------------------------------------------
# Decoded caches
# --------------------------------------------------------------------------------------------


def _save_base(path: Path, base: _Base) -> None:
    try:
        # Not dataclasses.asdict: it would deep-copy every tensor first.
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(_Base)}
        store.save_torch(path, fields | {"version": _CACHE_VERSION})
    except TicketxError as err:
        # A read-only data folder must not stop a run: the set is simply decoded again next time.
        log.warning("could not write the decoded cache %s: %s", path, err)


def _load_base(path: Path) -> _Base | None:
    """The cached base set, or None when there is none or it is unusable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        # mmap: a large cache costs no memory until its pages are read.
        obj = store.load_torch(path, what="data cache", mmap=True)
    except TicketxError as err:
        log.warning("ignoring unreadable data cache %s: %s", path, err)
        return None
    names = [f.name for f in dataclasses.fields(_Base)]
    if not isinstance(obj, dict) or not all(k in obj for k in names):
        return None
    base = _Base(**{k: obj[k] for k in names})
    tensors = (base.train_x, base.train_y, base.test_x, base.test_y)
    ok = (
        isinstance(base.classes, list)
        and all(isinstance(t, torch.Tensor) for t in tensors)
        and base.train_x.dtype == torch.uint8
        and base.test_x.dtype == torch.uint8
        and len(base.train_x) == len(base.train_y)
        and len(base.test_x) == len(base.test_y)
    )
    return base if ok else None


# --------------------------------------------------------------------------------------------
# Files on disk: presence, download, one clear message when missing
# --------------------------------------------------------------------------------------------


def _missing_message(info: DatasetInfo, folder: Path) -> str:
    files = ", ".join(info.files)
    if info.archives:
        what = f"{', '.join(info.archives)} (or the extracted {files})"
    else:
        what = files
    return f"{info.name} is not in {folder}: put {what} there, or run with network access"


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def _need_fetch(info: DatasetInfo, folder: Path, download: bool) -> bool:
    """Whether torchvision must fetch (or extract); raises the offline message when it may not."""
    if _present(folder, info.files):
        return False
    # A downloaded archive is checked (md5) and extracted by torchvision without any network;
    # only an archive that fails its checksum would make torchvision try to fetch it again.
    if info.archives and _present(folder, info.archives):
        return True
    if not download:
        raise TicketxError(_missing_message(info, folder), "downloading is turned off")
    return True


_T = TypeVar("_T")


def _read_torchvision(info: DatasetInfo, folder: Path, download: bool, read: Callable[[bool], _T]) -> _T:
    fetch = _need_fetch(info, folder, download)
    try:
        if fetch:
            log.info("fetching %s into %s", info.name, folder)
            folder.mkdir(parents=True, exist_ok=True)
        return read(fetch)
    except TicketxError:
        raise
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, ... for missing or bad files
        if fetch:
            raise TicketxError(_missing_message(info, folder), f"download failed: {_reason(err)}") from err
        raise TicketxError(
            f"cannot read {info.name} from {folder}: {_reason(err)}",
            f"the files there are incomplete or corrupted: delete them and rerun with network access, "
            f"or put {', '.join(info.archives or info.files)} there",
        ) from err


def _cached_torchvision(name: str, root: Path, download: bool, read: Callable[[Path, bool], _Base]) -> _Base:
    """Load `name` from its decoded cache, else read it through torchvision once and cache it."""
    cache = _cache_dir(root) / f"{name}-v{_CACHE_VERSION}.pt"
    base = _load_base(cache)
    if base is not None:
        return base
    folder = root / name
    base = _read_torchvision(DATASETS[name], folder, download, lambda fetch: read(folder, fetch))
    _save_base(cache, base)
    return base


def _hwc(array: Any) -> torch.Tensor:
    """numpy uint8 [N, H, W, C] -> torch uint8 [N, C, H, W], contiguous."""
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


@register(
    "digits",
    num_classes=10,
    image_size=8,
    channels=1,
    flip=False,
    crop_padding=0,
    description="handwritten digits 8x8, 1797 images (scikit-learn's bundled copy; embedded, no download)",
)
def _digits(root: Path, download: bool, image_size: int | None) -> _Base:
    import gzip
    import importlib.util

    import numpy as np

    # Read scikit-learn's bundled CSV directly: `import sklearn` alone costs ~2.5 s, the file
    # ~20 ms. Same file and parsing as sklearn.datasets.load_digits (rows of 64 pixels + label).
    spec = importlib.util.find_spec("sklearn")
    found = [Path(d) / "datasets" / "data" / "digits.csv.gz" for d in (spec.submodule_search_locations or [])] if spec else []
    csv = next((f for f in found if f.is_file()), None)
    if csv is None:
        raise TicketxError("the digits data set is scikit-learn's bundled copy, and scikit-learn was not found", "pip install scikit-learn")
    with gzip.open(csv, "rt") as fh:
        rows = np.loadtxt(fh, delimiter=",")
    images, target = rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    # The bundled pixels are counts 0..16 of set bits in 4x4 blocks: scale to 0..255.
    x = torch.from_numpy(np.rint(images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.from_numpy(target).long()
    # A fixed 80/20 stratified split (seed 0) so every run and every user sees the same test set.
    train, test = _stratified_split(y, 0.2, seed=0)
    return _Base([str(i) for i in range(10)], x[train], y[train], x[test], y[test])


def _read_cifar(cls_name: str) -> Callable[[Path, bool], _Base]:
    def read(folder: Path, fetch: bool) -> _Base:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        train = cls(str(folder), train=True, download=fetch)
        test = cls(str(folder), train=False, download=False)
        # .data is the whole set as one HWC uint8 array: no per-sample PIL round trip.
        return _Base(
            list(train.classes),
            _hwc(train.data),
            torch.as_tensor(train.targets, dtype=torch.long),
            _hwc(test.data),
            torch.as_tensor(test.targets, dtype=torch.long),
        )

    return read


@register(
    "cifar10",
    num_classes=10,
    image_size=32,
    channels=3,
    flip=True,
    crop_padding=4,  # pad 4 + random 32x32 crop: He et al. 2016, Frankle & Carbin 2019
    description="CIFAR-10: 32x32 colour photos, 10 classes, 50k train / 10k test (Krizhevsky 2009)",
    files=("cifar-10-batches-py/",),
    archives=("cifar-10-python.tar.gz",),
    aliases=("cifar-10",),
)
def _cifar10(root: Path, download: bool, image_size: int | None) -> _Base:
    return _cached_torchvision("cifar10", root, download, _read_cifar("CIFAR10"))


@register(
    "cifar100",
    num_classes=100,
    image_size=32,
    channels=3,
    flip=True,
    crop_padding=4,
    description="CIFAR-100: 32x32 colour photos, 100 fine classes, 50k train / 10k test (Krizhevsky 2009)",
    files=("cifar-100-python/",),
    archives=("cifar-100-python.tar.gz",),
    aliases=("cifar-100",),
)
def _cifar100(root: Path, download: bool, image_size: int | None) -> _Base:
    return _cached_torchvision("cifar100", root, download, _read_cifar("CIFAR100"))


def _read_mnist(cls_name: str) -> Callable[[Path, bool], _Base]:
    def read(folder: Path, fetch: bool) -> _Base:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        train = cls(str(folder), train=True, download=fetch)
        test = cls(str(folder), train=False, download=False)
        # torchvision names MNIST classes '0 - zero': keep '0' so they match `digits`.
        names = [c.split(" - ")[0] for c in train.classes]
        return _Base(
            names,
            train.data.unsqueeze(1).contiguous(),
            train.targets.long(),
            test.data.unsqueeze(1).contiguous(),
            test.targets.long(),
        )

    return read


def _idx_files(sub: str, suffix: str = "") -> tuple[str, ...]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(f"{sub}/raw/{n}{suffix}" for n in names)


# Frankle & Carbin 2019 trained LeNet on MNIST without augmentation: no flip, no crop.
@register(
    "mnist",
    num_classes=10,
    image_size=28,
    channels=1,
    flip=False,
    crop_padding=0,
    description="MNIST: 28x28 handwritten digits, 60k train / 10k test (LeCun et al. 1998)",
    files=_idx_files("MNIST"),
    archives=_idx_files("MNIST", ".gz"),
)
def _mnist(root: Path, download: bool, image_size: int | None) -> _Base:
    return _cached_torchvision("mnist", root, download, _read_mnist("MNIST"))


@register(
    "fashion-mnist",
    num_classes=10,
    image_size=28,
    channels=1,
    flip=False,
    crop_padding=0,
    description="Fashion-MNIST: 28x28 clothing images, 10 classes, 60k train / 10k test (Xiao et al. 2017)",
    files=_idx_files("FashionMNIST"),
    archives=_idx_files("FashionMNIST", ".gz"),
    aliases=("fashion_mnist", "fmnist", "fashionmnist"),
)
def _fashion_mnist(root: Path, download: bool, image_size: int | None) -> _Base:
    return _cached_torchvision("fashion-mnist", root, download, _read_mnist("FashionMNIST"))


def _read_svhn(folder: Path, fetch: bool) -> _Base:
    try:
        import scipy.io  # noqa: F401  (torchvision needs it for the .mat files)
    except ImportError as err:
        raise TicketxError("svhn needs scipy to read its .mat files", "pip install scipy") from err
    from torchvision import datasets

    train = datasets.SVHN(str(folder), split="train", download=fetch)
    test = datasets.SVHN(str(folder), split="test", download=fetch)
    # torchvision has already moved the label 10 to 0 and transposed .data to [N, C, H, W].
    return _Base(
        [str(i) for i in range(10)],
        torch.from_numpy(train.data).contiguous(),
        torch.from_numpy(train.labels).long(),
        torch.from_numpy(test.data).contiguous(),
        torch.from_numpy(test.labels).long(),
    )


@register(
    "svhn",
    num_classes=10,
    image_size=32,
    channels=3,
    flip=False,  # digits: a mirrored 2 is not a 2
    crop_padding=4,
    description="SVHN: 32x32 house-number digits, 73k train / 26k test (Netzer et al. 2011)",
    files=("train_32x32.mat", "test_32x32.mat"),
)
def _svhn(root: Path, download: bool, image_size: int | None) -> _Base:
    return _cached_torchvision("svhn", root, download, _read_svhn)


_PLACES_NATIVE = 256


@register(
    "places365",
    num_classes=365,
    image_size=_PLACES_NATIVE,
    channels=3,
    flip=True,
    crop_padding=_PLACES_NATIVE // 8,  # CIFAR's 4/32 ratio
    description="Places365-Standard, small 256x256 images, 1.8M train / 36.5k val as test "
    "(Zhou et al. 2017); decoded once at the requested --image-size into a memory-mapped cache",
    files=(
        "categories_places365.txt",
        "places365_train_standard.txt",
        "places365_val.txt",
        "data_256_standard/",
        "val_256/",
    ),
    archives=("filelist_places365-standard.tar", "train_256_places365standard.tar", "val_256.tar"),
)
def _places365(root: Path, download: bool, image_size: int | None) -> _Base:
    # 1.8M images at 256 px are 350 GB: far too big for RAM, so the images are decoded straight
    # to the requested size into raw uint8 files that are memory-mapped, never read whole.
    size = image_size or _PLACES_NATIVE
    cache = _cache_dir(root)
    stem = f"places365-{size}px"
    meta_path = cache / f"{stem}-v{_CACHE_VERSION}.pt"
    x_paths = {"train": cache / f"{stem}-train.u8", "test": cache / f"{stem}-test.u8"}

    cached = _load_places(meta_path, x_paths, size)
    if cached is not None:
        return cached

    info = DATASETS["places365"]
    folder = root / "places365"

    def read(fetch: bool) -> tuple[Any, Any]:
        from torchvision import datasets

        train = datasets.Places365(str(folder), split="train-standard", small=True, download=fetch)
        test = datasets.Places365(str(folder), split="val", small=True, download=fetch)
        return train, test

    train, test = _read_torchvision(info, folder, download, read)
    names = [""] * len(train.class_to_idx)
    for cls_name, idx in train.class_to_idx.items():
        names[idx] = cls_name
    meta: dict[str, Any] = {"classes": names, "size": size, "version": _CACHE_VERSION}
    for split, ds in (("train", train), ("test", test)):
        paths = [Path(p) for p, _ in ds.imgs]
        _decode_to_file(paths, size, x_paths[split], f"places365 {split}")
        meta[f"{split}_y"] = torch.as_tensor([t for _, t in ds.imgs], dtype=torch.long)
    store.save_torch(meta_path, meta)  # written last: its presence marks the cache complete
    loaded = _load_places(meta_path, x_paths, size)
    assert loaded is not None
    return loaded


def _load_places(meta_path: Path, x_paths: dict[str, Path], size: int) -> _Base | None:
    if not meta_path.is_file():
        return None
    try:
        meta = store.load_torch(meta_path, what="data cache")
        xs = {}
        for split in ("train", "test"):
            n = len(meta[f"{split}_y"])
            numel = n * 3 * size * size
            if x_paths[split].stat().st_size != numel:
                return None
            xs[split] = torch.from_file(str(x_paths[split]), shared=False, size=numel, dtype=torch.uint8).view(n, 3, size, size)
        return _Base(meta["classes"], xs["train"], meta["train_y"], xs["test"], meta["test_y"])
    except (TicketxError, KeyError, TypeError, OSError, RuntimeError) as err:
        log.warning("ignoring unreadable data cache %s: %s", meta_path, err)
        return None


def _decode_to_file(paths: list[Path], size: int, dest: Path, what: str) -> None:
    """Decode images to RGB size x size, appending raw uint8 [C, H, W] records to `dest` chunk by chunk."""
    step = _chunk(3 * size * size, budget=4 * _CHUNK_ELEMS)  # 256 MiB of decoded pixels per chunk
    with store.atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        for a in range(0, len(paths), step):
            x = _decode_all(paths[a : a + step], (size, size), rgb=True)
            fh.write(memoryview(x.numpy()).cast("B"))
            log.info("%s: decoded %d/%d images", what, min(a + step, len(paths)), len(paths))


# --------------------------------------------------------------------------------------------
# Image files: imagefolder (and places365)
# --------------------------------------------------------------------------------------------

# Modes that carry one intensity per pixel; everything else is converted to RGB.
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _decode_image(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One image file -> uint8 [C, H, W]: C = 1 for grayscale files, else 3 (RGB; alpha dropped)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            # JPEG decodes at 1/2, 1/4, 1/8 scale straight from the DCT, several times faster for
            # big photos; draft never goes below the requested size, so the resize still antialiases.
            im.draft(im.mode, (size[1], size[0]))
        gray = im.mode in _GRAY_MODES
        arr = np.array(im.convert("L" if gray else "RGB"))
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if gray else t.permute(2, 0, 1).contiguous()


def _decode_all(paths: Sequence[Path], size: tuple[int, int] | None, rgb: bool = False) -> torch.Tensor:
    """Decode image files into one uint8 [N, C, H, W] tensor, in threads (PIL releases the GIL).

    `size` None = the first image's size; images of another size are resized to it. C is 1 when
    every image is grayscale (and `rgb` is False), else 3 with gray images replicated.
    """
    n = len(paths)
    if n == 0:
        h, w = size or (1, 1)
        return torch.empty((0, 1 if not rgb else 3, h, w), dtype=torch.uint8)

    def decode(i: int) -> torch.Tensor:
        try:
            return _decode_image(paths[i], size)
        except TicketxError:
            raise
        except Exception as err:  # PIL raises OSError, ValueError, DecompressionBombError, ...
            raise TicketxError(f"cannot decode image {paths[i]}: {_reason(err)}", "delete or replace the file") from err

    first = decode(0)
    if size is None:
        size = (int(first.shape[1]), int(first.shape[2]))
    out = torch.empty((n, 3, *size), dtype=torch.uint8)
    color = torch.zeros(n, dtype=torch.bool)

    def put(i: int, img: torch.Tensor) -> None:
        if tuple(img.shape[1:]) != size:
            img = _resize(img.unsqueeze(0), size)[0]
        out[i].copy_(img)  # a gray [1, H, W] image broadcasts to all three channels
        color[i] = img.shape[0] == 3

    put(0, first)

    def work(block: range) -> None:
        for i in block:
            put(i, decode(i))

    blocks = [range(a, min(a + 64, n)) for a in range(1, n, 64)]
    workers = min(8, os.cpu_count() or 1)
    if workers > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, blocks))  # list(): re-raises the first worker error
    else:
        for block in blocks:
            work(block)
    if not rgb and not bool(color.any()):
        return out[:, :1].contiguous()
    return out


def _list_images(folder: Path) -> list[Path]:
    # Hidden files (macOS '._x.jpg' resource forks, '.DS_Store') are not images.
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in _IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


_LAYOUT = "expected PATH/train/<class>/<image> and PATH/test/<class>/<image> (or PATH/val/ as the test set)"


def _scan_imagefolder(path: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Class names and (file, label) lists for train and test; every layout problem is a UsageError."""
    if not path.is_dir():
        raise UsageError(f"image folder {path} does not exist", _LAYOUT)
    train_dir = path / "train"
    test_dir = path / "test" if (path / "test").is_dir() else path / "val"
    if not train_dir.is_dir():
        raise UsageError(f"image folder {path} has no train/ folder", _LAYOUT)
    if not test_dir.is_dir():
        raise UsageError(f"image folder {path} has no test/ (or val/) folder", _LAYOUT)
    classes = _class_dirs(train_dir)
    if not classes:
        raise UsageError(f"{train_dir} has no class folders", _LAYOUT)
    test_classes = _class_dirs(test_dir)
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise UsageError(
            f"the classes of {train_dir} and {test_dir} differ: only in {train_dir.name}/: {only_train or '-'}; "
            f"only in {test_dir.name}/: {only_test or '-'}",
            "both must have the same class folders",
        )
    splits = []
    for split_dir in (train_dir, test_dir):
        files = []
        for label, name in enumerate(classes):
            images = _list_images(split_dir / name)
            if not images and split_dir is train_dir:
                raise UsageError(f"class folder {split_dir / name} has no images ({', '.join(_IMAGE_EXTENSIONS)})")
            files.extend((p, label) for p in images)
        splits.append(files)
    return classes, splits[0], splits[1]


def _load_imagefolder(path: Path, root: Path, image_size: int | None) -> _Base:
    """Decode an image folder once; later loads come from a cache keyed by the files and the size."""
    classes, train, test = _scan_imagefolder(path)
    listing = []
    for p, _ in train + test:
        st = p.stat()
        listing.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
    # Any added, removed, replaced or touched file changes the key, so a stale cache is never used.
    key = store.fingerprint({"path": str(path), "files": listing, "size": image_size, "v": _CACHE_VERSION}, n=16)
    cache = _cache_dir(root) / f"{_IMAGEFOLDER}-{key}-v{_CACHE_VERSION}.pt"
    base = _load_base(cache)
    if base is not None:
        return base
    log.info("decoding %d images from %s", len(train) + len(test), path)
    size = (image_size, image_size) if image_size is not None else None
    x = _decode_all([p for p, _ in train + test], size)
    y = torch.tensor([label for _, label in train + test], dtype=torch.long)
    n = len(train)
    base = _Base(classes, x[:n].contiguous(), y[:n], x[n:].contiguous(), y[n:])
    _save_base(cache, base)
    return base
