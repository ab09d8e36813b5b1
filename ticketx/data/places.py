"""Places365-Standard (small, 256 px): 1.8M images, decoded once into memory-mapped raw files.

At 256 px the decoded set would be 350 GB, far too big for RAM, so the images are decoded
straight to the requested size and appended to raw uint8 files that are memory-mapped, never
read whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ticketx import store
from ticketx.data.cache import CACHE_VERSION, BaseSet, cache_dir
from ticketx.data.decode import decode_all
from ticketx.data.pixels import CHUNK_ELEMS, chunk
from ticketx.data.registry import DATASETS, register
from ticketx.data.torchvision_sets import read_torchvision
from ticketx.errors import TicketxError

log = logging.getLogger(__name__)

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
def _places365(root: Path, download: bool, image_size: int | None) -> BaseSet:
    size = image_size or _PLACES_NATIVE
    cache = cache_dir(root)
    stem = f"places365-{size}px"
    meta_path = cache / f"{stem}-v{CACHE_VERSION}.pt"
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

    train, test = read_torchvision(info, folder, download, read)
    names = [""] * len(train.class_to_idx)
    for cls_name, idx in train.class_to_idx.items():
        names[idx] = cls_name
    meta: dict[str, Any] = {"classes": names, "size": size, "version": CACHE_VERSION}
    for split, ds in (("train", train), ("test", test)):
        paths = [Path(p) for p, _ in ds.imgs]
        _decode_to_file(paths, size, x_paths[split], f"places365 {split}")
        meta[f"{split}_y"] = torch.as_tensor([t for _, t in ds.imgs], dtype=torch.long)
    store.save_torch(meta_path, meta)  # written last: its presence marks the cache complete
    loaded = _load_places(meta_path, x_paths, size)
    assert loaded is not None
    return loaded


def _load_places(meta_path: Path, x_paths: dict[str, Path], size: int) -> BaseSet | None:
    """The memory-mapped cache at `size`, or None when it is missing or incomplete (then rebuilt)."""
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
        return BaseSet(meta["classes"], xs["train"], meta["train_y"], xs["test"], meta["test_y"])
    except (TicketxError, KeyError, TypeError, OSError, RuntimeError) as err:
        log.warning("ignoring unreadable data cache %s: %s", meta_path, err)
        return None


def _decode_to_file(paths: list[Path], size: int, dest: Path, what: str) -> None:
    """Decode images to RGB size x size, appending raw uint8 [C, H, W] records to `dest` chunk by chunk."""
    step = chunk(3 * size * size, budget=4 * CHUNK_ELEMS)  # 256 MiB of decoded pixels per chunk
    with store.atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        for a in range(0, len(paths), step):
            x = decode_all(paths[a : a + step], (size, size), rgb=True)
            fh.write(memoryview(x.numpy()).cast("B"))
            log.info("%s: decoded %d/%d images", what, min(a + step, len(paths)), len(paths))
