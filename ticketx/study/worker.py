"""A worker: claims cells of a study one at a time, each trained by exactly one worker, in dependency order.

Any number of `ticketx study run` processes, on one machine or on many sharing a file system, may
work on the same `<out>` at once. They coordinate through files only (no server, no scheduler):

    <out>/leases/<cell id>.lease    the cell is being trained: worker, host, pid, job, start, token
    <out>/leases/run-<hash>.lease   a network two cells share (a target's own ticket) is being trained
    <out>/cells/<id>/done.json      the cell is finished (written last, as in a single-process run)
    <out>/cells/<id>/failed.json    the cell's last attempt failed: one-line error, log, worker, time
    <out>/logs/<worker>.log         one line per event of one worker (claim, start, done, failed, ...)

Protocol (`ticketx.leases`: atomic creation, heartbeat, takeover of a stale lease by the
observer's own clock). A worker claims a cell by creating its lease, then checks `done.json` once
more (the cell may have finished between its look and its claim). A worker restarted under the
same id (a Slurm job requeued after a time-out or pre-emption) takes over its own previous leases
at once. A worker that finds its lease gone (taken over after a long stall) stops that cell; the
new owner resumes it from its last checkpoint.

Several workers on one machine: `ticketx.study.local`; on a cluster: `ticketx.study.slurm`;
what a folder's workers are doing: `ticketx.study.status`.

Order: a search cell runs before the transfer cells that use its ticket and before those that
compare against it (own ticket): a transfer cell is claimable only once those are done. A cell
that shares a network with another (the own ticket's runs) also leases that network, so the
network is trained once and the other cell reads its result. A worker with nothing claimable
but unfinished cells waits and polls; it exits when every cell is done or cannot run (failed in
this worker's lifetime, or waiting on such a search). A failed cell is retried by workers started
after its failure (rerun the command to retry). A worker looks at a cell's files only when the
cell comes up to be claimed (`Pending`), so a claim costs the same in a study of 100k cells.

Cohorts of cells (`cohort:` above 1, `ticketx.study.cohorts`): the cells of a group, fixed by the
study file, are claimed together: the first ready one, then every other one of its group that is
ready and free (a cell done, failed or leased elsewhere falls out), each with all of its leases or
none. They train in one call to the trainer (`run_cells`) and each gets its done.json; a killed
group resumes from its networks' checkpoints wherever its cells are claimed next.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ticketx.errors import TicketxError
from ticketx.leases import Leases, previous_run
from ticketx.settings.study import Study
from ticketx.study.axes import slug
from ticketx.study.cells import Cell, StabilityCell, TransferCell
from ticketx.study.runner import cell_dir, done_ids, is_done, run_cell, run_cells, write_provenance

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
        self.leases = Leases(lease_dir(self.out), self.lease_timeout, owner={"worker": self.worker_id, "job": self.job},
                             at_once=(previous_run,), log=self.log, on_lost=self._lost)
        self.log_path = self.out / "logs" / f"{slug(self.worker_id)}.log"
        self.poll = self.poll or max(0.05, min(5.0, self.lease_timeout / 20))
        self.by_id = {c.id: c for c in self.study.cells}
        self.watch: set[str] = set()  # the leases whose loss interrupts the main thread
        from ticketx.runtime import resolve_device
        from ticketx.study.cohorts import groups

        # The cells trained together (`cohort:` above 1): fixed by the study file and the device kind.
        self.groups = groups(self.study, resolve_device(self.device).type)

    def log(self, message: str) -> None:
        """One line in this worker's log (appended by this worker only, so lines never interleave)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as fh:
            fh.write(f"{_now()} {self.worker_id} pid={os.getpid()} {message}\n")

    def _lost(self, name: str) -> None:
        import _thread

        if name in self.watch:
            _thread.interrupt_main()  # stop training a cell someone else now owns

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
        left = Pending(cells, self.deps, done_ids(self.out, self.study.cells))
        before = left.finished
        grouped = len({g for c in cells if len(g := self.groups.get(c.id, ())) > 1})
        self.log(f"worker start: study {self.study.name}, {len(cells)} cells ({self.phase}), {before} done, "
                 f"device {self.device}, lease timeout {self.lease_timeout:g}s"
                 + (f", {grouped} cohorts of cells (cohort {self.study.spec.cohort})" if grouped else ""))
        if before:
            self.reporter.log(f"[dim]{before} of {len(cells)} cells already done: skipped[/]")
        progress = getattr(self.reporter, "progress", None)
        overall = None
        if progress is not None:
            overall = progress.add_task(f"study {self.study.name}", total=len(cells), completed=before, status="cells")
        self.leases.start()
        waiting_since: Optional[float] = None
        swept = -float("inf")
        try:
            while left.live:
                if time.monotonic() - swept >= self.poll:  # searches that others finished (or failed)
                    self._sweep(left)
                    swept = time.monotonic()
                if overall is not None:
                    progress.update(overall, completed=left.finished)
                claimed = self._next(left)
                if claimed is None:
                    if not left.live:
                        break
                    changed = self._sweep(left)
                    swept = time.monotonic()
                    if changed:  # a search finished (or failed) elsewhere: look again at once
                        continue
                    if waiting_since is None:
                        waiting_since = time.monotonic()
                        self.log(f"waiting: {left.live} cells left, none claimable")
                    time.sleep(self.poll)
                    continue
                if waiting_since is not None:
                    self.log(f"waited {time.monotonic() - waiting_since:.1f}s")
                    waiting_since = None
                if overall is not None:
                    progress.update(overall, description=f"study {self.study.name}: {claimed[0].short}"
                                    + (f" (+{len(claimed) - 1} cells)" if len(claimed) > 1 else ""))
                t0 = time.perf_counter()
                failures = len(self.failures)
                finished = self._run_group(claimed)
                failed = {f.cell.id for f in self.failures[failures:]}
                for cell in claimed:
                    if cell.id in finished:
                        left.mark_done(cell.id)
                        self.reporter.log(f"[green]done[/] [{left.finished}/{len(cells)}] {escape(cell.title)} "
                                          f"[dim]({time.perf_counter() - t0:.1f}s, {self.worker_id})[/]")
                    elif cell.id in failed:  # failed in this worker's life: not retried by it
                        left.mark_dead(cell.id)
                    else:  # its lease was taken over (or a cell of its group's was): it goes back in the queue
                        left.put_back(cell.id)
        finally:
            self.leases.stop()
            self.leases.release_all()
            if overall is not None:
                progress.update(overall, completed=left.finished, description=f"study {self.study.name}")
        not_done = [c for c in cells if c.id not in left.done]
        self.log(f"worker exit: trained {len(self.trained)} cells, {len(self.failures)} failed, {len(not_done)} not done")
        return {"worker": self.worker_id, "trained": list(self.trained), "failed": [f.cell.id for f in self.failures],
                "not_done": [c.id for c in not_done]}

    def _dead(self, cell: Cell | dict[str, Any]) -> bool:
        """Whether `cell` failed in this worker's lifetime (a failure from before it started is retried)."""
        info = failed_info(self.out, cell)
        return info is not None and not self._retry(info)

    def _sweep(self, left: "Pending") -> bool:
        """Look at the searches other cells wait on: done ones release their cells, failed ones end them.
        True if one did."""
        changed = False
        for dep in list(left.waiting):
            if is_done(self.out, self.by_id[dep]):
                left.mark_done(dep)
                changed = True
            elif self._dead(self.by_id[dep]):
                left.mark_dead(dep)
                changed = True
        return changed

    def _next(self, left: "Pending") -> Optional[list[Cell]]:
        """The first ready cell, in study order, that this worker could claim, with the rest of its
        group that it could claim too (`_gather`); None: none now.

        Only cells on the way are looked at on disk: done or failed ones leave the queue, ones
        that other workers are running stay in it. A claim costs O(1 + cells running elsewhere).
        """
        passed: list[str] = []
        try:
            while (cid := left.pop()) is not None:
                cell = left.cells[cid]
                if is_done(self.out, cell):
                    left.mark_done(cid)
                elif self._dead(cell):
                    left.mark_dead(cid)
                elif self._claim(cell):
                    return self._gather(cell, left)
                else:
                    passed.append(cid)
            return None
        finally:
            for cid in passed:
                left.put_back(cid)

    def _gather(self, cell: Cell, left: "Pending") -> list[Cell]:
        """`cell` (claimed) and every other cell of its group (`ticketx.study.cohorts`) that is ready and
        that this worker can claim now, in study order. A cell of the group that is done, failed,
        not ready or leased by another worker falls out: the group trains without it (fewer networks
        per cohort: the same results to float tolerance), and it is trained where it is claimed."""
        members = self.groups.get(cell.id, (cell.id,))
        got, held = [cell], set(self.resources(cell))
        for cid in members:
            if cid == cell.id or cid not in left.ready:
                continue
            other = left.cells[cid]
            if is_done(self.out, other):
                left.mark_done(cid)
            elif self._dead(other):
                left.mark_dead(cid)
            elif self._claim(other, held):
                left.take(cid)
                got.append(other)
                held.update(self.resources(other))
        return sorted(got, key=lambda c: left.order[c.id])

    def _claim(self, cell: Cell, held: frozenset[str] | set[str] = frozenset()) -> bool:
        """Lease `cell` and the networks it shares (but those in `held`, this worker's already), all or
        nothing; False if another worker has one."""
        got: list[str] = []
        for name in (n for n in self.resources(cell) if n not in held):
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

    def _run_group(self, cells: list[Cell]) -> set[str]:
        """Train claimed cells together (`run_cells`); record each one's done.json; the ids done. A
        group whose training fails is retried cell by cell (`_run`: the error lands on its cell's
        failed.json; what the group finished is kept). Always gives the group's leases back."""
        from ticketx import store

        if len(cells) == 1:
            return {cells[0].id} if self._run(cells[0]) else set()
        names = list(dict.fromkeys(n for c in cells for n in self.resources(c)))
        self.watch = {lease_name(c) for c in cells}
        t0 = time.perf_counter()
        try:
            for cell in cells:
                store.write_json(cell_dir(self.out, cell) / "config.json",
                                 {"key": cell.key, "kind": cell.kind, "config": cell.config, "info": cell.info})
                self.log(f"start {cell.id}")
                self.trained.append(cell.id)
            self.log(f"cohort {len(cells)} cells {' '.join(c.id for c in cells)}")
            try:
                summaries = run_cells(cells, self.out, device=self.device, data_dir=self.data_dir, reporter=self.reporter,
                                      cohort=self.study.spec.cohort)
            except KeyboardInterrupt:
                lost = [c.id for c in cells if lease_name(c) in self.leases.lost]
                if lost:
                    self.log(f"stopped cohort of {len(cells)} cells: the lease of {' '.join(lost)} was taken over")
                    return set()
                self.log(f"interrupted cohort of {len(cells)} cells")
                raise
            except Exception as err:  # noqa: BLE001 - each cell alone: the error is recorded on its own cell
                self.log(f"cohort of {len(cells)} cells failed ({' '.join(str(err).split()) or type(err).__name__}): "
                         "each cell alone")
                self.watch = set()
                return {c.id for c in cells if self._run(c, retry=True)}
            seconds = (time.perf_counter() - t0) / len(cells)  # a cell's share of the group's time
            for cell, summary in zip(cells, summaries):
                here = cell_dir(self.out, cell)
                store.write_json(here / "done.json", {  # written last: the cell is done only once this exists
                    "key": cell.key, "kind": cell.kind, "summary": summary, "seconds": seconds,
                    "versions": store.versions(), "finished": _now(), "worker": self.worker_id, "job": self.job,
                    "cohort": [c.id for c in cells],
                })
                (here / "failed.json").unlink(missing_ok=True)
                self.log(f"done {cell.id} {seconds:.2f}s")
            return {c.id for c in cells}
        finally:
            self.watch = set()
            for name in names:
                self.leases.release(name)

    def _run(self, cell: Cell, retry: bool = False) -> bool:
        """Train a claimed cell; record done.json or failed.json; always give its leases back. `retry`: the
        cell's group failed and it runs again alone; its start is logged and counted once (as the group's)."""
        from ticketx import store

        here = cell_dir(self.out, cell)
        names = self.resources(cell)
        self.watch = {names[0]}
        t0 = time.perf_counter()
        try:
            store.write_json(here / "config.json", {"key": cell.key, "kind": cell.kind, "config": cell.config, "info": cell.info})
            if retry:
                self.log(f"retry {cell.id} alone")
            else:
                self.log(f"start {cell.id}")
                self.trained.append(cell.id)
            try:
                summary = run_cell(cell, self.out, device=self.device, data_dir=self.data_dir, reporter=self.reporter,
                                   cohort=self.study.spec.cohort)
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
            self.watch = set()
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


