"""Study files from anyone: bounded size, nesting, aliases and grids; short messages; linear bookkeeping.

The hostile cases run `ticketx` in a subprocess under a memory limit, so that a regression fails
in seconds (MemoryError, exit 1) instead of swapping the machine: RLIMIT_DATA, not RLIMIT_AS,
because importing torch maps more than 3 GB of address space that it never touches.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEMORY = 2 << 30  # bytes a hostile file may make `ticketx study validate` allocate (it needs ~0.5 GB)

STUDY = """\
name: s
model: lenet_300_100
image_size: 8
device: cpu
train:
  length: 1ep
sources:
  - digits[0-4]
"""


def alias_bomb(levels: int = 8) -> str:
    """`targets:` as `levels` nested aliases, nine of each: 9**8 = 43,046,721 data sets in ~400 bytes."""
    value = "&a [" + ", ".join(["digits"] * 9) + "]"
    for prev, name in zip("abcdefghij", "bcdefghij"[: levels - 1]):
        value = f"&{name} [{value}, " + ", ".join([f"*{prev}"] * 8) + "]"
    return f"name: bomb\nmodel: lenet_300_100\nsources: [digits]\ntargets: {value}\n"


def run_limited(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """`python -m ticketx ARGS` with at most MEMORY bytes of data: (exit code, stdout, stderr)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY, MEMORY))

    full = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400", **(env or {})}
    r = subprocess.run([sys.executable, "-m", "ticketx", *args], capture_output=True, text=True, env=full,
                       preexec_fn=limit, timeout=timeout, cwd=REPO)
    return r.returncode, r.stdout, r.stderr


