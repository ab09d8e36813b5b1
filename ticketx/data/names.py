"""The data set grammar: a base set and optionally a subset of its classes.

    cifar10            all classes
    cifar10[0-4]       classes 0..4, relabelled 0..4
    cifar100[0,5,7]    classes 0, 5, 7, relabelled 0, 1, 2 (always in sorted order)
    fmnist             an alias: the canonical name is fashion-mnist
    imagefolder:PATH   the user's own images: PATH/train/<class>/*, PATH/test/<class>/* (or val/)

Parsing checks names and class ranges against the registry without loading anything, so bad
input is rejected before any data is read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Sequence

from ticketx.data.registry import ALIASES, DATASETS, IMAGEFOLDER
from ticketx.errors import UsageError, did_you_mean


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
        return self.base.startswith(IMAGEFOLDER + ":")

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


def check_range(label: str, classes: Sequence[int], num_classes: int) -> None:
    """UsageError naming every class index of `classes` that `label` (with `num_classes`) lacks."""
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
        if head.strip().lower() != IMAGEFOLDER:
            raise UsageError(did_you_mean(head.strip(), [IMAGEFOLDER], "data set prefix"), "write imagefolder:PATH")
        if not rest.strip():
            raise UsageError(f"invalid data set {text!r}: imagefolder needs a folder, e.g. imagefolder:~/pets")
        path = os.path.abspath(os.path.expanduser(rest.strip()))
        # An image folder's class count is only known once it is scanned: load_data checks the range.
        return DataSpec(f"{IMAGEFOLDER}:{path}", classes)

    key = raw.strip().lower()
    if "[" in key or "]" in key:
        raise UsageError(f"invalid data set {text!r}: unbalanced brackets; {_SYNTAX}")
    if key == IMAGEFOLDER:
        raise UsageError(f"invalid data set {text!r}: imagefolder needs a folder, e.g. imagefolder:~/pets")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise UsageError(did_you_mean(key, [*DATASETS, f"{IMAGEFOLDER}:PATH"], "data set"))
    info = DATASETS[key]
    if classes is not None:
        check_range(info.name, classes, info.num_classes)
        if classes == tuple(range(info.num_classes)):
            classes = None  # every class: one canonical name for one data set
    return DataSpec(key, classes)
