"""The user's own images, `imagefolder:PATH`: PATH/train/<class>/*, PATH/test/<class>/* (or val/).

Decoded once; later loads come from a cache keyed by every file's name, size and mtime and by
the requested image size, so a changed folder is never served from a stale cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ticketx import store
from ticketx.data.cache import CACHE_VERSION, BaseSet, cache_dir, load_base, save_base
from ticketx.data.decode import decode_all
from ticketx.data.registry import IMAGEFOLDER
from ticketx.errors import UsageError

log = logging.getLogger(__name__)

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_LAYOUT = "expected PATH/train/<class>/<image> and PATH/test/<class>/<image> (or PATH/val/ as the test set)"


def _list_images(folder: Path) -> list[Path]:
    # Hidden files (macOS '._x.jpg' resource forks, '.DS_Store') are not images.
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in _IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan_imagefolder(path: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
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


def load_imagefolder(path: Path, root: Path, image_size: int | None) -> BaseSet:
    """Decode an image folder once; later loads come from a cache keyed by the files and the size."""
    classes, train, test = scan_imagefolder(path)
    listing = []
    for p, _ in train + test:
        st = p.stat()
        listing.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
    # Any added, removed, replaced or touched file changes the key, so a stale cache is never used.
    key = store.fingerprint({"path": str(path), "files": listing, "size": image_size, "v": CACHE_VERSION}, n=16)
    cache = cache_dir(root) / f"{IMAGEFOLDER}-{key}-v{CACHE_VERSION}.pt"
    base = load_base(cache)
    if base is not None:
        return base
    log.info("decoding %d images from %s", len(train) + len(test), path)
    size = (image_size, image_size) if image_size is not None else None
    x = decode_all([p for p, _ in train + test], size)
    y = torch.tensor([label for _, label in train + test], dtype=torch.long)
    n = len(train)
    base = BaseSet(classes, x[:n].contiguous(), y[:n], x[n:].contiguous(), y[n:])
    save_base(cache, base)
    return base
