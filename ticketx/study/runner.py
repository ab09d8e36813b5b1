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

from ticketx.errors import TicketxError, UsageError
from ticketx.settings.overrides import Override, parse_override
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
        "name": study.name, "file": study.file, "text": study.text, "overrides": [o.text for o in study.overrides],
        "resolved": study.spec.model_dump(), "channels": study.channels,
        "counts": count(study.cells),
        "cells": [cell_record(c) for c in study.cells] if cells else [],
        "versions": store.versions(),
    }
    if not cells:
        del record["cells"]
    return record


def default_folder(study: Study) -> Path:
    """runs/<name>; with overrides that change results, runs/<name>+<the overrides> (another study)."""
    import re

    from ticketx import store

    science = [o.text for o in study.overrides if o.science]
    if not science:
        return Path("runs") / study.name
    words = "+".join(re.sub(r"[^A-Za-z0-9_.=-]+", "-", t).strip("-") for t in science)
    return Path("runs") / (f"{study.name}+{words}" if len(words) <= 60 else f"{study.name}+set-{store.fingerprint(science)}")


def _same_science(recorded: list[str], overrides: list[Override]) -> bool:
    before = sorted((repr(o.path), repr(o.value)) for o in map(parse_override, recorded) if o.science)
    return before == sorted((repr(o.path), repr(o.value)) for o in overrides if o.science)


def _sets(texts: list[str]) -> str:
    return " ".join(f"--set {t}" for t in texts) or "no --set"


def check_overrides(study: Study, out: Path) -> None:
    """Refuse to continue a study folder with other overrides (of keys that change results) than it ran with."""
    path = out / "study.json"
    if not path.exists():
        return
    recorded = _head(path).get("overrides") or []
    if not _same_science(recorded, study.overrides):
        was = _sets([t for t in recorded if parse_override(t).science])
        now = _sets([o.text for o in study.overrides if o.science])
        raise UsageError(f"{out} holds this study run with {was}, not {now}",
                         f"give the same --set options to continue it (or run the folder: ticketx study run {out}); "
                         "for the other settings, choose another --out")


def write_provenance(study: Study, out: Path) -> None:
    """`<out>/study.json` (see `provenance`), keeping the time of the first run and the record of
    claims changed after results existed; refuses a folder run with other overrides. Written a
    cell per line, streamed (a 100k-cell grid is no 100 MB string)."""
    from ticketx import store

    check_overrides(study, out)
    path = out / "study.json"
    kept = _kept(path)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    head = {**provenance(study, cells=False), "created": kept.pop("created", None) or now, "updated": now, **kept}
    if store.writes():
        with store.atomic_path(path) as tmp, open(tmp, "w") as fh:
            fh.writelines(record_lines(head, (cell_record(c) for c in study.cells)))


CELLS_LINE = '\n  "cells": [\n'  # in study.json (record_text): everything before it is the record's head


KEPT = ("created", "claims_overridden")  # what a rewrite of study.json keeps from the last one


def _kept(path: Path) -> dict[str, Any]:
    """What study.json keeps across runs (KEPT), from an existing one."""
    head = _head(path)
    return {k: head[k] for k in KEPT if head.get(k)}


def _head(path: Path) -> dict[str, Any]:
    """An existing study.json's head (everything but its cells): read from the head alone (the cells
    come last), else (an older layout) from the whole file; {} if there is none or it is damaged."""
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
        else:
            head = store.read_json(path)
        return head if isinstance(head, dict) else {}
    except (OSError, ValueError, TicketxError, AttributeError):
        return {}


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


