"""What is going on in a study folder (`ticketx study status`): cells done, running (by whom,
since when, heartbeat), failed (error, log), pending, and an estimate of the time left."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from ticketx.leases import read_lease
from ticketx.study.results import load_provenance
from ticketx.study.runner import cell_dir, is_done, started
from ticketx.study.worker import DEFAULT_LEASE_TIMEOUT, failed_info, lease_dir, lease_name


def status(out: str | Path, prov: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Cells done / running (by whom, since when) / failed (error, log) / pending, and an ETA."""
    out = Path(out)
    prov = prov or load_provenance(out)
    now = time.time()
    cells = prov["cells"]
    state: dict[str, str] = {}
    running, failed = [], []
    seconds: dict[str, list[float]] = {"search": [], "transfer": [], "stability": []}
    networks: dict[str, list[int]] = {"search": [], "transfer": [], "stability": []}
    # One listing of cells/ and of leases/: a cell without a folder is pending, one without a
    # lease file is not running (no stat per cell: a folder of 100k cells is read in about a second).
    have = started(out)
    try:
        leased = {p.name for p in lease_dir(out).iterdir()}
    except OSError:
        leased = set()
    for c in cells:
        if c["id"] not in have and f"{lease_name(c)}.lease" not in leased:
            state[c["id"]] = "pending"  # never started (a cell is leased, then gets its folder)
            continue
        if is_done(out, c):
            state[c["id"]] = "done"
            try:
                d = json.loads((cell_dir(out, c) / "done.json").read_text())
                seconds[c["kind"]].append(float(d.get("seconds", 0.0)))
                networks[c["kind"]].append(int(c.get("networks") or 1))
            except (OSError, ValueError):
                pass
            continue
        path = lease_dir(out) / f"{lease_name(c)}.lease"
        lease = read_lease(path) if path.name in leased else None
        if lease is not None:
            try:
                beat = now - path.stat().st_mtime
            except OSError:
                beat = 0.0
            state[c["id"]] = "running"
            running.append({"cell": c["id"], "title": c["title"], "worker": lease.get("worker"), "host": lease.get("host"),
                            "pid": lease.get("pid"), "job": lease.get("job"),
                            "for_s": max(0.0, now - float(lease.get("start_unix", now))), "heartbeat_s": beat,
                            "stale": beat > float(lease.get("lease_timeout", DEFAULT_LEASE_TIMEOUT))})
            continue
        info = failed_info(out, c)
        if info is not None:
            state[c["id"]] = "failed"
            failed.append({"cell": c["id"], "title": c["title"], "error": info.get("error", ""), "log": info.get("log"),
                           "worker": info.get("worker"), "job": info.get("job"), "time": info.get("time")})
            continue
        state[c["id"]] = "pending"
    counts = {k: sum(v == k for v in state.values()) for k in ("done", "running", "failed", "pending")}
    # ETA: seconds per trained network, measured on this study's finished cells (per kind where
    # known), times the networks left, over the workers now running (at least one).
    per_net_all = sum(sum(s) for s in seconds.values()) / max(1, sum(sum(n) for n in networks.values()))
    left = 0.0
    for c in cells:
        if state[c["id"]] in ("pending", "running"):
            k = c["kind"]
            rate = sum(seconds[k]) / sum(networks[k]) if networks[k] and sum(networks[k]) else per_net_all
            left += rate * int(c.get("networks") or 1)
    left -= sum(r["for_s"] for r in running if not r["stale"])
    workers = len({r["worker"] for r in running if not r["stale"]})
    measured = any(seconds.values())
    eta = max(0.0, left) / max(1, workers) if measured else None
    return {"name": prov["name"], "out": str(out), "cells": len(cells), **counts, "running_cells": running,
            "failed_cells": failed, "workers": workers, "eta_s": eta,
            "seconds_per_network": {k: (sum(seconds[k]) / sum(networks[k]) if networks[k] and sum(networks[k]) else None)
                                    for k in seconds}}
