"""The registry of base sets: what each is, where its files live, and the loader that reads it.

A loader is registered with `@register(name, ...)` next to its definition (one file per source
family: digits.py, torchvision_sets.py, places.py); `ticketx datasets` lists the registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ticketx.data.cache import BaseSet, has_cache

# The prefix of the user's own image folders, 'imagefolder:PATH' (not a registered base set).
IMAGEFOLDER = "imagefolder"


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
    train_images: int = 0  # images in the standard training split (0: not known before loading); for cost estimates


# (data root, download allowed, requested image size or None) -> the base set at its native size
# (Places365 alone decodes straight to the requested size: at 256 px it would not fit in memory).
Loader = Callable[[Path, bool, "int | None"], BaseSet]

DATASETS: dict[str, DatasetInfo] = {}
LOADERS: dict[str, Loader] = {}
ALIASES: dict[str, str] = {}


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
    train_images: int = 0,
) -> Callable[[Loader], Loader]:
    """Decorator: add a loader `(root, download, image_size) -> BaseSet` to the registry under `name`."""

    def deco(loader: Loader) -> Loader:
        if name in DATASETS or name in ALIASES:
            raise ValueError(f"data set {name!r} registered twice")
        DATASETS[name] = DatasetInfo(
            name, num_classes, image_size, channels, flip, crop_padding, description, tuple(files), tuple(archives), tuple(aliases),
            train_images,
        )
        LOADERS[name] = loader
        for alias in aliases:
            ALIASES[alias] = name
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


def present(folder: Path, rels: Sequence[str]) -> bool:
    """Whether every file or folder ('dir/') in `rels` exists under `folder`."""
    return all((folder / rel.rstrip("/")).exists() for rel in rels)


def dataset_rows(data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per data set for `ticketx datasets`.

    Keys: name, classes, image_size, channels, present (bool: usable without network), path,
    description. The last row is `imagefolder:PATH`, whose classes/size/channels/present are None.
    """
    root = data_root(data_dir)
    rows = []
    for info in DATASETS.values():
        folder = root / info.name
        # An embedded set (no files) is always present: present(folder, ()) is True.
        usable = (
            present(folder, info.files)
            or bool(info.archives and present(folder, info.archives))
            or has_cache(root, info.name)
        )
        rows.append(
            {
                "name": info.name,
                "classes": info.num_classes,
                "image_size": info.image_size,
                "channels": info.channels,
                "present": usable,
                "path": str(folder) if info.files else "",
                "description": info.description,
            }
        )
    rows.append(
        {
            "name": f"{IMAGEFOLDER}:PATH",
            "classes": None,
            "image_size": None,
            "channels": None,
            "present": None,
            "path": "",
            "description": "your own images: PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg (or val/)",
        }
    )
    return rows