def claim_overrides(study: Study, out: Path) -> list[str]:
    """Claims changed after results existed (claims are meant to be stated before the data): when
    `study`'s `expect:` (with its --set overrides) differs from the one `<out>` last ran with and a
    cell is done, the change is recorded in `<out>/study.json`. Returns a note per change so far."""
    import json

    from ticketx import store

    path = out / "study.json"
    if not path.exists():
        return []
    try:
        prov = store.read_json(path)
    except TicketxError:
        return []
    history = list(prov.get("claims_overridden") or [])
    before = (prov.get("resolved") or {}).get("expect")
    now = json.loads(json.dumps(study.spec.model_dump()["expect"], default=str))
    if before is not None and before != now and any(is_done(out, c) for c in study.cells):
        key = store.fingerprint(now)
        if not history or history[-1].get("expect") != key:
            sets = [o.text for o in study.overrides if o.path[0] == "expect"]
            history.append({"expect": key, "set": sets, "cells_done": sum(is_done(out, c) for c in study.cells),
                            "cells": len(study.cells), "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
            head = {k: v for k, v in prov.items() if k != "cells"} | {"claims_overridden": history}
            if store.writes():  # the head first, the cells last (as write_provenance lays it out)
                with store.atomic_path(path) as tmp, open(tmp, "w") as fh:
                    fh.writelines(record_lines(head, prov.get("cells") or []))
    return [f"claims were changed after results existed ({h['cells_done']} of {h['cells']} cells done, {h['time']}): "
            f"{_sets(h['set']) if h['set'] else 'the expect: block of the study file'}" for h in history]


def run_cell(cell: Cell, out: Path, *, device: str, data_dir: Any, reporter: Any, cohort: int | str = 1) -> Any:
    """Train one cell (resuming what its folder holds); return its summary for done.json.

    `cohort` (the study's `cohort:`): networks of the cell trained together (ticketx.cohort); not in its key.
    """
    from ticketx.search import find
    from ticketx.transfer import transfer

    here = cell_dir(out, cell)
    if isinstance(cell, SearchCell):
        if cell.find.supermask is not None:  # a mask learned over frozen weights (the search-method axis)
            from ticketx.supermask import search as supermask_search

            ticket = supermask_search(cell.find, here / "ticket.pt", data_dir=data_dir, device=device, reporter=reporter)
        else:
            ticket = find(cell.find, here / "ticket.pt", data_dir=data_dir, device=device, reporter=reporter)
        return search_summary(ticket)
    if isinstance(cell, StabilityCell):
        return _run_stability(cell, out, here, device=device, data_dir=data_dir, reporter=reporter, cohort=cohort)
    assert isinstance(cell, TransferCell)
    result = transfer(transfer_plan(cell, out), here, data_dir=data_dir, device=device, reporter=reporter,
                      runs_dir=out / "runs", cohort=cohort)
    return result["summary"]


def search_summary(ticket: Any) -> list[dict[str, Any]]:
    """A search cell's summary for done.json: each round's density and accuracies."""
    return [{k: r.get(k) for k in ("round", "density", "weights", "test_acc", "val_acc", "train_acc", "memorised", "seconds")}
            for r in ticket.rounds]


def transfer_plan(cell: TransferCell, out: Path) -> Any:
    """A transfer cell's resolved plan: its ticket and own ticket from their search cells' folders."""
    from ticketx.settings.transfer import resolve_transfer

    own = str(cell_dir(out, {"id": cell.own_ticket}) / "ticket.pt") if cell.own_ticket else None
    return resolve_transfer(cell_dir(out, {"id": cell.source}) / "ticket.pt",
                            cell.transfer.model_copy(update={"own_ticket": own}))


def run_cells(cells: list[Cell], out: Path, *, device: str, data_dir: Any, reporter: Any,
              cohort: int | str = 1) -> list[Any]:
    """Train a group of cells together (`ticketx.study.cohorts`; resuming what their folders hold); return
    each cell's summary for its done.json, in order. One cell: `run_cell`.

    Searches run in lockstep (`ticketx.search.find_many`). Transfer and stability cells hand the
    networks of all cells whose recipes are equal to the trainer in one call (cell by cell, each
    cell's in its own order; a network two of them share once), then each cell writes its result.
    Each cell's runs, keys and folders are those it has alone; only which networks share a cohort
    changes.
    """
    from ticketx.runs import ensure, recipe_key
    from ticketx.search import find_many
    from ticketx.transfer import prepare

    if len(cells) == 1:
        return [run_cell(cells[0], out, device=device, data_dir=data_dir, reporter=reporter, cohort=cohort)]
    if all(isinstance(c, SearchCell) for c in cells):
        tickets = find_many([(c.find, cell_dir(out, c) / "ticket.pt") for c in cells if isinstance(c, SearchCell)],
                            data_dir=data_dir, device=device, reporter=reporter, cohort=cohort)
        return [search_summary(t) for t in tickets]
    jobs: list[tuple[Any, Any]] = []  # (job, what its result becomes: the cell's summary)
    datas: dict[Any, Any] = {}
    for c in cells:
        if isinstance(c, TransferCell):
            plan = transfer_plan(c, out)
            what = (plan.spec.target, plan.ticket.meta["image_size"], plan.ticket.meta["channels"])  # load_data's arguments
            job = prepare(plan, cell_dir(out, c), data_dir=data_dir, device=device, runs_dir=out / "runs", cohort=cohort,
                          data=datas.get(what))
            datas[what] = job.data
            jobs.append((job, lambda result: result["summary"]))
        elif isinstance(c, StabilityCell):
            job = _stability_job(c, out, device=device, data_dir=data_dir, cohort=cohort, datas=datas)
            jobs.append((job, lambda result, c=c: _stability_done(c, cell_dir(out, c), result)))
        else:
            raise ValueError("a group of cells is all searches, or transfer and stability cells")
    parts: dict[str, list[Any]] = {}
    for job, _ in jobs:
        parts.setdefault(recipe_key(job.recipe), []).append(job)
    outcomes: dict[int, list[Any]] = {}
    for part in parts.values():
        unique: dict[Any, Any] = {}  # run folder -> run: a network two cells share is trained once
        for job in part:
            for run in job.runs:
                unique.setdefault(run.folder, run)
        got = dict(zip(unique, ensure(list(unique.values()), part[0].recipe, reporter,
                                      names=getattr(part[0], "names", ()))))
        for job in part:
            outcomes[id(job)] = [got[run.folder] for run in job.runs]
    return [summary(job.finish(outcomes[id(job)])) for job, summary in jobs]


def _stability_job(cell: StabilityCell, out: Path, *, device: str, data_dir: Any, cohort: int | str,
                   datas: dict[Any, Any]) -> Any:
    """A stability cell set up (`ticketx.stability.prepare_pairs`): two copies of the source ticket's round
    from its rewind point, on the ticket's own data set (loaded once per `datas` key) with its own recipe."""
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data
    from ticketx.runtime import resolve_device, set_deterministic
    from ticketx.stability import prepare_pairs

    ticket = ticketfile.load(cell_dir(out, {"id": cell.source}) / "ticket.pt")
    m = ticket.meta
    set_deterministic(bool(cell.config.get("deterministic")))
    what = (m["data"], m["image_size"], m["channels"])  # load_data's arguments
    if what not in datas:
        datas[what] = load_data(m["data"], data_dir, image_size=m["image_size"], channels=m["channels"])
    job = prepare_pairs(ticket, cell.round, datas[what], cell.train, seeds=cell.seeds, device=resolve_device(device),
                        points=cell.points, work=cell_dir(out, cell), cohort=cohort)
    return job


def _stability_done(cell: StabilityCell, here: Path, result: dict[str, Any]) -> Any:
    """`stability.json` (the path and barriers) and `path.png` in the cell folder; the cell's summary."""
    from ticketx import store
    from ticketx.stability import path_plot

    store.write_json(here / "stability.json", result)
    try:
        path_plot(result, here / "path.png")
    except ImportError:  # matplotlib is optional: the numbers are the result
        pass
    return {k: result[k] for k in ("round", "density", "train_barrier", "test_barrier", "stable", "endpoint_test_acc")}


def _run_stability(cell: StabilityCell, out: Path, here: Path, *, device: str, data_dir: Any, reporter: Any,
                   cohort: int | str = 1) -> Any:
    """Two copies of the source ticket's round from its rewind point, on the ticket's own data set
    with its own recipe; `stability.json` (the path and barriers) and `path.png` in the cell folder."""
    job = _stability_job(cell, out, device=device, data_dir=data_dir, cohort=cohort, datas={})
    return _stability_done(cell, here, job.train(reporter))
