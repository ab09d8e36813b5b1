"""Time and memory of `study validate`, `study status` and one worker's start-up against the grid's size.

    python scripts/grid_scaling.py                  # 1k, 10k, 100k cells
    python scripts/grid_scaling.py --cells 1000,10000 --timeout 120

Each grid is the quickstart's design (LeNet-300-100, digits 0-4 -> 5-9, 4 rounds, an own ticket,
three baselines, four claims) with `transfer.seeds` stretched to give about N transfer cells
(N/4 seeds x 4 rounds, plus 2 search cells); a 10-cell grid runs first as the reference. Every
measurement is its own process (`python -m ticketx ...`), so it includes the interpreter and the
imports: wall and CPU seconds (ru_utime + ru_stime: steadier on a shared machine) and the peak
resident set (ru_maxrss from os.wait4), with its growth over the 10-cell grid. `--repo` measures
another checkout (the code before a change). Nothing trains:

  validate   `ticketx study validate S.yaml`
  worker     a worker process (`ticketx.study.worker.Worker`) from start until its first claim
             (load, expand, study.json, scan the folder); then 200 more claims with a stand-in
             for training, whose time per claim shows whether claiming grows with the grid
  status     `ticketx study status OUT` on the folder that worker left (200 cells done)

Not a test: numbers depend on the machine; the README quotes one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
CODE = [REPO]  # the checkout measured (--repo)

STUDY = """\
name: grid{cells}
model: lenet_300_100
image_size: 8
device: cpu
train:
  length: 15ep
  lr: 0.005
search:
  prune: {{rounds: 4, rate: 0.75, head_rate: 0.3, scope: layerwise, rewind: 0}}
  seeds: [0]
transfer:
  rounds: all
  seeds: {seeds}
  baselines: [random-mask, random-reinit, dense]
  head_dense: true
sources: [{{data: digits, classes: 0-4}}]
targets: ['digits[5-9]']
expect:
  - {{name: beats-random-mask, beats: random-mask, by: 10pt, max_density: 0.015}}
  - {{name: beats-reinit, beats: random-reinit, max_density: 0.015}}
  - {{name: matches-dense, matches: dense, within: 1pt, min_density: 0.2}}
  - {{name: searches-learn, search_accuracy: 95%}}
"""

# A worker with training replaced by a stand-in that returns at once: the time to its first
# claim is its start-up; the time per claim after that is the claim loop's own cost.
WORKER = """\
import json, os, resource, sys, time
t0 = time.perf_counter()
from ticketx.study import load_study
from ticketx.study import worker as W
claims, cpu, mb = [], [], []
def report():
    n = max(1, len(claims) - 1)
    print(json.dumps({"first": claims[0] - t0, "first_cpu": cpu[0], "first_mb": mb[0],
                      "per_claim": (claims[-1] - claims[0]) / n, "per_claim_cpu": (cpu[-1] - cpu[0]) / n}), flush=True)
    os._exit(0)
def stand_in(cell, out, **kw):
    claims.append(time.perf_counter())
    cpu.append(time.process_time())
    if len(claims) == 1:
        mb.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if len(claims) == 1 + int(sys.argv[3]):
        report()
    return {}
W.run_cell = stand_in
study = load_study(sys.argv[1])
W.Worker(study, sys.argv[2], "cpu", lease_timeout=600, worker_id="bench").run()
report()  # fewer cells than claims to time
"""


def measure(cmd: list[str], timeout: float, mem_gb: float) -> dict[str, Any]:
    """Run `cmd`; its wall time, peak resident memory (MB) and stdout, or why it did not finish."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (int(mem_gb * 2**30),) * 2)

    env = {**os.environ, "PYTHONPATH": str(CODE[0]), "TICKETX_MAX_CELLS": "100000000"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=limit, cwd=CODE[0])
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return {"seconds": None, "mb": usage.ru_maxrss / 1024, "error": f"> {timeout:g}s"}
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()  # type: ignore[union-attr]
    code = os.waitstatus_to_exitcode(status)
    res: dict[str, Any] = {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "mb": usage.ru_maxrss / 1024,
                           "stdout": out}
    if code != 0:
        res["error"] = f"exit {code}: {(err.strip().splitlines() or [''])[-1][:120]}"
    return res


