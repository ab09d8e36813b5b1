"""Ctrl-C and SIGTERM at any moment: exit 130/143 with one line, or 0 once the result is written.

A KeyboardInterrupt raised inside a finaliser (`__del__`, a weakref or GC callback) is printed
as "Exception ignored" and dropped by Python; a handler that only raises lets such a run train
on to the end. ticketx records the signal too, and every training step and atomic write checks
the record (ticketx.interrupt).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ticketx import interrupt
from ticketx import ticket as ticketfile

REPO = Path(__file__).resolve().parents[1]
TINY = ["find", "-d", "digits[0-4]", "-m", "lenet_300_100", "--image-size", "8", "--device", "cpu",
        "--epochs", "2", "--rounds", "1", "--rewind", "0"]
MESSAGE = "finished stages and the last epoch checkpoint are saved; rerun the same command to resume."


def test_check_raises_only_while_a_stop_is_pending():
    with interrupt.handled():
        interrupt.check()  # nothing pending: a no-op
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
            time.sleep(1)  # the handler runs before this returns
        assert interrupt.requested() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # the raise was "lost": the next boundary raises again
            interrupt.check()
        signal.raise_signal(signal.SIGINT)  # a second signal during the unwind only records
        interrupt.finished("t.pt")
        interrupt.check()  # the result is written: nothing left to stop
    assert not interrupt.installed()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_ignored_by_the_parent_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.handled():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is interrupt._handler
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("signum, code, what", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_an_interrupt_swallowed_by_a_finaliser_still_stops_the_search(cli, monkeypatch, tmp_path, signum, code, what):
    """The signal's KeyboardInterrupt lands in a __del__ (Python drops it): the next step stops the run."""
    import ticketx.train

    real = ticketx.train.Stepper.__call__
    seen = {"steps": 0, "del_finished": False}

    class Finaliser:
        def __del__(self):
            signal.pthread_kill(threading.main_thread().ident, signum)
            for _ in range(10_000):  # the handler runs at one of these bytecodes, inside __del__
                pass
            seen["del_finished"] = True

    def step(self, *a, **k):
        seen["steps"] += 1
        if seen["steps"] == 30:
            Finaliser()  # collected at once: its __del__ runs here
        return real(self, *a, **k)

    monkeypatch.setattr(ticketx.train.Stepper, "__call__", step)
    rc, out, err = cli(*TINY, "--out", tmp_path / "t.pt")
    assert not seen["del_finished"], "the KeyboardInterrupt was not raised inside __del__: the test tests nothing"
    assert rc == code, err
    assert seen["steps"] == 30, "the search trained on after the signal"
    lines = [ln for ln in err.splitlines() if ln.startswith(("interrupted", "terminated", "error", "Traceback", "Exception"))]
    assert lines == [f"{what}: {MESSAGE}"], err
    assert not (tmp_path / "t.pt").exists()
    assert not interrupt.installed()


def test_a_signal_after_the_search_finished_is_reported_and_exits_0(cli, monkeypatch, tmp_path):
    """A signal whose raise is lost after the last write: the command says the result is complete, exit 0."""
    from ticketx import store

    real = store.remove_tree

    def remove_tree(path):  # after the ticket is written: the signal lands in a finaliser
        class Finaliser:
            def __del__(self):
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                for _ in range(10_000):
                    pass

        Finaliser()
        real(path)

    monkeypatch.setattr(store, "remove_tree", remove_tree)
    rc, out, err = cli(*TINY, "--out", tmp_path / "t.pt")
    assert rc == 0, err
    assert "interrupted after the command had finished: its results are complete; nothing to resume." in err
    assert out.strip() == str(tmp_path / "t.pt")
    ticketfile.load(tmp_path / "t.pt")


# ---- real processes: a signal at a random moment of a whole run ----------------------------


def _handler_installed(pid: int) -> bool:
    """ticketx's handler catches SIGTERM (Python's own start-up catches only SIGINT)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _spawn(args: list[str], cwd: Path, log: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("TICKETX_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "ticketx", *args], cwd=cwd, env=env,
                            stdout=open(out, "w"), stderr=open(log, "w"))


TRIALS = int(os.environ.get("TICKETX_SIGNAL_TRIALS", "6"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to see the handler installed")
def test_a_signal_at_any_moment_of_a_run(tmp_path):
    """SIGINT or SIGTERM at a random moment from start-up to exit: 130/143 and the one line, or 0
    with a complete ticket; never exit -2, never a run that ignores the signal.

    The clock starts once ticketx's handler is installed (the first line of `python -m
    ticketx`): before that, the interpreter itself is starting and Python's defaults apply.
    """
    rng = random.Random(int(os.environ.get("TICKETX_SIGNAL_SEED", "7")))
    # one run to measure how long a whole run takes on this machine, now
    t0 = time.monotonic()
    ref = _spawn([*TINY, "--out", "ref.pt"], tmp_path, tmp_path / "ref.log", tmp_path / "ref.out")
    assert ref.wait(300) == 0, (tmp_path / "ref.log").read_text()
    length = time.monotonic() - t0
    outcomes = []
    for i in range(TRIALS):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        signum = rng.choice([signal.SIGINT, signal.SIGTERM])
        delay = 0.0 if i == 0 else rng.uniform(0, 1.1 * length)  # the first: during start-up
        proc = _spawn([*TINY, "--out", "t.pt"], folder, folder / "err.log", folder / "out.log")
        end = time.monotonic() + 60
        while not _handler_installed(proc.pid) and proc.poll() is None:
            assert time.monotonic() < end
            time.sleep(0.001)
        time.sleep(delay)
        written_before = (folder / "t.pt").exists()
        proc.send_signal(signum)
        code = proc.wait(120)
        err = (folder / "err.log").read_text()
        stdout = (folder / "out.log").read_text()
        outcomes.append((round(delay, 2), code))
        assert code != -signum, f"killed by the signal's default action after {delay:.2f} s: {err}"
        assert "Traceback" not in err and "Exception ignored" not in err, err
        if code == 128 + signum:
            what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
            assert f"{what}: {MESSAGE}" in err, err
            assert not (folder / "t.pt").exists() or written_before or "ticket written" in err
        else:
            assert code == 0, f"exit {code} after {delay:.2f} s: {err}"
            ticketfile.load(folder / "t.pt")  # a complete ticket
            # a signal before the ticket existed must have stopped the run (or been reported)
            assert written_before or "after the command had finished" in err, \
                f"the signal at {delay:.2f} s was ignored: the run went on to the end\n{err}"
            assert stdout.strip() == "t.pt"
        assert list(folder.rglob("*.tmp")) == []
    print("signal at (s), exit code:", outcomes)
