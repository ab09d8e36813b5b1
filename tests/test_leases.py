"""The lease protocol of `ticketx.leases` on its own (milliseconds): one holder, takeover only
when stale by the observer's clock or under an at-once policy, loss noticed by the old holder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ticketx import store
from ticketx.leases import Leases, dead_process, previous_run, read_lease


def test_create_exclusive_creates_once(tmp_path):
    p = tmp_path / "a" / "x.lease"
    assert store.create_exclusive(p, b"first")
    assert not store.create_exclusive(p, b"second")
    assert p.read_bytes() == b"first"
    assert [f.name for f in p.parent.iterdir()] == ["x.lease"]  # no temporary file left


def _leases(folder: Path, worker: str, timeout: float = 0.3) -> Leases:
    return Leases(folder, timeout, owner={"worker": worker, "host": "h", "pid": 1, "job": None, "token": uuid.uuid4().hex},
                  at_once=(previous_run,))


def test_a_lease_is_held_by_one_worker_and_taken_over_only_when_stale(tmp_path):
    a, b = _leases(tmp_path, "a"), _leases(tmp_path, "b")
    assert a.acquire("cell") and not b.acquire("cell")
    a.start()  # heartbeat every 0.03 s: never stale
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert not b.acquire("cell")
        time.sleep(0.05)
    a.stop()  # no more heartbeat, as if SIGKILLed: b takes over after 0.3 s of b's own clock
    t0 = time.monotonic()
    while not b.acquire("cell"):
        time.sleep(0.02)
        assert time.monotonic() - t0 < 3
    assert 0.25 <= time.monotonic() - t0
    assert json.loads((tmp_path / "cell.lease").read_text())["worker"] == "b"
    a.start()  # a wakes up: its heartbeat finds the lease gone and marks it lost
    t0 = time.monotonic()
    while "cell" not in a.lost:
        time.sleep(0.02)
        assert time.monotonic() - t0 < 3
    a.stop()
    a.release("cell")  # does not remove b's lease
    assert json.loads((tmp_path / "cell.lease").read_text())["worker"] == "b"
    b.release("cell")
    assert not (tmp_path / "cell.lease").exists()


def test_a_requeued_worker_takes_its_own_lease_back_at_once(tmp_path):
    before, after = _leases(tmp_path, "job-17_3", timeout=600), _leases(tmp_path, "job-17_3", timeout=600)
    other = _leases(tmp_path, "job-17_4", timeout=600)
    assert before.acquire("cell")
    assert not other.acquire("cell")
    assert after.acquire("cell")  # same worker id, new incarnation: no need to wait 10 minutes


def test_a_live_lease_is_not_taken_over(tmp_path):
    other = Leases(tmp_path, 0.5)
    with Leases(tmp_path, 0.5) as owner:
        assert owner.acquire("x")
        t = time.monotonic()
        while time.monotonic() - t < 1.5:  # three timeouts: the owner's heartbeat keeps it fresh
            assert not other.acquire("x")
            time.sleep(0.05)
    assert not (tmp_path / "x.lease").exists()  # given back on exit
    assert other.acquire("x")


def test_a_lease_of_a_dead_process_of_this_host_is_taken_at_once_only_under_that_policy(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)  # a pid that has just exited
    lines: list[str] = []
    gone = Leases(tmp_path, 600, owner={"pid": dead})
    assert gone.acquire("chunk")
    patient = Leases(tmp_path, 600)
    assert not patient.acquire("chunk") and not patient.acquire("chunk")  # no policy: waits 10 minutes
    quick = Leases(tmp_path, 600, at_once=(dead_process,), log=lines.append)
    assert quick.acquire("chunk")
    assert read_lease(tmp_path / "chunk.lease")["token"] == quick.owner["token"]
    assert lines == [f"takeover chunk from pid {dead} on {quick.owner['host']}: its process is gone"]
    alive = Leases(tmp_path, 600, at_once=(dead_process,))
    assert not alive.acquire("chunk")  # the holder (this process) is alive


def test_the_old_holder_is_told_once_that_its_lease_was_lost(tmp_path):
    lost: list[str] = []
    a = Leases(tmp_path, 0.3, on_lost=lost.append)
    assert a.acquire("cell")
    (tmp_path / "cell.lease").unlink()
    assert Leases(tmp_path, 0.3).acquire("cell")  # someone else holds it now
    a.start()
    t0 = time.monotonic()
    while not lost:
        time.sleep(0.02)
        assert time.monotonic() - t0 < 3
    time.sleep(0.2)  # several more beats
    a.stop()
    assert lost == ["cell"] and a.lost == {"cell"}
    a.release("cell")
    assert (tmp_path / "cell.lease").exists()  # the new holder's lease is kept
    assert json.loads((tmp_path / "cell.lease").read_text())["token"] != a.owner["token"]