def one_error(code: int, err: str, phrase: str) -> str:
    """The error line of a usage error (exit 2, one line and an optional hint, no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert lines and lines[0].startswith("error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    assert phrase in lines[0], err
    return lines[0]


def test_the_alias_bomb_is_refused_at_the_alias(tmp_path):
    text = alias_bomb()
    assert len(text) < 450
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    code, out, err = run_limited("study", "validate", str(path))
    line = one_error(code, err, f"{path}:4: *")
    assert "aliases expand this file to more than 100,000 values" in line and out == ""


def test_deep_nesting_is_refused_with_its_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(STUDY.replace("sources:\n  - digits[0-4]\n", "sources: " + "[" * 20_000 + "digits" + "]" * 20_000 + "\n")
                    + "targets: [digits]\n")
    code, _, err = run_limited("study", "validate", str(path))
    one_error(code, err, f"{path}:7: nested more than 32 levels deep")


def test_an_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\n" + "# padding\n" * 110_000)  # 1.1 MB of comments
    code, _, err = run_limited("study", "validate", str(path))
    line = one_error(code, err, f"{path}: 1,1")
    assert "bytes is more than a study file may have (1,048,576 bytes)" in line and "TICKETX_MAX_STUDY_BYTES=" in err


def test_a_two_million_cell_grid_is_refused_with_its_size(tmp_path):
    # 40 targets x 10 rounds x 5,000 seeds = 2,000,000 transfers (and 1 search), in 30 KB
    targets = [f"digits[{a},{b}]" for a in range(10) for b in range(a + 1, 10)][:40]
    path = tmp_path / "grid.yaml"
    path.write_text(STUDY + "targets: " + json.dumps(targets) + "\nsearch:\n  prune: {rounds: 10}\ntransfer:\n  rounds: all\n"
                    + "  seeds: [" + ", ".join(map(str, range(5_000))) + "]\n")
    code, _, err = run_limited("study", "validate", str(path), timeout=60)
    one_error(code, err, "the study's grid has 2,000,001 cells, more than the limit of 1,000,000")
    assert "TICKETX_MAX_CELLS=2000001" in err


def test_a_long_value_is_shortened_in_the_message(tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\ntransfer:\n  seeds: [0, " + ", ".join(map(str, range(10_000))) + "]\n")
    code, _, err = run_limited("study", "validate", str(path))
    line = one_error(code, err, f"{path}:11: transfer.seeds: seeds must be distinct non-negative integers, got […10001 items]")
    assert len(line) < 200


# ---- in process: the rules themselves ----

def test_aliases_within_the_budget_are_fine_and_cycles_are_not(cli, no_data, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\nsearch: {seeds: &seeds [0, 1]}\ntransfer: {seeds: *seeds}\n")
    code, stdout, err = cli("study", "validate", path)
    assert code == 0, err
    path.write_text(STUDY + "targets: ['digits[5-9]']\nsearch: {seeds: [0, 1]}\ntransfer: {seeds: [0, 1]}\n")
    assert cli("study", "validate", path)[1] == stdout  # the same grid as written out
    path.write_text(STUDY + "targets: &t ['digits[5-9]', *t]\n")
    code, _, err = cli("study", "validate", path)
    one_error(code, err, f"{path}:9: *t: an alias inside the value it names (a cycle)")


def test_the_limits_can_be_changed_and_are_checked(cli, no_data, tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\nsearch: {prune: {rounds: 2}}\ntransfer: {seeds: [0, 1, 2]}\n")
    size = path.stat().st_size
    monkeypatch.setenv("TICKETX_MAX_STUDY_BYTES", str(size - 1))
    code, _, err = cli("study", "validate", path)
    one_error(code, err, f"{path}: {size:,} bytes is more than a study file may have ({size - 1:,} bytes)")
    monkeypatch.setenv("TICKETX_MAX_STUDY_BYTES", str(size))
    monkeypatch.setenv("TICKETX_MAX_CELLS", "6")
    code, _, err = cli("study", "validate", path)  # 1 search + 3 seeds x 2 rounds
    one_error(code, err, "the study's grid has 7 cells, more than the limit of 6")
    monkeypatch.setenv("TICKETX_MAX_CELLS", "7")
    code, _, err = cli("study", "validate", path)
    assert code == 0, err
    monkeypatch.setenv("TICKETX_MAX_CELLS", "lots")
    code, _, err = cli("study", "validate", path)
    one_error(code, err, "TICKETX_MAX_CELLS must be a positive whole number, got 'lots'")


def test_grid_size_counts_what_expand_builds(tmp_path):
    from ticketx.study import load_study
    from ticketx.study.cells import grid_size

    path = tmp_path / "s.yaml"  # sources with their own seeds and optimizers: not every ticket has the same grid
    path.write_text(STUDY.replace("  - digits[0-4]\n", "  - {data: 'digits[0-4]', seeds: [0, 1, 2], optimizer: [sgd, adam]}\n"
                                  "  - {data: 'digits[5-9]', optimizer: adam}\n")
                    + "targets: ['digits[5-9]', 'digits[0-2]']\nsearch: {seeds: [0, 1], prune: {rounds: 3}}\n"
                    "transfer: {seeds: [0, 1, 2], optimizer: [same, sgd], rounds: [1, 3]}\nstability: {rounds: [0, 2]}\n")
    s = load_study(path)
    sources = [c for c in s.cells if c.kind == "search" and c.info["role"] == "source"]
    others = [c for c in s.cells if c.kind != "search"]
    assert grid_size(s) == (len(sources) + len(others), True)
    n, exact = grid_size(s, limit=10, budget=3)  # a long count stops once past the limit: a lower bound
    assert 10 < n < len(sources) + len(others) and not exact


def test_interrupting_validate_says_nothing_was_saved(cli, no_data, tmp_path, monkeypatch):
    import ticketx.study.load

    path = tmp_path / "s.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\n")

    def stop(study):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(ticketx.study.load, "expand", stop)
    code, _, err = cli("study", "validate", path)
    assert code == 143, err
    assert err.strip() == "terminated (SIGTERM): it had saved nothing (it writes its output only when it finishes); " \
                          "rerun the same command.", err


def test_interrupting_a_study_run_says_its_checkpoints_are_kept(cli, no_data, tmp_path, monkeypatch):
    import ticketx.study

    path = tmp_path / "s.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\n")
    monkeypatch.setattr(ticketx.study, "run_study", lambda *a, **k: signal.raise_signal(signal.SIGINT))
    code, _, err = cli("study", "run", path, "--out", tmp_path / "out")
    assert code == 130, err
    assert err.strip().splitlines()[-1] == \
        "interrupted: finished stages and the last epoch checkpoint are saved; rerun the same command to resume.", err


def test_a_worker_looks_at_each_cell_a_bounded_number_of_times(tmp_path, monkeypatch):
    """Claiming is incremental: rescanning every cell for every claim made O(cells^2) disk reads."""
    from ticketx.study import load_study
    from ticketx.study import runner, worker

    path = tmp_path / "s.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\nsearch: {prune: {rounds: 2}}\n"
                    "transfer: {seeds: [" + ", ".join(map(str, range(40))) + "]}\n")
    s = load_study(path)
    looks = {"n": 0}
    real = runner.is_done

    def counted(out, cell):
        looks["n"] += 1
        return real(out, cell)

    monkeypatch.setattr(worker, "is_done", counted)
    monkeypatch.setattr(runner, "is_done", counted)
    monkeypatch.setattr(worker, "run_cell", lambda *a, **k: {})
    res = worker.Worker(s, tmp_path / "out", "cpu", lease_timeout=60, worker_id="w").run()
    n = len(s.cells)
    assert n == 82 and len(res["trained"]) == n and not res["not_done"]
    assert looks["n"] <= 4 * n, looks  # the rescanning loop: about n * n / 2 = 3,362


def test_a_version_2_study_record_still_loads(tmp_path):
    """study.json version 2 repeated every cell's configuration; it is read as version 3 (without re-expanding)."""
    from ticketx import store
    from ticketx.study import load_provenance, load_study, provenance
    from ticketx.study.runner import STUDY_VERSION

    path = tmp_path / "s.yaml"
    path.write_text(STUDY + "targets: ['digits[5-9]']\n")
    s = load_study(path)
    now = provenance(s)
    old = {**now, "format_version": 2,
           "cells": [{k: v for k, v in {**r, "config": c.config}.items() if k != "model"} for r, c in zip(now["cells"], s.cells)]}
    assert STUDY_VERSION == 3 and "config" in old["cells"][0] and "model" not in old["cells"][0]
    store.write_json(tmp_path / "study.json", old)
    got = load_provenance(tmp_path)
    assert got["cells"] == json.loads(json.dumps(now["cells"]))
    assert [c.get("model") for c in got["cells"] if c["kind"] == "search"] == ["lenet_300_100"] * 2
