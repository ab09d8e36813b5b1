"""Studies with `stability:`: schema errors, one stability cell per source ticket x round after its
search, stability.csv and path plots from a tiny study, and a rerun that trains nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ticketx import study as S
from ticketx.errors import UsageError

PNG = b"\x89PNG\r\n\x1a\n"

BASE = """\
name: stab
model: lenet_300_100
image_size: 8
device: cpu
cpu_threads: 1
train:
  lr: 1.2e-3
  batch_size: 120
  length: 1ep
search:
  prune:
    rounds: {rounds}
    rewind: 0
transfer:
  seeds: [0]
  baselines: [dense]
  own_ticket: false
sources:
  - digits[0-4]
targets:
  - digits[5-9]
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def _study(tmp_path: Path, stability: str, rounds: int = 2, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(BASE.format(rounds=rounds) + stability)
    return path


def _error(path: Path) -> str:
    with pytest.raises(UsageError) as err:
        S.load_study(path)
    return str(err.value)


@pytest.mark.parametrize("block, line, message", [
    ("stability:\n  rounds: all\n  pionts: 5\n", 24, "stability.pionts: unknown key; did you mean 'points'?"),
    ("stability:\n  seeds: [0, 0]\n", 23, "stability.seeds: seeds must be distinct non-negative integers"),
    ("stability:\n  seeds: [0, 1, 2]\n", 23, "stability.seeds: give the copies' data seeds in pairs"),
    ("stability:\n  points: 2\n", 23, "stability.points: Input should be greater than or equal to 3"),
    ("stability:\n  rounds: [-1]\n", 23, "stability.rounds: rounds are 0 (dense) or more"),
    ("stability:\n  rounds: [1, 3]\n", 23, "stability.rounds: round 3 is past the last round of the search (2 rounds"),
    ("stability: maybe\n", 22, "stability: Input should be a valid dictionary"),
])
def test_schema_errors_name_file_line_and_key(tmp_path, block, line, message):
    path = _study(tmp_path, block)
    text = _error(path)
    assert text.startswith(f"{path}:{line}: "), text
    assert message in text, text


def test_off_when_absent_or_false(tmp_path):
    for block in ("", "stability: false\n"):
        s = S.load_study(_study(tmp_path, block))
        assert s.spec.stability is None
        assert not [c for c in s.cells if c.kind == "stability"] and "stability" not in S.count(s.cells)


def test_expansion_one_cell_per_source_ticket_and_round_after_its_search(tmp_path):
    from ticketx.study.worker import Worker

    plain = S.load_study(_study(tmp_path, "", name="plain.yaml"))
    s = S.load_study(_study(tmp_path, "stability: true\n"))  # every default: rounds 0..2, seeds 0 1, 11 points
    stab = [c for c in s.cells if isinstance(c, S.StabilityCell)]
    sources = [c for c in s.cells if c.kind == "search" and c.info["role"] == "source"]
    assert len(sources) == 1 and [c.round for c in stab] == [0, 1, 2]
    assert all(c.source == sources[0].id and c.seeds == (0, 1) and c.points == 11 and c.networks == 2 for c in stab)
    assert all(c.train == sources[0].find.train for c in stab)  # the ticket's own recipe
    assert len({c.key for c in stab}) == 3 and all(c.key in c.id for c in stab)
    worker = Worker(s, tmp_path / "out", "cpu")
    assert all(worker.deps(c) == [sources[0].id] for c in stab)  # runs after its search, and only it
    order = [c.id for c in s.cells]
    assert all(order.index(c.id) > order.index(sources[0].id) for c in stab)
    counts = S.count(s.cells)
    assert counts["stability"] == 3 and counts["networks"] == S.count(plain.cells)["networks"] + 6
    # Stability stays out of every other cell's key: adding it reruns nothing that was done.
    assert [(c.kind, c.key) for c in plain.cells] == [(c.kind, c.key) for c in s.cells if c.kind != "stability"]
    # Its own key follows its configuration.
    other = S.load_study(_study(tmp_path, "stability:\n  rounds: 2\n  seeds: [3, 4]\n  points: 5\n", name="o.yaml"))
    (c2,) = [c for c in other.cells if c.kind == "stability"]
    assert c2.round == 2 and c2.seeds == (3, 4) and c2.points == 5 and c2.key != stab[2].key


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tiny_study_writes_barriers_plots_and_reruns_nothing(tmp_path, monkeypatch):
    import ticketx.search
    import ticketx.train
    import ticketx.transfer

    path = _study(tmp_path, "stability:\n  rounds: all\n  points: 3\n", rounds=1)
    out = tmp_path / "out"
    s = S.load_study(path)
    S.run_study(s, out)
    written = S.report(out, plots=False)
    rows = _rows(out / "stability.csv")
    assert written["stability"] == out / "stability.csv"
    assert [r["round"] for r in rows] == ["0", "1"]  # a barrier per round, the dense network first
    assert float(rows[0]["density"]) == 1.0 and float(rows[1]["density"]) < 1.0
    for r in rows:
        assert r["source"] == "digits[0-4]" and r["rewind"] == "0" and r["search_optimizer"] == "adam"
        assert r["seeds"] == "0 1" and r["points"] == "3"
        assert 0.0 <= float(r["test_barrier"]) <= 1.0 and 0.0 <= float(r["train_barrier"]) <= 1.0
        assert 0.5 < float(r["acc_a"]) <= 1.0 and 0.5 < float(r["acc_b"]) <= 1.0  # both copies learned
        here = out / "cells" / r["cell"]
        assert (here / "path.png").read_bytes()[:8] == PNG
        res = json.loads((here / "stability.json").read_text())
        assert len(res["test_error"]) == 3 and res["test_barrier"] == pytest.approx(float(r["test_barrier"]))
    # results.csv holds trained networks to compare; stability cells add no rows there.
    assert all(x["kind"] in ("search", "transfer") for x in _rows(out / "results.csv"))

    def forbid(*args, **kwargs):
        raise AssertionError("a finished study trained a network")

    monkeypatch.setattr(ticketx.train, "train", forbid)
    S.run_study(S.load_study(path), out)  # everything is done: nothing trains, nothing fails
    S.report(out, plots=False)
    assert _rows(out / "stability.csv") == rows
