"""Decoded caches: a base set is parsed once into uint8 tensors and kept under `data_root()/cache`.

Later runs load the cache (memory-mapped) and never parse pickles, .mat files or JPEGs again.
A cache that is missing, unreadable or of another layout is ignored, and the set is rebuilt.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ticketx import store
from ticketx.errors import TicketxError

log = logging.getLogger(__name__)

# Bump when the layout of a decoded cache changes: old caches are then simply ignored.
CACHE_VERSION = 1


@dataclass
class BaseSet:
    """A base set as a loader returns it and a cache file stores it: native size, all classes."""

    classes: list[str]
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor


def cache_dir(root: Path) -> Path:
    """The folder of decoded caches under a data root."""
    return root / "cache"


def has_cache(root: Path, name: str) -> bool:
    """Whether a decoded cache of base set `name` exists under `root` (any size, this layout)."""
    folder = cache_dir(root)
    return folder.is_dir() and any(folder.glob(f"{name}-*v{CACHE_VERSION}.pt"))


def save_base(path: Path, base: BaseSet) -> None:
    """Write a decoded cache; a failure is only logged (the set is decoded again next time)."""
    try:
        # Not dataclasses.asdict: it would deep-copy every tensor first.
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(BaseSet)}
        store.save_torch(path, fields | {"version": CACHE_VERSION})
    except TicketxError as err:
        # A read-only data folder must not stop a run: the set is simply decoded again next time.
        log.warning("could not write the decoded cache %s: %s", path, err)


def load_base(path: Path) -> BaseSet | None:
    """The cached base set, or None when there is none or it is unusable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        # mmap: a large cache costs no memory until its pages are read.
        obj = store.load_torch(path, what="data cache", mmap=True)
    except TicketxError as err:
        log.warning("ignoring unreadable data cache %s: %s", path, err)
        return None
    names = [f.name for f in dataclasses.fields(BaseSet)]
    if not isinstance(obj, dict) or not all(k in obj for k in names):
        return None
    base = BaseSet(**{k: obj[k] for k in names})
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
