"""Crash safety: kill/interrupt and resume gives the very same ticket; failures never damage results.

Every search here is lenet_300_100 on 8x8 digits, on one CPU thread (small nets on shared cores
train far faster on one), so the whole file takes seconds. Runs are compared bit for bit: masks
of every round, rewind weights, per-round test accuracies and the logged histories.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_find_spec
from ticketx import interrupt, store
from ticketx import ticket as ticketfile
from ticketx.errors import TicketxError

# 3 rounds x (2 or 3 epochs of 89 steps); rewind to 1 epoch, so the rewind snapshot must survive
# a checkpoint; evaluation every 20 steps, so an interrupt lands between evaluations.
ARGS = ["find", "--data", "digits", "--model", "lenet_300_100", "--image-size", "8", "--rounds", "2",
        "--epochs", "3", "--batch-size", "16", "--eval-every", "20it", "--rewind", "1ep",
        "--deterministic", "--device", "cpu", "--seed", "3"]
# The kill test needs a search long enough that the resumed run is still training when Ctrl-C
# comes (a round of the short one takes ~0.3 s on one thread).
LONG_ARGS = [*ARGS[:ARGS.index("--epochs") + 1], "12", *ARGS[ARGS.index("--epochs") + 2:]]
KILL_SEED = int(os.environ.get("TICKETX_KILL_SEED", "20240607"))  # change to kill at other moments


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_main(argv: list) -> int:
    """ticketx ARGV in-process through cli.main; the exit code."""
    from ticketx import cli

    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setattr(sys, "argv", ["ticketx", *map(str, argv)])
        try:
            cli.main()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def uninterrupted(folder: Path, args: list) -> tuple[ticketfile.Ticket, float]:
    """An uninterrupted search: (ticket, seconds of training)."""
    out = folder / "ref.pt"
    assert run_main([*args, "--out", out]) == 0
    t = ticketfile.load(out)
    return t, sum(r["seconds"] for r in t.rounds)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[ticketfile.Ticket, float]:
    return uninterrupted(tmp_path_factory.mktemp("ref"), ARGS)


def assert_same_ticket(a: ticketfile.Ticket, b: ticketfile.Ticket) -> None:
    assert a.num_rounds == b.num_rounds and a.names == b.names
    for r in range(a.num_rounds + 1):
        ma, mb = a.mask(r), b.mask(r)
        assert all(torch.equal(ma[n], mb[n]) for n in a.names), f"round {r}: masks differ"
    assert a.rewind.keys() == b.rewind.keys()
    assert all(torch.equal(a.rewind[k], b.rewind[k]) for k in a.rewind), "rewind weights differ"
    assert [r["test_acc"] for r in a.rounds] == [r["test_acc"] for r in b.rounds]
    assert [r["density"] for r in a.rounds] == [r["density"] for r in b.rounds]
    # every logged evaluation (step, loss, accuracy) too; json compares NaN losses as equal
    assert json.dumps([r["history"] for r in a.rounds]) == json.dumps([r["history"] for r in b.rounds])
    assert a.meta["fingerprint"] == b.meta["fingerprint"]


def leftovers(folder: Path) -> list[str]:
    """Temporary files and work folders: what a clean finish must not leave behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".tmp", ".work")))


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> tuple[ticketfile.Ticket, float]:
    return uninterrupted(tmp_path_factory.mktemp("ref"), LONG_ARGS)