class Pending:
    """A worker's cells not done yet: ready ones (every search they need is done) in study order, and
    blocked ones indexed by the search they wait on; plus the ids done and dead (cannot run in this
    worker's life: failed, or waiting on a failed search).

    Nothing here reads the disk: the worker looks at a cell only when it comes up (so a study of
    100k cells costs no 100k stats per claim, as rescanning every cell did: quadratic in cells).
    """

    def __init__(self, cells: list[Cell], deps: Any, done: set[str]) -> None:
        self.cells = {c.id: c for c in cells}
        self.order = {c.id: i for i, c in enumerate(cells)}
        self.done = set(done)
        self.finished = sum(c.id in self.done for c in cells)  # of `cells`
        self.dead: set[str] = set()
        self.ready: set[str] = set()
        self._heap: list[tuple[int, str]] = []  # (study order, id); ids no longer in `ready` are skipped
        self.waiting: dict[str, list[str]] = {}  # search id -> cells waiting on it
        self.missing: dict[str, int] = {}  # blocked cell -> searches it still waits on
        for c in cells:
            if c.id in self.done:
                continue
            need = [d for d in deps(c) if d not in self.done]
            for d in need:
                self.waiting.setdefault(d, []).append(c.id)
            if need:
                self.missing[c.id] = len(need)
            else:
                self.put_back(c.id)

    @property
    def live(self) -> int:
        """Cells this worker may still run (ready or blocked)."""
        return len(self.ready) + len(self.missing)

    def put_back(self, cid: str) -> None:
        import heapq

        if cid not in self.ready and cid not in self.done and cid not in self.dead:
            self.ready.add(cid)
            heapq.heappush(self._heap, (self.order[cid], cid))

    def take(self, cid: str) -> None:
        """Take a ready cell out of the queue (claimed with its group's first cell)."""
        self.ready.discard(cid)

    def pop(self) -> Optional[str]:
        """The first ready cell in study order, taken out of the queue (None: none ready)."""
        import heapq

        while self._heap:
            _, cid = heapq.heappop(self._heap)
            if cid in self.ready:
                self.ready.discard(cid)
                return cid
        return None

    def mark_done(self, cid: str) -> None:
        if cid in self.done:
            return
        self.done.add(cid)
        self.ready.discard(cid)
        self.finished += cid in self.cells
        for w in self.waiting.pop(cid, []):
            if w in self.missing:
                self.missing[w] -= 1
                if not self.missing[w]:
                    del self.missing[w]
                    self.put_back(w)

    def mark_dead(self, cid: str) -> None:
        self.dead.add(cid)
        self.ready.discard(cid)
        self.missing.pop(cid, None)
        for w in self.waiting.pop(cid, []):
            self.mark_dead(w)


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
    if study.spec.tracking is not None and getattr(reporter, "tracker", None) is None:
        # a worker nobody gave a tracker (a Slurm job, the library): the study file's tracking: block
        from ticketx.trackers import open_tracker
        from ticketx.ui import Reporter

        reporter = reporter if reporter is not None else Reporter()
        reporter.tracker = open_tracker(study.spec.tracking.text, root=Path(out), group=study.name)
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




def run_study(study: Study, out: str | Path, *, device: Optional[str] = None, data_dir: Any = None,
              reporter: Any = None, lease_timeout: Optional[float] = None, threads: Optional[int] = None) -> list[Cell]:
    """Run every cell not done yet, searches first; return the cells.

    This process is one worker (`work`): other processes may work on the same `<out>` at once
    (each cell is trained by one of them). A failed cell does not stop the others; the first
    failure is raised at the end.
    """
    work(study, out, device=device, data_dir=data_dir, reporter=reporter, threads=threads,
         lease_timeout=DEFAULT_LEASE_TIMEOUT if lease_timeout is None else lease_timeout)
    return study.cells
