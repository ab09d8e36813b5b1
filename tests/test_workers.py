"""Several workers on one study: leases, takeover after SIGKILL, dependency order, submitit's local executor.

The grid: studies/ci.yaml with 2 rounds and 2 transfer seeds, deterministic: 3 searches + 8
transfers = 11 cells (the own ticket's networks shared by both sources). Every multi-worker run
must give the very same results.csv as one uninterrupted worker, and train each cell once.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ticketx import study as S

from conftest import child_env, worker_events
from datafiles import ci_grid
from ticketx.study.local import parse_devices, worker_slots
from ticketx.study.slurm import launch_settings, parse_extra
from ticketx.study.status import status

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "studies" / "ci.yaml"
TIMEOUT = 3.0  # lease timeout (s) in these tests; the default is 600


def _grid(folder: Path) -> Path:
    text = ci_grid("[0, 1]")  # one ticket per source, 2 transfer seeds, no claims
    text = text.replace("name: ci", "name: grid").replace("cpu_threads: 1", "cpu_threads: 1\ndeterministic: true")
    text = text.replace("    rounds: 1\n", "    rounds: 2\n")
    path = folder / "grid.yaml"
    path.write_text(text)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[Path, Path]:
    """(study file, output of one uninterrupted single worker)."""
    import torch

    folder = tmp_path_factory.mktemp("grid")
    path = _grid(folder)
    torch.set_num_threads(1)
    study = S.load_study(path)
    assert len(study.cells) == 11
    out = folder / "single"
    S.run_study(study, out)
    S.report(out, plots=False)
    return path, out


# ---- options ----

def test_devices_workers_and_launcher_settings(tmp_path):
    from ticketx.errors import UsageError

    assert parse_devices("0,1,3") == ["cuda:0", "cuda:1", "cuda:3"]
    with pytest.raises(UsageError, match="--devices"):
        parse_devices("0,gpu1")
    plan = worker_slots(4, parse_devices("0,1"), "auto", None)
    assert [p["device"] for p in plan] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert all(p["threads"] is None for p in plan)
    cpu = worker_slots(2, None, "cpu", None)
    assert [p["threads"] for p in cpu] == [max(1, (os.cpu_count() or 1) // 2)] * 2
    assert parse_extra(["qos=high --constraint=a100", "exclusive"]) == {"qos": "high", "constraint": "a100", "exclusive": True}
    text = CI.read_text() + ("launcher:\n  cluster: slurm\n  partition: gpu\n  time: '2:00:00'\n  workers: 8\n"
                             "  extra: {qos: high}\n")
    (tmp_path / "l.yaml").write_text(text)
    study = S.load_study(tmp_path / "l.yaml")
    plain = S.load_study(CI)
    assert [c.key for c in study.cells] == [c.key for c in plain.cells]  # the launcher is not science
    got = launch_settings(study, 5, partition="a100", extra={"constraint": "x"}, time=None)
    assert (got.cluster, got.partition, got.time_min, got.workers, got.gpus_per_task) == ("slurm", "a100", 120, 8, 1)
    assert got.extra == {"qos": "high", "constraint": "x"}


@pytest.mark.parametrize("args, message", [
    (["run", "--workers", "0"], "--workers"),
    (["run", "--devices", "x"], "--devices expects GPU indices"),
    (["run", "--device", "cpu", "--devices", "0"], "not both"),
    (["submit", "--time", "soon"], "--time"),
    (["submit", "--slurm-arg", "=x"], "--slurm-arg"),
    (["submit"], "no Slurm on this machine"),
    (["status"], "has not run there"),
])
def test_bad_options_are_one_line_usage_errors(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code, _, stderr = cli("study", args[0], CI, "--out", tmp_path / "nowhere", *args[1:])
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr


def test_bad_launcher_block_names_file_and_line(cli, tmp_path):
    (tmp_path / "s.yaml").write_text(CI.read_text() + "launcher:\n  partiton: gpu\n")
    code, _, stderr = cli("study", "validate", tmp_path / "s.yaml")
    assert code == 2 and "s.yaml:" in stderr and "launcher.partiton" in stderr and "partition" in stderr


# ---- whole studies with several worker processes ----

@pytest.mark.slow
def test_three_workers_match_one_and_train_each_cell_once(grid, tmp_path, monkeypatch, cli):
    path, single = grid
    out = tmp_path / "three"
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)
    code, stdout, stderr = cli("study", "run", path, "--out", out, "--workers", "3", "--lease-timeout", str(TIMEOUT))
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    assert _rows(out / "results.csv") == _rows(single / "results.csv")
    starts = worker_events(out, "start")
    cells = [c["id"] for c in S.load_provenance(out)["cells"]]
    assert sorted(starts) == sorted(cells) and set(starts.values()) == {1}  # each cell trained exactly once
    workers = [p for p in (out / "logs").glob("*.log")]
    assert len(workers) == 3
    assert not list((out / "leases").iterdir())  # every lease given back
    # searches before the transfers that need them: no transfer starts before its searches are done
    _check_order(out)
    st = status(out)
    assert (st["done"], st["running"], st["failed"], st["pending"]) == (11, 0, 0, 0)
    code, stdout, stderr = cli("study", "status", out, "--json")
    assert code == 0, stderr
    assert "11 done" in stderr and json.loads(stdout)["done"] == 11


def _check_order(out: Path) -> None:
    """Every transfer cell started after its source and own-ticket searches finished."""
    times: dict[tuple[str, str], str] = {}
    for log in (out / "logs").glob("*.log"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3] in ("start", "done"):
                times.setdefault((parts[3], parts[4]), parts[0])  # first start, first done
    for c in S.load_provenance(out)["cells"]:
        for dep in (c.get("source"), c.get("own_ticket")):
            if c["kind"] == "transfer" and dep:
                assert times[("done", dep)] <= times[("start", c["id"])], (dep, c["id"])


HOOK = """
import sys, time, pathlib
import ticketx.search, ticketx.transfer, ticketx.train
real, calls, marker = ticketx.train.train, [0], pathlib.Path(sys.argv[1])
def train(runs, recipe, reporter=None, done=None):
    out = []
    for run in runs:
        calls[0] += 1
        if calls[0] == 2:       # the second network of this worker's first cell: mid-cell
            marker.write_text("in training")
            time.sleep(3600)    # until the test SIGKILLs this process
        out += real([run], recipe, reporter, done)
    return out
