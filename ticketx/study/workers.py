"""Several workers on one study folder: each cell trained by exactly one worker, in dependency order.

Any number of `ticketx study run` processes, on one machine or on many sharing a file system, may
work on the same `<out>` at once. They coordinate through files only (no server, no scheduler):

    <out>/leases/<cell id>.lease    the cell is being trained: worker, host, pid, job, start, token
    <out>/leases/run-<hash>.lease   a network two cells share (a target's own ticket) is being trained
    <out>/cells/<id>/done.json      the cell is finished (written last, as in a single-process run)
    <out>/cells/<id>/failed.json    the cell's last attempt failed: one-line error, log, worker, time
    <out>/logs/<worker>.log         one line per event of one worker (claim, start, done, failed, ...)

Protocol. A worker claims a cell by creating its lease file atomically (`store.create_exclusive`:
write a temporary file, hard-link it to the final name; the link fails if the name exists), then
checks `done.json` once more (the cell may have finished between its look and its claim). A
heartbeat thread touches every lease it holds every `lease_timeout / 10` seconds. A lease whose
modification time has not changed for `lease_timeout` seconds *of the observing worker's own
monotonic clock* is stale (its worker died, was killed or lost its node): it is taken over
atomically by renaming it to a unique name (only one rename of a name can succeed), checking
that the renamed file is still the one seen stale (else it is put back), and creating a new
lease. Measuring staleness by the observer's clock makes clock skew between nodes irrelevant.
A worker restarted under the same id (a Slurm job requeued after a time-out or pre-emption)
takes over its own previous leases at once. A worker that finds its lease gone (taken over after
a long stall) stops that cell; the new owner resumes it from its last checkpoint.

Order: a search cell runs before the transfer cells that use its ticket and before those that
compare against it (own ticket): a transfer cell is claimable only once those are done. A cell
that shares a network with another (the own ticket's runs) also leases that network, so the
network is trained once and the other cell reads its result. A worker with nothing claimable
but unfinished cells waits and polls; it exits when every cell is done or cannot run (failed in
this worker's lifetime, or waiting on such a search). A failed cell is retried by workers started
after its failure (rerun the command to retry).

Assumes of the file system: atomic rename within a folder, hard links or atomic O_EXCL (local
disks, NFSv3+, Lustre, GPFS, BeeGFS), modification times updated by utime, and close-to-open
consistency (NFS: a file written and closed on one client is seen whole by the next open
elsewhere). It does not assume synchronised clocks, working flock/fcntl locks, or a lock
manager that notices dead clients.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ticketx.errors import TicketxError
from ticketx.settings.study import Study
from ticketx.study.axes import slug
from ticketx.study.cells import Cell, StabilityCell, TransferCell
from ticketx.study.runner import (
    cell_dir,
    is_done,
    run_cell,
    write_provenance,
)

# Long enough that a slow epoch checkpoint on a busy NFS server never looks like a dead worker
# (the heartbeat is a separate thread, so training time itself does not count).
DEFAULT_LEASE_TIMEOUT = 600.0  # seconds


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def lease_dir(out: Path) -> Path:
    return Path(out) / "leases"


def lease_name(cell: Cell | dict[str, Any]) -> str:
    return cell.id if isinstance(cell, Cell) else cell["id"]


def shared_lease_name(run: str) -> str:
    from ticketx import store

    return f"run-{store.fingerprint(run)}"


def read_lease(path: Path) -> Optional[dict[str, Any]]:
    """A lease's content, or None if it is gone or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def failed_info(out: Path, cell: Cell | dict[str, Any]) -> Optional[dict[str, Any]]:
    try:
        data = json.loads((cell_dir(out, cell) / "failed.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def default_worker_id(job: Optional[str] = None) -> str:
    """'job-<id>' inside a scheduler job (stable across requeues), else '<host>-<pid>'."""
    job = job or os.environ.get("SLURM_ARRAY_JOB_ID") and f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}" \
        or os.environ.get("SLURM_JOB_ID")
    if job:
        return f"job-{job}"
    return f"{socket.gethostname()}-{os.getpid()}"


class Leases:
    """The leases one worker holds, their heartbeat, and taking over stale ones."""

    def __init__(self, folder: Path, owner: dict[str, Any], timeout: float) -> None:
        self.folder = folder
        self.owner = owner  # worker, host, pid, job, token
        self.timeout = float(timeout)
        self.interval = max(0.05, min(30.0, self.timeout / 10))
        self.held: dict[str, Path] = {}
        self.lost: set[str] = set()
        self.watch: Optional[str] = None  # the lease whose loss interrupts the main thread
        self._seen: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.log: Any = lambda message: None

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.lease"

    def _content(self, name: str) -> bytes:
        return (json.dumps({**self.owner, "lease": name, "start": _now(), "start_unix": time.time(),
                            "lease_timeout": self.timeout}) + "\n").encode()

    def acquire(self, name: str) -> bool:
        """Take lease `name` if it is free or stale; True if this worker now holds it."""
        from ticketx import store

        path = self.path(name)
        if store.create_exclusive(path, self._content(name)):
            return self._hold(name, path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return store.create_exclusive(path, self._content(name)) and self._hold(name, path)
        sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        data = read_lease(path) or {}
        mine = data.get("worker") == self.owner["worker"] and data.get("token") != self.owner["token"]
        now = time.monotonic()
        seen = self._seen.get(name)
        if seen is None or seen[0] != sig:
            self._seen[name] = (sig, now)
            stale = mine
        else:
            stale = mine or now - seen[1] >= self.timeout
        if not stale:
            return False
        return self._take_over(name, path, sig, data, mine)

    def _take_over(self, name: str, path: Path, sig: tuple[int, int, int], data: dict[str, Any], mine: bool) -> bool:
        from ticketx import store

        tomb = path.with_name(f".{path.name}.{self.owner['token']}.stale")
        try:
            os.rename(path, tomb)  # of several workers taking over, exactly one rename succeeds
        except FileNotFoundError:
            return False
        try:
            st = os.stat(tomb)
            if (st.st_mtime_ns, st.st_ino, st.st_size) != sig:
                # Refreshed (or replaced) between our look and the rename: it is alive; put it back.
                try:
                    os.link(tomb, path)
                except OSError:
                    pass
                return False
        finally:
            tomb.unlink(missing_ok=True)
        why = "own lease of a previous run of this worker" if mine else f"no heartbeat for {self.timeout:g}s"
        self.log(f"takeover {name} from {data.get('worker', '?')} (pid {data.get('pid', '?')} on "
                 f"{data.get('host', '?')}): {why}")
        self._seen.pop(name, None)
        return store.create_exclusive(path, self._content(name)) and self._hold(name, path)

    def _hold(self, name: str, path: Path) -> bool:
        with self._lock:
            self.held[name] = path
            self.lost.discard(name)
        self._seen.pop(name, None)
        return True

    def release(self, name: str) -> None:
        """Give lease `name` back (only if it is still ours)."""
        with self._lock:
            path = self.held.pop(name, None)
        if path is None:
            return
        data = read_lease(path)
        if data is not None and data.get("token") == self.owner["token"]:
            path.unlink(missing_ok=True)

    def release_all(self) -> None:
        for name in list(self.held):
            self.release(name)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="ticketx-lease-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _still_ours(self, path: Path) -> bool:
        data = read_lease(path)
        if data is None:  # gone, or caught mid-takeover check: look once more before giving up
            time.sleep(self.interval / 4)
            data = read_lease(path)
        return data is not None and data.get("token") == self.owner["token"]

    def _beat(self) -> None:
        import _thread

        while not self._stop.wait(self.interval):
            with self._lock:
                items = list(self.held.items())
            for name, path in items:
                try:
                    if self._still_ours(path):
                        os.utime(path)
                        continue
                except OSError:
                    continue  # a transient file-system error: the next beat retries
                with self._lock:
                    if name not in self.held or name in self.lost:
                        continue
                    self.lost.add(name)
                self.log(f"lost {name}: another worker took it over")
                if name == self.watch:
                    _thread.interrupt_main()  # stop training a cell someone else now owns


@dataclass
class Failure:
    cell: Cell
    error: BaseException
    log: Path


@dataclass
class Worker:
    """One worker: claims cells of `study` in `<out>` one at a time until none is left."""

    study: Study
    out: Path
    device: str
    data_dir: Any = None
    reporter: Any = None
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    worker_id: Optional[str] = None
    job: Optional[str] = None
    phase: str = "all"  # 'search': only search cells (the first phase of a Slurm submission)
    poll: Optional[float] = None
    trained: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def __post_init__(self) -> None:
        from ticketx.ui import Reporter

        self.out = Path(self.out)
        self.reporter = self.reporter or Reporter()
        self.worker_id = self.worker_id or default_worker_id(self.job)
        self.started = time.time()
        self.token = uuid.uuid4().hex
        self.leases = Leases(lease_dir(self.out), {
            "worker": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "job": self.job,
            "token": self.token}, self.lease_timeout)
        self.leases.log = self.log
        self.log_path = self.out / "logs" / f"{slug(self.worker_id)}.log"
        self.poll = self.poll or max(0.05, min(5.0, self.lease_timeout / 20))
        self.by_id = {c.id: c for c in self.study.cells}

    def log(self, message: str) -> None:
        """One line in this worker's log (appended by this worker only, so lines never interleave)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as fh:
            fh.write(f"{_now()} {self.worker_id} pid={os.getpid()} {message}\n")

    def deps(self, cell: Cell) -> list[str]:
        """The search cells whose tickets `cell` needs (its source and its own ticket)."""
        if isinstance(cell, TransferCell):
            return [d for d in (cell.source, cell.own_ticket) if d]
        if isinstance(cell, StabilityCell):  # its source ticket only
            return [cell.source]
        return []

    def resources(self, cell: Cell) -> list[str]:
        """Leases to hold while training `cell`: the cell's, then any network it shares (sorted)."""
        return [lease_name(cell), *sorted(shared_lease_name(r) for r in getattr(cell, "shared", []))]

    def _retry(self, info: dict[str, Any]) -> bool:
        """A failure recorded before this worker started is retried; one during its life is not."""
        return float(info.get("time_unix", 0)) < self.started

    def run(self) -> dict[str, Any]:
        """Claim and train cells until none is left; return what this worker did."""
        from rich.markup import escape

        cells = [c for c in self.study.cells if self.phase == "all" or c.kind == "search"]
        write_provenance(self.study, self.out)
        done = {c.id for c in self.study.cells if is_done(self.out, c)}
        before = sum(c.id in done for c in cells)
        self.log(f"worker start: study {self.study.name}, {len(cells)} cells ({self.phase}), {before} done, "
                 f"device {self.device}, lease timeout {self.lease_timeout:g}s")
        if before:
            self.reporter.log(f"[dim]{before} of {len(cells)} cells already done: skipped[/]")
        progress = getattr(self.reporter, "progress", None)
        overall = None
        if progress is not None:
            overall = progress.add_task(f"study {self.study.name}", total=len(cells), completed=before, status="cells")
        self.leases.start()
        waiting_since: Optional[float] = None
        try:
            while True:
                for c in cells:
                    if c.id not in done and is_done(self.out, c):
                        done.add(c.id)
                if overall is not None:
                    progress.update(overall, completed=sum(c.id in done for c in cells))
                todo = [c for c in cells if c.id not in done]
                if not todo:
                    break
                dead = {c.id for c in self.study.cells if c.id not in done and (info := failed_info(self.out, c))
                        and not self._retry(info)}
                live = [c for c in todo if c.id not in dead and not any(d in dead for d in self.deps(c))]
                if not live:
                    break
                ready = [c for c in live if all(d in done for d in self.deps(c))]
                claimed = next((c for c in ready if self._claim(c)), None)
                if claimed is None:
                    if waiting_since is None:
                        waiting_since = time.monotonic()
                        self.log(f"waiting: {len(live)} cells left, none claimable")
                    time.sleep(self.poll)
                    continue
                if waiting_since is not None:
                    self.log(f"waited {time.monotonic() - waiting_since:.1f}s")
                    waiting_since = None
                if overall is not None:
                    progress.update(overall, description=f"study {self.study.name}: {claimed.short}")
                t0 = time.perf_counter()
                ok = self._run(claimed)
                if ok:
                    done.add(claimed.id)
                    n = sum(c.id in done for c in cells)
                    self.reporter.log(f"[green]done[/] [{n}/{len(cells)}] {escape(claimed.title)} "
                                      f"[dim]({time.perf_counter() - t0:.1f}s, {self.worker_id})[/]")
        finally:
            self.leases.stop()
            self.leases.release_all()
            if overall is not None:
                progress.update(overall, description=f"study {self.study.name}")
        left = [c for c in cells if c.id not in done]
        self.log(f"worker exit: trained {len(self.trained)} cells, {len(self.failures)} failed, {len(left)} not done")
        return {"worker": self.worker_id, "trained": list(self.trained), "failed": [f.cell.id for f in self.failures],
                "not_done": [c.id for c in left]}

    def _claim(self, cell: Cell) -> bool:
        """Lease `cell` and the networks it shares, all or nothing; False if another worker has one."""
        got: list[str] = []
        for name in self.resources(cell):
            if not self.leases.acquire(name):
                for g in got:
                    self.leases.release(g)
                return False
            got.append(name)
        if is_done(self.out, cell):  # finished by another worker between our look and our claim
            for g in got:
                self.leases.release(g)
            return False
        return True

    def _run(self, cell: Cell) -> bool:
        """Train a claimed cell; record done.json or failed.json; always give its leases back."""
        from ticketx import store

        here = cell_dir(self.out, cell)
        names = self.resources(cell)
        self.leases.watch = names[0]
        t0 = time.perf_counter()
        try:
            store.write_json(here / "config.json", {"key": cell.key, "kind": cell.kind, "config": cell.config, "info": cell.info})
            self.log(f"start {cell.id}")
            self.trained.append(cell.id)
            try:
                summary = run_cell(cell, self.out, device=self.device, data_dir=self.data_dir, reporter=self.reporter)
            except KeyboardInterrupt:
                if names[0] in self.leases.lost:
                    self.log(f"stopped {cell.id}: its lease was taken over")
                    return False
                self.log(f"interrupted {cell.id}")
                raise
            except Exception as err:  # noqa: BLE001 - recorded in failed.json; the worker goes on
                self._failed(cell, err)
                return False
            store.write_json(here / "done.json", {  # written last: the cell is done only once this exists
                "key": cell.key, "kind": cell.kind, "summary": summary, "seconds": time.perf_counter() - t0,
                "versions": store.versions(), "finished": _now(), "worker": self.worker_id, "job": self.job,
            })
            (here / "failed.json").unlink(missing_ok=True)
            self.log(f"done {cell.id} {time.perf_counter() - t0:.2f}s")
            return True
        finally:
            self.leases.watch = None
            for name in names:
                self.leases.release(name)

    def _failed(self, cell: Cell, err: Exception) -> None:
        from rich.markup import escape

        from ticketx import store

        line = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, TicketxError):
            line = f"{type(err).__name__}: {line}"
        self.log(f"failed {cell.id}: {line}")
        with open(self.log_path, "a") as fh:
            fh.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
        store.write_json(cell_dir(self.out, cell) / "failed.json", {
            "key": cell.key, "error": line, "log": str(self.log_path), "worker": self.worker_id, "job": self.job,
            "host": socket.gethostname(), "pid": os.getpid(), "time": _now(), "time_unix": time.time(),
        })
        self.failures.append(Failure(cell, err, self.log_path))
        self.reporter.log(f"[red]failed[/] {escape(cell.title)}: {escape(line)} [dim](log: {self.log_path})[/]")


def work(study: Study, out: str | Path, *, device: Optional[str] = None, data_dir: Any = None, reporter: Any = None,
         lease_timeout: float = DEFAULT_LEASE_TIMEOUT, worker_id: Optional[str] = None, job: Optional[str] = None,
         phase: str = "all", threads: Optional[int] = None, poll: Optional[float] = None) -> dict[str, Any]:
    """Be one worker on `study` in `<out>` until no cell is left to do; raise if a cell failed.

    `threads`: PyTorch CPU threads for this worker (default: the study's `cpu_threads`).
    """
    from ticketx.threads import cpu_threads
    from ticketx.runtime import resolve_device

    device = device or study.spec.device
    dev = resolve_device(device)  # 'cuda' on a machine without one fails now, not after the first cells
    worker = Worker(study, Path(out), device, data_dir or study.spec.data_dir, reporter, lease_timeout, worker_id, job,
                    phase, poll)
    with cpu_threads((threads or study.spec.cpu_threads) if dev.type == "cpu" else None):
        result = worker.run()
    if worker.failures:
        first = worker.failures[0]
        n = len(worker.failures)
        message = f"{first.cell.title}: {' '.join(str(first.error).split()) or type(first.error).__name__}"
        if n > 1:
            message = f"{n} cells failed; first: {message}"
        hint = f"log: {first.log}; finished cells are kept: rerun the same command to retry the failed ones"
        err_type = type(first.error) if isinstance(first.error, TicketxError) else TicketxError
        raise err_type(message, hint) from first.error
    return result


# ---- several workers on one machine: `ticketx study run S.yaml --workers N [--devices 0,1]` ----

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


def worker_plan(workers: Optional[int], devices: Optional[list[str]], device: str, cpu_threads: Optional[int]
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
                  lease_timeout: float = DEFAULT_LEASE_TIMEOUT, log: Any = print) -> list[int]:
    """Run one `ticketx study run` process per plan entry on `<out>`; wait; return their exit codes.

    Each child is an ordinary worker (the same protocol as on a cluster); its console output goes to
    `<out>/logs/worker-<i>.out`. Ctrl-C or SIGTERM here stops them all (they keep their checkpoints).
    """
    import subprocess
    import sys

    from ticketx.study.runner import is_done as done_

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
            fh = open(out / "logs" / f"worker-{i}.out", "ab")
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
            fh.close()
            log(f"worker {i}: pid {procs[-1].pid}, device {w['device']}"
                + (f", {w['threads']} CPU threads" if w.get("threads") else "") + f", log {out / 'logs' / f'worker-{i}.out'}")
        last = -1
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            prov_cells = _cells_of(out)
            n = sum(done_(out, c) for c in prov_cells)
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


def _cells_of(out: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((out / "study.json").read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return []


# ---- what is going on in a study folder: `ticketx study status` ----

def status(out: str | Path, prov: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Cells done / running (by whom, since when) / failed (error, log) / pending, and an ETA."""
    from ticketx.study.results import load_provenance

    out = Path(out)
    prov = prov or load_provenance(out)
    now = time.time()
    cells = prov["cells"]
    state: dict[str, str] = {}
    running, failed = [], []
    seconds: dict[str, list[float]] = {"search": [], "transfer": [], "stability": []}
    networks: dict[str, list[int]] = {"search": [], "transfer": [], "stability": []}
    for c in cells:
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
        lease = read_lease(path)
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


def pending_searches(out: Path, cells: Iterable[Cell]) -> int:
    return sum(1 for c in cells if c.kind == "search" and not is_done(out, c))


# ---- a cluster: `ticketx study submit S.yaml` (submitit: Slurm job arrays, or local processes) ----

DEFAULT_TIME_MIN = 240  # per job; a job that runs out is requeued and its cell resumes, so short is fine
MAX_DEFAULT_WORKERS = 64


class SubmititWorker:
    """What each submitted job runs: one worker (`work`) on the study; requeued when Slurm stops it.

    submitit calls `checkpoint` on a time-out or pre-emption (SIGUSR2) and requeues the job with
    what it returns: the same worker, which takes its old leases back at once (its id is the job
    id, stable across requeues), skips finished cells and resumes the running one from its last
    epoch checkpoint. The study file is read when the job starts (it must be on the shared file system).
    """

    def __init__(self, study_file: str, out: str, *, phase: str = "all", lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
                 device: Optional[str] = None, data_dir: Optional[str] = None, threads: Optional[int] = None) -> None:
        self.study_file, self.out, self.phase = study_file, out, phase
        self.lease_timeout, self.device, self.data_dir, self.threads = lease_timeout, device, data_dir, threads

    def __call__(self) -> dict[str, Any]:
        import submitit

        from ticketx.study.load import load_study

        job = str(submitit.JobEnvironment().job_id)
        study = load_study(self.study_file)
        return work(study, self.out, device=self.device, data_dir=self.data_dir, lease_timeout=self.lease_timeout,
                    worker_id=f"job-{job}", job=job, phase=self.phase, threads=self.threads)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass
class Launch:
    """Launcher settings after merging the command line over the study's `launcher:` block."""

    cluster: str
    workers: int
    array_parallelism: Optional[int]
    partition: Optional[str]
    account: Optional[str]
    gpus_per_task: int
    cpus_per_task: Optional[int]
    mem_gb: Optional[float]
    time_min: int
    extra: dict[str, Any]
    setup: list[str]
    phases: bool
    lease_timeout: float


def launch_settings(study: Study, pending: int, **cli: Any) -> Launch:
    """The command line's values over the study's `launcher:` block over the defaults."""
    import shutil

    from ticketx.errors import UsageError

    block = study.spec.launcher.model_dump()
    merged = {k: (cli[k] if cli.get(k) is not None else block.get(k)) for k in set(block) | set(cli)}
    cluster = merged.get("cluster") or ("slurm" if shutil.which("sbatch") else None)
    if cluster is None:
        raise UsageError("no Slurm on this machine (sbatch not found)",
                         "run the workers here with --local (or launcher: {cluster: local}), or `ticketx study run --workers N`")
    extra = dict(block.get("extra") or {})
    extra.update(cli.get("extra") or {})
    return Launch(
        cluster=cluster, workers=merged.get("workers") or max(1, min(MAX_DEFAULT_WORKERS, pending)),
        array_parallelism=merged.get("array_parallelism"), partition=merged.get("partition"),
        account=merged.get("account"),
        gpus_per_task=merged["gpus_per_task"] if merged.get("gpus_per_task") is not None else (1 if cluster == "slurm" else 0),
        cpus_per_task=merged.get("cpus_per_task"), mem_gb=merged.get("mem_gb"),
        time_min=merged.get("time") or DEFAULT_TIME_MIN, extra=extra, setup=list(merged.get("setup") or []),
        phases=bool(merged["phases"]) if merged.get("phases") is not None else True,
        lease_timeout=merged.get("lease_timeout") or DEFAULT_LEASE_TIMEOUT,
    )


def parse_extra(items: Optional[list[str]]) -> dict[str, Any]:
    """['qos=high', '--constraint=a100', 'exclusive'] -> {'qos': 'high', 'constraint': 'a100', 'exclusive': True}."""
    from ticketx.errors import UsageError

    out: dict[str, Any] = {}
    for item in items or []:
        for part in item.split():
            key, sep, value = part.lstrip("-").partition("=")
            if not key or not key.replace("-", "_").replace("_", "").isalnum():
                raise UsageError(f"--slurm-arg expects sbatch flags like qos=high or --constraint=a100, got {item!r}")
            out[key.replace("-", "_")] = value if sep else True
    return out


def submit(study: Study, out: str | Path, launch: Launch, *, device: Optional[str] = None, data_dir: Any = None
           ) -> dict[str, Any]:
    """Submit the worker array(s) for `study` on `<out>` and return at once: jobs, folders, how to watch.

    With `phases` (the default), search cells get their own array first and the transfer array
    starts after it (Slurm dependency afterany), so transfer workers do not hold GPUs while they
    wait for tickets. The file protocol keeps the order on its own: without a dependency (the
    local executor) the transfer workers simply wait.
    """
    from ticketx.errors import UsageError

    try:
        import submitit
    except ImportError:
        raise UsageError("`ticketx study submit` needs submitit", 'install it: pip install "ticketx[slurm]"') from None
    out = Path(out).resolve()
    write_provenance(study, out)
    pending = [c for c in study.cells if not is_done(out, c)]
    result: dict[str, Any] = {"cluster": launch.cluster, "out": str(out), "folder": str(out / "slurm"), "arrays": [],
                              "pending": len(pending)}
    if not pending:
        return result
    executor = submitit.AutoExecutor(folder=out / "slurm", cluster=launch.cluster)
    params: dict[str, Any] = {
        "name": f"ticketx-{study.name}", "timeout_min": launch.time_min, "nodes": 1, "tasks_per_node": 1,
        "gpus_per_node": launch.gpus_per_task,
    }
    if launch.cpus_per_task:
        params["cpus_per_task"] = launch.cpus_per_task
    if launch.mem_gb:
        params["mem_gb"] = launch.mem_gb
    slurm: dict[str, Any] = {}
    if launch.partition:
        slurm["slurm_partition"] = launch.partition
    if launch.account:
        slurm["slurm_account"] = launch.account
    if launch.array_parallelism:
        slurm["slurm_array_parallelism"] = launch.array_parallelism
    if launch.setup:
        slurm["slurm_setup"] = launch.setup
    if launch.cluster == "slurm":
        params.update(slurm)
    executor.update_parameters(**params)
    threads = launch.cpus_per_task
    if launch.cluster == "local":
        threads = study.spec.cpu_threads or max(1, (os.cpu_count() or 1) // launch.workers)
    common = dict(lease_timeout=launch.lease_timeout, device=device, data_dir=str(data_dir) if data_dir else None,
                  threads=threads)
    study_file = str(Path(study.file).resolve())
    searches = sum(1 for c in pending if c.kind == "search")
    phases: list[tuple[str, int]] = []
    if launch.phases and 0 < searches < len(pending):
        phases.append(("search", min(launch.workers, searches)))
    phases.append(("all", launch.workers))
    previous: Optional[str] = None
    for phase, n in phases:
        extra = dict(launch.extra)
        if previous is not None and launch.cluster == "slurm":
            extra["dependency"] = f"afterany:{previous}"
        if launch.cluster == "slurm" and extra:
            executor.update_parameters(slurm_additional_parameters=extra)
        with executor.batch():
            jobs = [executor.submit(SubmititWorker(study_file, str(out), phase=phase, **common)) for _ in range(n)]
        ids = [str(j.job_id) for j in jobs]
        array = ids[0].split("_")[0]
        result["arrays"].append({"phase": "search" if phase == "search" else "transfer" if previous else "all",
                                 "array": array, "jobs": ids, "job_objects": jobs})
        previous = array
    return result
