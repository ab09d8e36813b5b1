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
from typing import Any, Iterable, Iterator, Optional

from ticketx.errors import TicketxError
from ticketx.settings.study import Study
from ticketx.study.cells import Cell, SearchCell, StabilityCell, TransferCell, count

STUDY_FORMAT = "ticketx-study"
# 2: cells' info holds the study axes' columns. 3: a cell's full configuration is no longer
# repeated in study.json (it is in its folder's config.json, and follows from `text`); a search
# cell names its model instead: study.json of 100k cells is 3x smaller. Version 2 is still read.
STUDY_VERSION = 3


def cell_dir(out: Path, cell: Cell | dict[str, Any]) -> Path:
    return out / "cells" / (cell.id if isinstance(cell, Cell) else cell["id"])


def started(out: Path) -> set[str]:
    """The ids of the cells that have a folder in `<out>/cells` (one directory listing: a cell
    without a folder is neither done nor failed, so a study of 100k cells costs no 100k stats)."""
    import os

    try:
        with os.scandir(Path(out) / "cells") as it:
            return {e.name for e in it}
    except OSError:
        return set()


def done_ids(out: Path, cells: list[Any]) -> set[str]:
    """The ids of `cells` (Cell or study.json record) that are done in `out`."""
    have = started(out)
    ids = [(c.id if isinstance(c, Cell) else c["id"], c) for c in cells]
    return {i for i, c in ids if i in have and is_done(out, c)}


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


def cell_record(c: Cell) -> dict[str, Any]:
    """A cell as study.json lists it: what the reports and the workers read (its configuration is in
    `<out>/cells/<id>/config.json` once it starts, and follows from the study's `text`)."""
    record = {"id": c.id, "kind": c.kind, "key": c.key, "title": c.title, "info": c.info,
              "source": getattr(c, "source", None), "own_ticket": getattr(c, "own_ticket", None),
              "networks": c.networks}
    if isinstance(c, SearchCell):
        record["model"] = c.find.model  # not an axis: the architecture its ticket has (reports group tickets by it)
    return record


def provenance(study: Study, cells: bool = True) -> dict[str, Any]:
    """The study record: the file as written, its resolved configuration, every cell, versions
    (without `cells`: all but the cells)."""
    from ticketx import store

    record = {
        "format": STUDY_FORMAT, "format_version": STUDY_VERSION,
        "name": study.name, "file": study.file, "text": study.text,
        "resolved": study.spec.model_dump(), "channels": study.channels,
        "counts": count(study.cells),
        "cells": [cell_record(c) for c in study.cells] if cells else [],
        "versions": store.versions(),
    }
    if not cells:
        del record["cells"]
    return record


def write_provenance(study: Study, out: Path) -> None:
    """`<out>/study.json` (see `provenance`), keeping the time of the first run."""
    from ticketx import store

    path = out / "study.json"
    created = _created(path)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    head = {**provenance(study, cells=False), "created": created or now, "updated": now}
    if store.writes():
        with store.atomic_path(path) as tmp, open(tmp, "w") as fh:
            fh.writelines(record_lines(head, (cell_record(c) for c in study.cells)))  # streamed: no 100 MB string


CELLS_LINE = '\n  "cells": [\n'  # in study.json (record_text): everything before it is the record's head


def _created(path: Path) -> Optional[str]:
    """When the study first ran, from an existing study.json: read from its head alone (the cells come
    last), else (an older layout, or a damaged file) from the whole file, or None."""
    import json

    from ticketx import store

    try:
        with open(path) as fh:
            text = ""
            while CELLS_LINE not in text[-(1 << 17):]:
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                text += chunk
        at = text.find(CELLS_LINE)
        if at >= 0:
            head = json.loads(text[:at].rstrip().rstrip(",") + "\n}")
            if "created" in head:
                return head["created"]
        return store.read_json(path).get("created")
    except (OSError, ValueError, TicketxError, AttributeError):
        return None


def record_lines(head: dict[str, Any], cells: Iterable[dict[str, Any]]) -> Iterator[str]:
    """study.json's text, in pieces: the head indented, then one line per cell (the cells last).

    Indenting every cell's fields made `json` use its pure-Python encoder: 850 MB and 10 s for
    100k cells; a cell per line (the C encoder), written as it is made, is a fraction of both.
    """
    import json

    yield json.dumps(head, indent=2, default=str)[:-2] + "," + CELLS_LINE
    for i, c in enumerate(cells):
        yield (",\n    " if i else "    ") + json.dumps(c, default=str)
    yield "\n  ]\n}\n"


def run_cell(cell: Cell, out: Path, *, device: str, data_dir: Any, reporter: Any) -> Any:
    """Train one cell (resuming what its folder holds); return its summary for done.json."""
    from ticketx.search import find
    from ticketx.settings.transfer import resolve_transfer
    from ticketx.transfer import transfer

    here = cell_dir(out, cell)
    if isinstance(cell, SearchCell):
        ticket = find(cell.find, here / "ticket.pt", data_dir=data_dir, device=device, reporter=reporter)
        return [{k: r.get(k) for k in ("round", "density", "test_acc", "val_acc", "seconds")} for r in ticket.rounds]
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
