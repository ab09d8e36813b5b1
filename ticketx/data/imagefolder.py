"""The user's own images, `imagefolder:PATH`: PATH/train/<class>/*, PATH/test/<class>/* (or val/).

Decoded once; later loads come from a cache keyed by every file's name, size and mtime and by
the requested image size, so a changed folder is never served from a stale cache:

    cache/imagefolder-<key>/         train.u8, test.u8 and the chunk files (decode.decode_to_folder)
    cache/imagefolder-<key>-v1.pt    classes and image size; written last
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ticketx import store
from ticketx.data.cache import CACHE_VERSION, BaseSet, cache_dir
from ticketx.data.decode import decode_all, decode_to_folder, map_folder
from ticketx.data.registry import IMAGEFOLDER
from ticketx.errors import TicketxError, UsageError

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
    """Decode an image folder once; later loads come from a cache keyed by the files and the size.

    The decode is Places365's (decode.decode_to_folder): chunked, on every core, resumable and
    shared with other processes; the metadata file (classes, labels) is written last.
    """
    classes, train, test = scan_imagefolder(path)
    listing = []
    for p, _ in train + test:
        st = p.stat()
        listing.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
    # Any added, removed, replaced or touched file changes the key, so a stale cache is never used.
    key = store.fingerprint({"path": str(path), "files": listing, "size": image_size, "v": CACHE_VERSION, "layout": "chunked"}, n=16)
    meta_path = cache_dir(root) / f"{IMAGEFOLDER}-{key}-v{CACHE_VERSION}.pt"
    folder = cache_dir(root) / f"{IMAGEFOLDER}-{key}"
    counts = {"train": len(train), "test": len(test)}
    y = {"train": torch.tensor([t for _, t in train], dtype=torch.long), "test": torch.tensor([t for _, t in test], dtype=torch.long)}
    if image_size is not None:
        size = (image_size, image_size)
    else:  # the first image's size, as decode_all: read from the header, nothing decoded
        from PIL import Image

        with Image.open(train[0][0]) as im:
            size = (im.height, im.width)
    mapped = map_folder(folder, counts, size) if meta_path.is_file() else None
    if mapped is None:
        log.info("decoding %d images from %s", len(train) + len(test), path)
        splits = {"train": [p for p, _ in train], "test": [p for p, _ in test]}
        try:
            mapped = decode_to_folder(splits, size, folder, what=f"decoding {path}")
        except TicketxError as err:
            if "cannot write" not in str(err) and "permission" not in str(err).lower():
                raise
            # A read-only data folder must not stop a run: decode in memory, every time.
            log.warning("could not write the decoded cache %s: %s", folder, err)
            x = decode_all(splits["train"] + splits["test"], size)
            return BaseSet(classes, x[: len(train)].contiguous(), y["train"], x[len(train) :].contiguous(), y["test"])
        try:
            store.save_torch(meta_path, {"classes": classes, "size": list(size), "version": CACHE_VERSION})
        except TicketxError as err:
            log.warning("could not write the decoded cache %s: %s", meta_path, err)
    xs, color = mapped
    if not color:  # every image is grayscale: one channel, as decode_all gives (a copy in memory)
        xs = {k: v[:, :1].contiguous() for k, v in xs.items()}
    return BaseSet(classes, xs["train"], y["train"], xs["test"], y["test"])
