"""Several workers on one machine: `ticketx study run S.yaml --workers N [--devices 0,1]`.

Each is an ordinary `ticketx study run` process (the protocol of `ticketx.study.worker`, as on a
cluster); on CPU the cores are split between them, GPUs are dealt round-robin.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ticketx.study.runner import is_done, started
from ticketx.study.worker import DEFAULT_LEASE_TIMEOUT


def parse_devices(text: str) -> list[str]:
    """'0,1,2' -> ['cuda:0', 'cuda:1', 'cuda:2']; also 'cpu', 'cuda:1', 'mps'."""
    import re

    from ticketx.errors import UsageError

    out = []
    for part in (p.strip() for p in text.split(",")):
        if re.fullmatch(r"\d+", part):
            out.append(f"cuda:{part}")
        elif re.fullmatch(r"cpu|mps|cuda(:\d+)?", part):
            out.append(part)
        else:
            raise UsageError(f"--devices expects GPU indices like 0,1,2,3 (or cpu, cuda:N), got {text!r}")
    return out


def worker_slots(workers: Optional[int], devices: Optional[list[str]], device: str, cpu_threads: Optional[int]
                ) -> list[dict[str, Any]]:
    """One {device, threads} per worker: devices round-robin; on CPU the cores split between workers."""
    from ticketx.errors import UsageError

    n = workers or (len(devices) if devices else 1)
    if n < 1:
        raise UsageError(f"--workers must be 1 or more, got {n}")
    devs = devices or [device]
    cores = os.cpu_count() or 1
    plan = []
    for i in range(n):
        d = devs[i % len(devs)]
        threads = cpu_threads or max(1, cores // n) if d in ("cpu", "auto") else cpu_threads
        plan.append({"device": d, "threads": threads})
    return plan


def spawn_workers(study_file: Path, out: Path, plan: list[dict[str, Any]], *, data_dir: Any = None,
                  lease_timeout: float = DEFAULT_LEASE_TIMEOUT, overrides: Sequence[str] = (),
                  tracker: Optional[str] = None, log: Any = print) -> list[int]:
    """Run one `ticketx study run` process per plan entry on `<out>`; wait; return their exit codes.

    Each child is an ordinary worker (the same protocol as on a cluster) on the same study: the
    same file, `--set` overrides and `--tracker`; its console output goes to `<out>/logs/worker-<i>.out`.
    Ctrl-C or SIGTERM here stops them all (they keep their checkpoints).
    """
    import subprocess
    import sys

    (out / "logs").mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    try:
        for i, w in enumerate(plan):
            cmd = [sys.executable, "-m", "ticketx", "study", "run", str(study_file), "--out", str(out), "--no-report",
                   "--device", w["device"], "--lease-timeout", f"{lease_timeout:g}"]
            if w.get("threads"):
                cmd += ["--cpu-threads", str(w["threads"])]
            if data_dir is not None:
                cmd += ["--data-dir", str(data_dir)]
            for o in overrides:
                cmd += ["--set", o]
            if tracker:
                cmd += ["--tracker", tracker]
            fh = open(out / "logs" / f"worker-{i}.out", "ab")
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
            fh.close()
            log(f"worker {i}: pid {procs[-1].pid}, device {w['device']}"
                + (f", {w['threads']} CPU threads" if w.get("threads") else "") + f", log {out / 'logs' / f'worker-{i}.out'}")
        last, seen, prov_cells, done = -1, None, [], set()
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            # study.json is read again only when a worker rewrites it, and only the cells that have
            # a folder and were not done yet are looked at (a second of 100k stats otherwise).
            stamp = _stamp(out / "study.json")
            if stamp != seen:
                seen, prov_cells, done = stamp, _cells_of(out), set()
            have = started(out)
            done |= {c["id"] for c in prov_cells if c["id"] in have and c["id"] not in done and is_done(out, c)}
            n = len(done)
            if n != last and prov_cells:
                log(f"{n} of {len(prov_cells)} cells done")
                last = n
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: the worker stops like Ctrl-C, keeping its checkpoints
        for p in procs:
            p.wait()
    return [p.returncode for p in procs]


def _stamp(path: Path) -> Optional[tuple[int, int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


def _cells_of(out: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((out / "study.json").read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return []
