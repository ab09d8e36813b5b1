"""Places365-Standard (small, 256 px): 1.8M images, decoded once into memory-mapped raw files.

At 256 px the decoded set would be 354 GB, far too big for RAM, so the images are decoded
straight to the requested size into raw uint8 files that are memory-mapped, never read whole.
The decode is chunked, parallel, resumable and shared between processes (decode.decode_to_folder):

    cache/places365-64px/            train.u8, test.u8, layout.json, chunk .done/.lease files
    cache/places365-64px-v1.pt       classes and labels; written last
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ticketx import store
from ticketx.data.cache import CACHE_VERSION, BaseSet, cache_dir
from ticketx.data.decode import decode_to_folder, map_folder
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
    train_images=1_803_460,  # places365_train_standard.txt (Zhou et al. 2017)
)
def _places365(root: Path, download: bool, image_size: int | None) -> BaseSet:
    size = image_size or _PLACES_NATIVE
    cache = cache_dir(root)
    stem = f"places365-{size}px"
    meta_path = cache / f"{stem}-v{CACHE_VERSION}.pt"

    cached = _load_places(meta_path, cache, stem, size)
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
    # Chunked, on every core, resumable, shared with any other process decoding the same cache.
    splits = {"train": [Path(p) for p, _ in train.imgs], "test": [Path(p) for p, _ in test.imgs]}
    xs, _ = decode_to_folder(splits, (size, size), cache / stem, what=f"places365 at {size} px")
    meta: dict[str, Any] = {"classes": names, "size": size, "version": CACHE_VERSION, "layout": "chunked"}
    for split, ds in (("train", train), ("test", test)):
        meta[f"{split}_y"] = torch.as_tensor([t for _, t in ds.imgs], dtype=torch.long)
    store.save_torch(meta_path, meta)  # written last (by each process that decoded: same bytes)
    return BaseSet(names, xs["train"], meta["train_y"], xs["test"], meta["test_y"])


def _load_places(meta_path: Path, cache: Path, stem: str, size: int) -> BaseSet | None:
    """The memory-mapped cache at `size`, or None when it is missing or incomplete (then built or resumed)."""
    if not meta_path.is_file():
        return None
    try:
        meta = store.load_torch(meta_path, what="data cache")
        counts = {split: len(meta[f"{split}_y"]) for split in ("train", "test")}
        if meta.get("layout") == "chunked":
            mapped = map_folder(cache / stem, counts, (size, size))
            if mapped is None:
                return None
            xs = mapped[0]
        else:  # the layout before chunked decoding: one raw file per split next to the metadata
            xs = {}
            for split, n in counts.items():
                path, numel = cache / f"{stem}-{split}.u8", n * 3 * size * size
                if path.stat().st_size != numel:
                    return None
                xs[split] = torch.from_file(str(path), shared=False, size=numel, dtype=torch.uint8).view(n, 3, size, size)
        return BaseSet(meta["classes"], xs["train"], meta["train_y"], xs["test"], meta["test_y"])
    except (TicketxError, KeyError, TypeError, OSError, RuntimeError, AttributeError) as err:
        log.warning("ignoring unreadable data cache %s: %s", meta_path, err)
        return None
