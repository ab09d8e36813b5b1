"""Study results: one tidy row per trained network from the finished cells; tables, CSV, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ticketx.errors import UsageError
from ticketx.study.runner import STUDY_FORMAT, STUDY_VERSION, cell_dir, is_done

COLUMNS = ["study", "kind", "model", "source", "source_classes", "target", "target_classes", "search_optimizer",
           "transfer_optimizer", "search_seed", "seed", "round", "density", "label", "test_acc", "run_id", "cell",
           "versions"]


def _classes_of(name: str) -> str:
    return name[name.rfind("[") + 1:-1] if name.endswith("]") else ""


def _versions(v: dict[str, Any]) -> str:
    return " ".join(f"{k}={v[k]}" for k in sorted(v))


def load_provenance(out: Path) -> dict[str, Any]:
    from ticketx import store

    path = out / "study.json"
    if not path.exists():
        raise UsageError(f"{out} holds no study (no study.json)", "run it first: ticketx study run STUDY.yaml")
    prov = store.read_json(path)
    if not isinstance(prov, dict) or prov.get("format") != STUDY_FORMAT:
        raise UsageError(f"{path} is not a ticketx study record")
    if prov.get("format_version", 0) > STUDY_VERSION:
        raise UsageError(f"{path} was written by a newer ticketx (study format {prov['format_version']})", "upgrade ticketx")
    return prov


def collect(out: str | Path, prov: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(provenance, rows): one row per trained network in the finished cells of `<out>`.

    `prov` (default: `<out>/study.json`, the last run) says which cells belong to the study.
    """
    from ticketx import store

    out = Path(out)
    prov = prov or load_provenance(out)
    name = prov["name"]
    cells = {c["id"]: c for c in prov["cells"]}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for c in prov["cells"]:
        if not is_done(out, c):
            continue
        here = cell_dir(out, c)
        done = store.read_json(here / "done.json")
        versions = _versions(done.get("versions", {}))
        info = c["info"]
        if c["kind"] == "search":
            for r in done["summary"]:
                rid = f"{c['id']}/round_{r['round']:02d}"
                rows.append({
                    "study": name, "kind": "search", "model": info["model"], "source": info["data"],
                    "source_classes": _classes_of(info["data"]), "target": info["data"],
                    "target_classes": _classes_of(info["data"]), "search_optimizer": info["optimizer"],
                    "transfer_optimizer": "", "search_seed": info["seed"], "seed": info["seed"], "round": r["round"],
                    "density": r["density"], "label": "search", "test_acc": r["test_acc"], "run_id": rid,
                    "cell": c["id"], "versions": versions,
                })
            continue
        result = store.read_json(here / "result.json")
        own = cells[c["own_ticket"]]["info"] if c.get("own_ticket") in cells else None
        for run in result["runs"]:
            rid = f"{run['label']}-r{run['round']:02d}-s{run['seed']}-{run['key']}"
            if rid in seen:  # the own ticket's networks are shared by the cells of every source
                continue
            seen.add(rid)
            label = run["label"]
            src, sopt, sseed = info["source"], info["search_optimizer"], info["search_seed"]
            if label == "own-ticket":
                assert own is not None
                src, sopt, sseed = own["data"], own["optimizer"], own["seed"]
            if label == "ticket" and src == info["target"] and sopt == info["transfer_optimizer"]:
                label = "own-ticket"  # a source that is also a target is that target's own ticket
            rows.append({
                "study": name, "kind": "transfer", "model": info["model"], "source": src,
                "source_classes": _classes_of(src), "target": info["target"], "target_classes": _classes_of(info["target"]),
                "search_optimizer": sopt, "transfer_optimizer": info["transfer_optimizer"], "search_seed": sseed,
                "seed": run["seed"], "round": run["round"], "density": run["density"], "label": label,
                "test_acc": run["test_acc"], "run_id": rid, "cell": c["id"], "versions": versions,
            })
    return prov, rows


def report(out: str | Path, *, density: Optional[float] = None, plots: bool = True,
           prov: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write results.csv and the plots of `<out>`, print the transfer matrices; return what was written."""
    from ticketx import report as R
    from ticketx import store
    from ticketx.ui import console

    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"no results in {out}: the study has not run there", "run it: ticketx study run STUDY.yaml [--out DIR]")
    if density is not None and not 0 < density <= 1:
        raise UsageError(f"--density is the fraction of weights kept, in (0, 1]; got {density:g}")
    prov, rows = collect(out, prov)
    done = sum(is_done(out, c) for c in prov["cells"])
    total = len(prov["cells"])
    csv_path = out / "results.csv"
    store.write_text(csv_path, R.csv_text(rows, COLUMNS))
    order = _order(prov)
    for table in R.study_matrices(rows, order, title=prov["name"]):
        console.print(table)
    written = {"csv": csv_path, "plots": [], "rows": len(rows), "cells_done": done, "cells": total}
    if plots and any(r["kind"] == "transfer" for r in rows):
        written["plots"] = R.study_plots(rows, order, out / "plots", density=density)
    state = "[green]complete[/]" if done == total else f"[yellow]{done} of {total} cells done[/] (partial results)"
    console.print(f"study [bold]{prov['name']}[/]: {state}; {len(rows)} trained networks in {csv_path}")
    for p in written["plots"]:
        console.print(f"  plot: {p}")
    return written


def _order(prov: dict[str, Any]) -> dict[str, list[str]]:
    """Sources and targets in the order the study file lists them (tables and plots follow it)."""
    sources: list[str] = []
    targets: list[str] = []
    for c in prov["cells"]:
        if c["kind"] == "search" and c["info"]["role"] == "source" and c["info"]["data"] not in sources:
            sources.append(c["info"]["data"])
        if c["kind"] == "transfer" and c["info"]["target"] not in targets:
            targets.append(c["info"]["target"])
    return {"sources": sources, "targets": targets}
