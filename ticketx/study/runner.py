"""Running a study: every cell not done yet, searches first; each cell's `done.json` is written last.

Several processes may run one study at once: `ticketx.study.worker` claims the cells.

A cell is keyed by a fingerprint of its full resolved configuration and lives in
`<out>/cells/<id>/`. Rerunning a study skips finished cells without loading any data, changing
one setting changes the keys (and so reruns) only of the cells it reaches, and an interrupted
study resumes: unfinished searches continue from their work folder, unfinished networks from
their last epoch. Networks trained by transfer cells live in one shared folder `<out>/runs/`,
keyed by their own configuration, so a network two cells share is trained once.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Optional

from ticketx.errors import TicketxError
from ticketx.settings.study import Study
from ticketx.study.cells import Cell, SearchCell, StabilityCell, TransferCell, count

STUDY_FORMAT = "ticketx-study"
STUDY_VERSION = 2  # 2: cells' info holds the study axes' columns


def cell_dir(out: Path, cell: Cell | dict[str, Any]) -> Path:
    return out / "cells" / (cell.id if isinstance(cell, Cell) else cell["id"])


def is_done(out: Path, cell: Cell | dict[str, Any]) -> bool:
    from ticketx import store

    marker = cell_dir(out, cell) / "done.json"
    if not marker.exists():
        return False
    try:
        saved = store.read_json(marker)
    except TicketxError:
        return False  # unreadable marker: the cell is redone (its finished parts are skipped)
    return saved.get("key") == (cell.key if isinstance(cell, Cell) else cell["key"])


def provenance(study: Study) -> dict[str, Any]:
    """The study record: the file as written, its resolved configuration, every cell, versions."""
    from ticketx import store

    return {
        "format": STUDY_FORMAT, "format_version": STUDY_VERSION,
        "name": study.name, "file": study.file, "text": study.text,
        "resolved": study.spec.model_dump(), "channels": study.channels,
        "counts": count(study.cells),
        "cells": [{"id": c.id, "kind": c.kind, "key": c.key, "title": c.title, "info": c.info,
                   "source": getattr(c, "source", None), "own_ticket": getattr(c, "own_ticket", None),
                   "networks": c.networks, "config": c.config} for c in study.cells],
        "versions": store.versions(),
    }


def write_provenance(study: Study, out: Path) -> None:
    """`<out>/study.json` (see `provenance`), keeping the time of the first run."""
    from ticketx import store

    path = out / "study.json"
    created = None
    if path.exists():
        try:
            created = store.read_json(path).get("created")
        except TicketxError:
            pass
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    store.write_json(path, {**provenance(study), "created": created or now, "updated": now})


def run_cell(cell: Cell, out: Path, *, device: str, data_dir: Any, reporter: Any) -> Any:
    """Train one cell (resuming what its folder holds); return its summary for done.json."""
    from ticketx.search import find
    from ticketx.settings.transfer import resolve_transfer
    from ticketx.transfer import transfer

    here = cell_dir(out, cell)
    if isinstance(cell, SearchCell):
        ticket = find(cell.find, here / "ticket.pt", data_dir=data_dir, device=device, reporter=reporter)
        return [{k: r.get(k) for k in ("round", "density", "test_acc", "val_acc", "train_acc", "memorised", "seconds")}
                for r in ticket.rounds]
    if isinstance(cell, StabilityCell):
        return _run_stability(cell, out, here, device=device, data_dir=data_dir, reporter=reporter)
    assert isinstance(cell, TransferCell)
    own = str(cell_dir(out, {"id": cell.own_ticket}) / "ticket.pt") if cell.own_ticket else None
    plan = resolve_transfer(cell_dir(out, {"id": cell.source}) / "ticket.pt",
                            cell.transfer.model_copy(update={"own_ticket": own}))
    result = transfer(plan, here, data_dir=data_dir, device=device, reporter=reporter, runs_dir=out / "runs")
    return result["summary"]


def _run_stability(cell: StabilityCell, out: Path, here: Path, *, device: str, data_dir: Any, reporter: Any) -> Any:
    """Two copies of the source ticket's round from its rewind point, on the ticket's own data set
    with its own recipe; `stability.json` (the path and barriers) and `path.png` in the cell folder."""
    from ticketx import store
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data
    from ticketx.stability import path_plot, stability
    from ticketx.runtime import resolve_device, set_deterministic

    ticket = ticketfile.load(cell_dir(out, {"id": cell.source}) / "ticket.pt")
    m = ticket.meta
    set_deterministic(bool(cell.config.get("deterministic")))
    data = load_data(m["data"], data_dir, image_size=m["image_size"], channels=m["channels"])
    result = stability(ticket, cell.round, data, cell.train, seeds=cell.seeds, device=resolve_device(device),
                       points=cell.points, reporter=reporter, work=here)
    store.write_json(here / "stability.json", result)
    try:
        path_plot(result, here / "path.png")
    except ImportError:  # matplotlib is optional: the numbers are the result
        pass
    return {k: result[k] for k in ("round", "density", "train_barrier", "test_barrier", "stable", "endpoint_test_acc")}