ticketx.train.train = train
sys.argv = ["ticketx", *sys.argv[2:]]
from ticketx.cli import main
main()
"""


@pytest.mark.slow
def test_a_worker_killed_mid_cell_is_taken_over_and_results_are_identical(grid, tmp_path):
    path, single = grid
    out = tmp_path / "killed"
    marker = tmp_path / "in-training"
    args = ["study", "run", str(path), "--out", str(out), "--no-report", "--lease-timeout", str(TIMEOUT)]
    env = child_env()
    victim = subprocess.Popen([sys.executable, "-c", HOOK, str(marker), *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not marker.exists():  # the victim has claimed a cell and trained one network of it
            assert victim.poll() is None, victim.stderr.read().decode()
            assert time.monotonic() - t0 < 180
            time.sleep(0.1)
        others = [subprocess.Popen([sys.executable, "-m", "ticketx", *args], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
        time.sleep(1.0)
        victim.send_signal(signal.SIGKILL)  # no clean-up: its lease stays behind
        victim.wait()
        for p in others:
            assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    finally:
        for p in [victim, *locals().get("others", [])]:
            if p.poll() is None:
                p.kill()
    starts, takeovers, done = worker_events(out, "start"), worker_events(out, "takeover"), worker_events(out, "done")
    victim_log = next(log for log in (out / "logs").glob("*.log") if f"pid={victim.pid} " in log.read_text())
    killed = [line.split()[4] for line in victim_log.read_text().splitlines() if line.split()[3] == "start"]
    assert len(killed) == 1 and worker_events(out, "done")[killed[0]] == 1
    assert takeovers == Counter({killed[0]: 1})  # taken over once, after the lease went stale
    assert "no heartbeat for 3s" in "".join(log.read_text() for log in (out / "logs").glob("*.log"))
    cells = [c["id"] for c in S.load_provenance(out)["cells"]]
    assert set(done) == set(cells) and set(done.values()) == {1}
    assert starts == Counter({c: 2 if c == killed[0] else 1 for c in cells})  # nothing else trained twice
    _check_order(out)
    S.report(out, plots=False)
    assert _rows(out / "results.csv") == _rows(single / "results.csv")


@pytest.mark.slow
def test_submit_runs_end_to_end_on_submitits_local_executor(grid, tmp_path, monkeypatch, cli):
    pytest.importorskip("submitit")
    path, single = grid
    out = tmp_path / "submitted"
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)
    code, stdout, stderr = cli("study", "submit", path, "--local", "--workers", "2", "--lease-timeout", str(TIMEOUT),
                               "--out", out, "--time", "30")
    assert code == 0, stderr
    res = json.loads(stdout)
    assert res["cluster"] == "local" and [a["phase"] for a in res["arrays"]] == ["search", "transfer"]
    assert "watch:  ticketx study status" in stderr
    jobs = [j for a in res["arrays"] for j in a["jobs"]]
    assert len(jobs) == 4
    t0 = time.monotonic()
    while not all((out / "slurm" / f"{j}_0_result.pkl").exists() for j in jobs):  # submitit's record of a finished job
        assert time.monotonic() - t0 < 400, status(out)
        time.sleep(0.5)
    for j in jobs:
        import pickle

        outcome, value = pickle.loads((out / "slurm" / f"{j}_0_result.pkl").read_bytes())
        assert outcome == "success", value
    assert set(worker_events(out, "start").values()) == {1}
    S.report(out, plots=False)
    assert _rows(out / "results.csv") == _rows(single / "results.csv")
    code, stdout, stderr = cli("study", "submit", path, "--local", "--out", out)  # all done: nothing to submit
    assert code == 0 and "nothing to submit" in stderr


def test_a_failing_cell_is_recorded_and_the_others_go_on(grid, tmp_path, monkeypatch):
    from ticketx.errors import TicketxError

    path, _ = grid
    study = S.load_study(path)
    bad = study.cells[1].id  # the second source's search: its 4 transfer cells cannot run
    import ticketx.study.worker as W

    real = W.run_cell

    def run_cell(cell, *a, **k):
        if cell.id == bad:
            raise RuntimeError("CUDA out of memory\n(details)")
        return real(cell, *a, **k)

    monkeypatch.setattr(W, "run_cell", run_cell)
    out = tmp_path / "failing"
    with pytest.raises(TicketxError, match="CUDA out of memory") as err:
        S.run_study(study, out, lease_timeout=TIMEOUT)
    assert "log:" in err.value.hint
    info = json.loads((out / "cells" / bad / "failed.json").read_text())
    assert info["error"] == "RuntimeError: CUDA out of memory (details)" and Path(info["log"]).exists()
    assert "Traceback" in Path(info["log"]).read_text()
    st = status(out)
    assert (st["done"], st["failed"], st["pending"]) == (6, 1, 4)  # 2 searches + 4 transfers of the good source
    assert st["failed_cells"][0]["error"] == info["error"] and st["eta_s"] is not None
    monkeypatch.setattr(W, "run_cell", real)  # a later run retries the failed cell and finishes the study
    S.run_study(study, out, lease_timeout=TIMEOUT)
    assert not (out / "cells" / bad / "failed.json").exists() and status(out)["done"] == 11
