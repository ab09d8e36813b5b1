"""The retraining axis (search.retrain): one ticket per mode; a rewind ticket's cells are those of before."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from datafiles import ci_grid

CI = Path(tempfile.mkdtemp(prefix="ticketx-test-retrain-")) / "ci.yaml"
CI.write_text(ci_grid("[0]", "[0]"))


def _with(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "ci.yaml"
    path.write_text(CI.read_text().replace("search:\n", f"search:\n{line}", 1))
    return path


def test_retrain_axis_multiplies_the_searches_and_keeps_rewind_cells(tmp_path):
    from ticketx.study import load_study

    plain = load_study(CI)
    study = load_study(_with(tmp_path, "  retrain: [rewind, lr-rewind, finetune]\n"))
    searches = [c for c in study.cells if c.kind == "search" and c.info["role"] == "source"]
    before = [c for c in plain.cells if c.kind == "search" and c.info["role"] == "source"]
    assert len(searches) == 3 * len(before)
    assert {c.find.prune.retrain for c in searches} == {"rewind", "lr-rewind", "finetune"}
    rewind = {c.key for c in searches if c.info["retrain_mode"] == "rewind"}
    assert rewind == {c.key for c in before}  # the default mode: the same keys as without the axis
    assert all("-lr-rewind-" in c.id for c in searches if c.info["retrain_mode"] == "lr-rewind")
    # the own ticket is found the same way as the source ticket
    owns = {c.id: c for c in study.cells if c.kind == "search" and c.info["role"] == "own"}
    for t in (c for c in study.cells if c.kind == "transfer" and c.own_ticket):
        src = next(c for c in searches if c.id == t.source)
        assert owns[t.own_ticket].find.prune.retrain == src.find.prune.retrain
    assert {t.info["retrain_mode"] for t in study.cells if t.kind == "transfer"} == {"rewind", "lr-rewind", "finetune"}


def test_retrain_axis_rejects_unknown_modes_at_their_line(tmp_path):
    from ticketx.errors import UsageError
    from ticketx.study import load_study

    with pytest.raises(UsageError, match=r"ci\.yaml:\d+: search\.retrain"):
        load_study(_with(tmp_path, "  retrain: [rewind, lr-rewinding]\n"))
