"""Leases on shared work, through files only: one process does a piece of work at a time.

Study workers lease cells (`ticketx.study.worker`) and decoders lease chunks of a data set
(`ticketx.data.decode`) with this one protocol; no server, no lock manager:

- A lease `<folder>/<name>.lease` is created atomically (`store.create_exclusive`: write a
  temporary file, hard-link it to the final name; the link fails if the name exists). It holds
  its owner (host, pid, token and whatever the caller adds: worker id, job) and the timeout.
- A heartbeat thread touches every lease it holds every `timeout / 10` seconds (at most 30 s).
- A lease whose (mtime, inode, size) has not changed for `timeout` seconds *of the observer's own
  monotonic clock* is stale (its owner died, was killed or lost its node). Measuring by the
  observer's clock makes clock skew between nodes irrelevant.
- Some leases are stale at once (`at_once`): one left by an earlier incarnation of the same
  worker (a Slurm job requeued under the same id) or by a process of this host that no longer
  exists (a job restarted on the same node does not wait a whole timeout).
- A stale lease is taken over by renaming it to a unique name (of several takers exactly one
  rename succeeds), checking that the renamed file is still the one seen stale (else it is put
  back: it was refreshed meanwhile) and creating a new lease.
- An owner whose heartbeat finds its lease gone or someone else's marks it lost and calls
  `on_lost(name)` (a study worker stops training a cell someone else now owns).

Assumes of the file system: atomic rename within a folder, hard links or atomic O_EXCL (local
disks, NFSv3+, Lustre, GPFS, BeeGFS), modification times updated by utime, close-to-open
consistency. It does not assume synchronised clocks or working flock/fcntl locks.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from ticketx import store

Policy = Callable[[dict[str, Any], dict[str, Any]], Optional[str]]  # (lease, owner) -> why stale now, or None


def read_lease(path: Path) -> Optional[dict[str, Any]]:
    """A lease's content, or None if it is gone or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def previous_run(lease: dict[str, Any], owner: dict[str, Any]) -> Optional[str]:
    """Stale at once: held by the same worker id under another token (a requeued job)."""
    if owner.get("worker") is not None and lease.get("worker") == owner["worker"] and lease.get("token") != owner["token"]:
        return "own lease of a previous run of this worker"
    return None


def dead_process(lease: dict[str, Any], owner: dict[str, Any]) -> Optional[str]:
    """Stale at once: held by a process of this host that no longer exists."""
    pid = lease.get("pid")
    if lease.get("host") != owner.get("host") or not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "its process is gone"
    except OSError:  # EPERM: it exists, as another user's process
        return None
    return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class Leases:
    """The leases one process holds in `folder`, their heartbeat, and taking over stale ones.

    `owner`: what each lease records besides host, pid and a fresh token (a worker id, a job).
    `at_once`: the policies under which a lease is stale without waiting a timeout (study
    workers: `previous_run`; decoders, whose leases are per host: `dead_process`).
    Use as a context manager (heartbeat on, every lease given back on exit) or `start`/`stop`.
    """

    def __init__(self, folder: str | Path, timeout: float, *, owner: Optional[dict[str, Any]] = None,
                 at_once: tuple[Policy, ...] = (),
                 log: Optional[Callable[[str], None]] = None,
                 on_lost: Optional[Callable[[str], None]] = None) -> None:
        self.folder = Path(folder)
        self.timeout = float(timeout)
        self.interval = max(0.05, min(30.0, self.timeout / 10))
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, **(owner or {})}
        self.at_once = at_once
        self.log = log or (lambda message: None)
        self.on_lost = on_lost or (lambda name: None)
        self.held: dict[str, Path] = {}
        self.lost: set[str] = set()
        self._seen: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.lease"

    def _content(self, name: str) -> bytes:
        return (json.dumps({**self.owner, "lease": name, "start": _now(), "start_unix": time.time(),
                            "lease_timeout": self.timeout}) + "\n").encode()

    def _stale_now(self, data: dict[str, Any]) -> Optional[str]:
        return next((why for policy in self.at_once if (why := policy(data, self.owner))), None)

    def acquire(self, name: str) -> bool:
        """Take lease `name` if it is free or stale; True if this process now holds it."""
        path = self.path(name)
        if store.create_exclusive(path, self._content(name)):
            return self._hold(name, path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return store.create_exclusive(path, self._content(name)) and self._hold(name, path)
        sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        data = read_lease(path) or {}
        why = self._stale_now(data)
        now = time.monotonic()
        seen = self._seen.get(name)
        if seen is None or seen[0] != sig:
            self._seen[name] = (sig, now)
        elif why is None and now - seen[1] >= self.timeout:
            why = f"no heartbeat for {self.timeout:g}s"
        if why is None:
            return False
        return self._take_over(name, path, sig, data, why)

    def _take_over(self, name: str, path: Path, sig: tuple[int, int, int], data: dict[str, Any], why: str) -> bool:
        tomb = path.with_name(f".{path.name}.{self.owner['token']}.stale")
        try:
            os.rename(path, tomb)  # of several processes taking over, exactly one rename succeeds
        except FileNotFoundError:
            return False
        try:
            st = os.stat(tomb)
            if (st.st_mtime_ns, st.st_ino, st.st_size) != sig:  # refreshed meanwhile: alive, put it back
                with contextlib.suppress(OSError):
                    os.link(tomb, path)
                return False
        finally:
            tomb.unlink(missing_ok=True)
        where = f"pid {data.get('pid', '?')} on {data.get('host', '?')}"
        who = f"{data['worker']} ({where})" if data.get("worker") else where
        self.log(f"takeover {name} from {who}: {why}")
        self._seen.pop(name, None)
        return store.create_exclusive(path, self._content(name)) and self._hold(name, path)

    def _hold(self, name: str, path: Path) -> bool:
        with self._lock:
            self.held[name] = path
            self.lost.discard(name)
        self._seen.pop(name, None)
        return True

    def release(self, name: str) -> None:
        """Give lease `name` back (deleted only if it is still ours)."""
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

    def __enter__(self) -> Leases:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.release_all()

    def _still_ours(self, path: Path) -> bool:
        data = read_lease(path)
        if data is None:  # gone, or caught mid-takeover check: look once more before giving up
            time.sleep(self.interval / 4)
            data = read_lease(path)
        return data is not None and data.get("token") == self.owner["token"]

    def _beat(self) -> None:
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
                self.log(f"lost {name}: another process took it over")
                self.on_lost(name)