def one_grid(cells: int, folder: Path, timeout: float, mem_gb: float, claims: int) -> dict[str, Any]:
    seeds = max(1, cells // 4)
    path = folder / f"grid{cells}.yaml"
    path.write_text(STUDY.format(cells=cells, seeds=f"[{', '.join(map(str, range(seeds)))}]"))
    out = folder / f"out{cells}"
    py = sys.executable
    row: dict[str, Any] = {"cells": None, "file_kb": path.stat().st_size / 1024}
    v = measure([py, "-m", "ticketx", "study", "validate", str(path)], timeout, mem_gb)
    if "error" not in v:
        counts = json.loads(v["stdout"].strip().splitlines()[-1])
        row["cells"] = counts["search"] + counts["transfer"] + counts.get("stability", 0)
    row["validate"] = v
    w = measure([py, "-c", WORKER, str(path), str(out), str(claims)], timeout, mem_gb)
    if "error" not in w:
        got = json.loads(w["stdout"].strip().splitlines()[-1])
        if got["first"] is not None:  # up to its first claim; then the time per claim
            w.update(seconds=got["first"], cpu=got["first_cpu"], mb=got["first_mb"], per_claim_ms=got["per_claim"] * 1000,
                     per_claim_cpu_ms=got["per_claim_cpu"] * 1000)
    row["worker"] = w
    row["study_json_mb"] = (out / "study.json").stat().st_size / 2**20 if (out / "study.json").exists() else None
    row["status"] = measure([py, "-m", "ticketx", "study", "status", str(out)], timeout, mem_gb) \
        if (out / "study.json").exists() else {"seconds": None, "mb": None, "error": "no study.json"}
    return row


def cell_text(m: dict[str, Any], ref: Optional[dict[str, Any]] = None) -> str:
    """'1.23 s (0.98 CPU), 812 MB (+12)': wall and CPU seconds, peak memory and its growth over `ref`."""
    if m.get("seconds") is None:
        return f"{m.get('error', '?')} ({m['mb']:.0f} MB)" if m.get("mb") else m.get("error", "?")
    text = f"{m['seconds']:.2f} s ({m['cpu']:.2f} CPU), {m['mb']:.0f} MB"
    if ref is not None and ref.get("mb"):
        text += f" ({m['mb'] - ref['mb']:+.0f})"
    return text + (f" [{m['error']}]" if m.get("error") else "")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="1000,10000,100000", help="comma-separated grid sizes (transfer cells)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per command before it is stopped")
    p.add_argument("--mem-gb", type=float, default=8.0, help="address-space limit per command (GiB)")
    p.add_argument("--claims", type=int, default=200, help="claims timed after the first one")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout to measure (another worktree: before a change)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = p.parse_args(argv)
    CODE[0] = args.repo.resolve()
    rows = []
    print(f"code: {CODE[0]}; a 10-cell grid first: memory growth is against it (Python, torch and "
          f"ticketx's imports are most of every command's memory)", flush=True)
    print("| cells | study file | validate | worker: to first claim | worker: per claim | study.json | status |")
    print("|---:|---:|---|---|---|---:|---|")
    with tempfile.TemporaryDirectory(prefix="grid-scaling-") as tmp:
        ref: Optional[dict[str, Any]] = None
        for n in [10, *(int(x) for x in args.cells.split(","))]:
            row = one_grid(n, Path(tmp), args.timeout, args.mem_gb, args.claims)
            rows.append(row)
            ref = ref or row
            w = row["worker"]
            per = f"{w['per_claim_ms']:.1f} ms ({w['per_claim_cpu_ms']:.1f} CPU)" if w.get("per_claim_ms") else "-"
            size = f"{row['study_json_mb']:.1f} MB" if row["study_json_mb"] is not None else "-"
            print(f"| {row['cells'] or n:,} | {row['file_kb']:.0f} KB | {cell_text(row['validate'], ref['validate'])} | "
                  f"{cell_text(w, ref['worker'])} | {per} | {size} | {cell_text(row['status'], ref['status'])} |", flush=True)
    if args.json:
        for r in rows:
            for k in ("validate", "worker", "status"):
                r[k].pop("stdout", None)
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