def _spawn(out: Path, log: Path) -> subprocess.Popen:
    """`python -m ticketx find` of the long search, importing this tree (not an installed copy)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("TICKETX_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "ticketx", *LONG_ARGS, "--out", str(out)], cwd=out.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait_for(path: Path, proc: subprocess.Popen, other_than: tuple[int, int] | None = None, timeout: float = 120) -> None:
    """Until `path` exists and is not the file `other_than` (the search has loaded its data).

    Atomic writes replace the file, so a rewrite is a new (inode, mtime): unlike comparing the
    mtime with the clock, this cannot be fooled by the file system's coarse timestamps.
    """
    end = time.monotonic() + timeout
    while _identity(path) in (None, other_than):
        assert proc.poll() is None, f"the search ended (code {proc.returncode}) before it started training"
        assert time.monotonic() < end, "the search did not start in time"
        time.sleep(0.005)


# TICKETX_KILL_RUNS=50 repeats the kill test with 50 kill moments (the flakiness check).
KILL_RUNS = range(int(os.environ.get("TICKETX_KILL_RUNS", "1")))


@pytest.mark.slow
@pytest.mark.parametrize("repeat", KILL_RUNS)
def test_sigkill_then_sigint_then_resume_gives_the_same_ticket(long_reference, tmp_path, repeat):
    """SIGKILL at a random moment, then Ctrl-C in the resumed run, then finish: same ticket."""
    ref, seconds = long_reference
    rng = random.Random(KILL_SEED + repeat)
    out = tmp_path / "t.pt"
    spec_file = tmp_path / "t.pt.work" / "spec.json"

    # 1. SIGKILL at a random moment of the training: in round 0 or 1, or at the latest as round 2
    #    starts (however fast this run goes, so that the resumed run still has a round to train)
    proc = _spawn(out, tmp_path / "a.log")
    _wait_for(spec_file, proc)
    deadline = time.monotonic() + rng.uniform(0.02, 0.6) * seconds
    last_round = tmp_path / "t.pt.work" / "round_02"
    while time.monotonic() < deadline and not last_round.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.kill()
    assert proc.wait(60) == -signal.SIGKILL, "the search finished before it could be killed"
    assert not out.exists()
    assert not (last_round / "result.pt").exists()

    # 2. resume, and press Ctrl-C as soon as it trains again: it stops within seconds, says how
    #    to resume, exits 130 and leaves only whole files
    before = _identity(spec_file)
    proc = _spawn(out, tmp_path / "b.log")
    _wait_for(spec_file, proc, other_than=before)
    time.sleep(rng.uniform(0.0, 0.05))  # the rest of the search takes >= 40% of its training time
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    stopped_after = time.monotonic() - sent
    err = (tmp_path / "b.log").read_text()
    assert code == 130, f"exit {code}; stderr:\n{err}"
    assert stopped_after < 10, f"Ctrl-C took {stopped_after:.1f} s"
    assert "Traceback" not in err
    assert "interrupted: " in err and "rerun the same command to resume" in err, err
    assert not out.exists()
    assert [p for p in tmp_path.rglob("*.tmp")] == [], "an interrupted write left a temporary file"

    # 3. finish in-process: the same ticket as the run that was never interrupted
    (tmp_path / ".t.pt.1234.tmp").write_bytes(b"half a ticket")  # as if killed while writing it
    assert run_main([*LONG_ARGS, "--out", out]) == 0
    assert_same_ticket(ref, ticketfile.load(out))
    assert leftovers(tmp_path) == []


def test_interrupt_and_sigterm_mid_round_resume_exactly(reference, cli, monkeypatch, tmp_path):
    """Ctrl-C between two evaluations of round 1, then SIGTERM in round 2: both resume exactly."""
    import ticketx.train

    ref, _ = reference
    out = tmp_path / "t.pt"
    real = ticketx.train.evaluate
    calls = {"n": 0, "at": 0, "how": None}

    def evaluate(*a, **k):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            if calls["how"] == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # cluster pre-emption
                time.sleep(1)  # the handler runs before this returns
            raise KeyboardInterrupt  # Ctrl-C
        return real(*a, **k)

    monkeypatch.setattr(ticketx.train, "evaluate", evaluate)
    # Round 0 evaluates 14 times (steps 20..260, 267); round 1 trains steps 89..267 with an
    # epoch checkpoint at 178, so evaluation 20 (step 200) is mid-epoch after a checkpoint.
    calls.update(at=20, how="keyboard")
    with one_thread():
        code, stdout, err = cli(*ARGS, "--out", out)
    assert code == 130, err
    lines = [ln for ln in err.splitlines() if ln.startswith(("interrupted", "error", "Traceback"))]
    assert lines == ["interrupted: finished stages and the last epoch checkpoint are saved; rerun the same command to resume."]
    work = tmp_path / "t.pt.work"
    assert (work / "round_00" / "result.pt").exists() and (work / "round_01" / "checkpoint.pt").exists()
    assert not (work / "round_01" / "result.pt").exists()
    assert torch.load(work / "round_01" / "checkpoint.pt", weights_only=True)["step"] == 178

    # resume: SIGTERM in round 2 (after its epoch-2 checkpoint); round 1 resumes from step 178
    calls.update(n=0, at=4 + 8, how="sigterm")
    with one_thread():
        code, stdout, err = cli(*ARGS, "--out", out)
    assert code == 143, err
    assert "round 1/2: resumed from checkpoint at step 178/267" in err
    assert "terminated (SIGTERM): " in err and "Traceback" not in err
    assert (work / "round_01" / "result.pt").exists() and (work / "round_02" / "checkpoint.pt").exists()
    assert not interrupt.installed()  # handlers restored

    calls.update(n=0, at=-1)
    with one_thread():
        code, stdout, err = cli(*ARGS, "--out", out)
    assert code == 0, err
    assert "round 2/2: resumed from checkpoint" in err
    assert stdout.strip() == str(out)
    assert_same_ticket(ref, ticketfile.load(out))
    assert leftovers(tmp_path) == []


def test_deterministic_runs_are_bit_identical(tmp_path):
    """Two runs with the same seeds: the same masks, rewind weights and accuracies, bit for bit."""
    from ticketx.search import find

    spec = tiny_find_spec(deterministic=True, prune=dict(rounds=2, rewind="2it"), train=dict(length="2ep"))
    with one_thread():
        a = find(spec, tmp_path / "a.pt", device="cpu")
        b = find(spec, tmp_path / "b.pt", device="cpu")
    assert_same_ticket(ticketfile.load(tmp_path / "a.pt"), ticketfile.load(tmp_path / "b.pt"))
    assert a.meta["deterministic"] and a.meta["rewind_step"] == 2
    other = find(tiny_find_spec(deterministic=True, seed=1, prune=dict(rounds=2, rewind="2it"), train=dict(length="2ep")),
                 tmp_path / "c.pt", device="cpu")
    assert not torch.equal(other.mask(2)[other.names[0]], a.mask(2)[a.names[0]])  # the test can fail


TINY = ["find", "-d", "digits[0-4]", "-m", "lenet_300_100", "--image-size", "8", "--device", "cpu",
        "--epochs", "2", "--rounds", "1", "--rewind", "0"]


@pytest.fixture
def old_ticket(tmp_path, cli) -> tuple[Path, bytes]:
    """A finished ticket that later, failing runs must not touch."""
    out = tmp_path / "t.pt"
    with one_thread():
        code, _, err = cli(*TINY, "--out", out)
    assert code == 0, err
    return out, out.read_bytes()


def test_failed_forced_run_keeps_the_old_ticket(old_ticket, cli, monkeypatch, tmp_path):
    import ticketx.train
    from conftest import each_run, real_train_one

    out, before = old_ticket
    real = real_train_one()

    def train(run, recipe, reporter):
        if run.label.startswith("round 1"):
            raise TicketxError("round 1/1: training diverged (loss nan) at step 25", "lower --lr or add --warmup")
        return real(run, recipe, reporter)

    monkeypatch.setattr(ticketx.train, "train", each_run(train))
    with one_thread():
        code, stdout, err = cli(*TINY, "--seed", "1", "--force", "--out", out)
    assert code == 1 and "training diverged" in err and "Traceback" not in err
    assert out.read_bytes() == before, "a failed run changed a finished ticket"
    assert list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob(".*.tmp")) == []


def test_full_disk_gives_one_error_and_damages_nothing(old_ticket, cli, monkeypatch, tmp_path):
    out, before = old_ticket
    import builtins

    # 1. the disk fills while an epoch checkpoint is written: a real ENOSPC from /dev/full
    def open_full(path, mode="r", *a, **k):
        if "checkpoint" in str(path) and "w" in mode:
            return builtins.open("/dev/full", mode, *a, **k)
        return builtins.open(path, mode, *a, **k)

    if not os.path.exists("/dev/full"):  # pragma: no cover - not Linux
        pytest.skip("needs /dev/full")
    monkeypatch.setattr(store, "open", open_full, raising=False)
    new = tmp_path / "new.pt"
    with one_thread():
        code, _, err = cli(*TINY, "--out", new)
    lines = [ln for ln in err.splitlines() if ln.startswith(("error", "hint", "internal", "Traceback"))]
    assert code == 1, err
    assert lines[0].startswith("error: cannot write ") and lines[0].endswith("checkpoint.pt: no space left on device"), err
    assert lines[1:] == ["hint: free some space and rerun; finished files are intact"], err
    monkeypatch.undo()

    # 2. ... or while the ticket itself is renamed into place over an older one (--force)
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst) == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with one_thread():
        code, _, err = cli(*TINY, "--seed", "1", "--force", "--out", out)
    assert code == 1 and f"cannot write {out}: no space left on device" in err, err
    assert out.read_bytes() == before, "a failed write damaged the finished ticket"
    assert list(tmp_path.rglob("*.tmp")) == []
    assert (tmp_path / "t.pt.work" / "round_01" / "result.pt").exists()  # the work is kept for the rerun
    monkeypatch.undo()

    # 3. space again: the rerun only writes the ticket (nothing is trained again)
    import ticketx.search

    monkeypatch.setattr(ticketx.train, "train", lambda *a, **k: pytest.fail("retrained a finished round"))
    code, _, err = cli(*TINY, "--seed", "1", "--force", "--out", out)
    assert code == 0, err
    assert ticketfile.load(out).meta["seed"] == 1
    assert leftovers(tmp_path) == ["new.pt.work"]  # the search that hit the full disk, kept to resume


def test_killed_after_writing_the_ticket_cleans_up(cli, monkeypatch, tmp_path):
    """A kill between writing the ticket and removing the work folder: the rerun tidies up."""
    out = tmp_path / "t.pt"
    monkeypatch.setattr(store, "remove_tree", lambda path: None)
    with one_thread():
        assert cli(*TINY, "--out", out)[0] == 0
    assert (tmp_path / "t.pt.work").exists()
    monkeypatch.undo()
    code, _, err = cli(*TINY, "--out", out)
    assert code == 0 and "already done" in err
    assert leftovers(tmp_path) == []


def test_crafted_or_damaged_checkpoint_is_refused(cli, monkeypatch, tmp_path):
    """A checkpoint in a work folder is opened as safely as a ticket: code in it never runs."""
    import ticketx.train

    out, marker = tmp_path / "t.pt", tmp_path / "pwned"
    real = ticketx.train.evaluate
    n = {"calls": 0}

    def evaluate(*a, **k):  # Ctrl-C in round 0, after its first epoch checkpoint
        n["calls"] += 1
        if n["calls"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ticketx.train, "evaluate", evaluate)
    args = [*TINY, "--eval-every", "1ep", "--out", out]
    with one_thread():
        assert cli(*args)[0] == 130
    monkeypatch.undo()
    ckpt = tmp_path / "t.pt.work" / "round_00" / "checkpoint.pt"
    good = ckpt.read_bytes()

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"key": "x", "model": Evil()}, ckpt)
    code, _, err = cli(*args)
    assert code == 1 and "refusing to load" in err and "checkpoint.pt" in err and "Traceback" not in err, err
    assert not marker.exists(), "a checkpoint executed code"
    ckpt.write_bytes(good[: len(good) // 2])
    code, _, err = cli(*args)
    assert code == 1 and "truncated, corrupted or not a ticketx file" in err, err
    ckpt.write_bytes(good)
    with one_thread():
        code, _, err = cli(*args)
    assert code == 0 and "resumed from checkpoint" in err, err
    assert leftovers(tmp_path) == []
