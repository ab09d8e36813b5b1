"""Loading a study: the schema assembled from the axes, the file parsed, names checked, cells expanded, claims resolved.

Everything that can be wrong with a study file is found here, before anything trains: its size,
nesting and aliases (settings.yamlfile), schema (settings.study), the axes' names and cross-field
rules, the grid's size (counted before any cell is built: cells.check_size), every cell's resolved
configuration (cells.expand) and the claims, which may name only what the cells produce
(expect.resolve_claims).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence

from ticketx.settings.overrides import Override, parse_override, parse_overrides
from ticketx.settings.study import Study, StudySpec, assemble, parse_study
from ticketx.study.axes import AXES
from ticketx.study.cells import expand
from ticketx.study.claims import resolve_claims


@functools.cache
def schema() -> type[StudySpec]:
    """The study file's schema: the base keys and every axis's keys."""
    fields: dict[str, dict] = {}
    for a in AXES.values():
        for block, keys in a.fields.items():
            for key, value in keys.items():
                if key in fields.setdefault(block, {}):
                    raise ValueError(f"study key {block}.{key} is declared by two axes")
                fields[block][key] = value
    return assemble(fields, [a.claim_key for a in AXES.values() if a.claim_key])


def load_study(path: str | Path, text: Optional[str] = None, overrides: Sequence[str | Override] = ()) -> Study:
    """Read and validate a study file; every problem is one UsageError naming file, line and key.

    `text`: the file's contents as recorded (a study folder's study.json), instead of reading `path`;
    `overrides`: `--set key=value` texts (or parsed), applied to the file before validation.
    """
    parsed = [o if isinstance(o, Override) else parse_override(o) for o in overrides]
    study = parse_study(path, schema(), text, parse_overrides([o.text for o in parsed]) if parsed else [])
    for a in AXES.values():
        a.check(study)
    study.cells = expand(study)  # resolves every configuration: errors surface here, before training
    study.claims = resolve_claims(study)  # claims name only what the cells produce
    return study
