"""Study axes: every existing axis goes through the one mechanism, and a new axis is one declaration
(here a test-only axis, registered for the test) that reaches the schema with file:line errors, the
cells and their keys, results.csv, summary.csv, the tables and the claims."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import pytest
from pydantic import BeforeValidator

from ticketx.settings.base import as_list
from ticketx.study.axes import AXES, Axis, Draft

from datafiles import ci_grid

REPO = Path(__file__).resolve().parents[1]
CI = Path(tempfile.mkdtemp(prefix="ticketx-test-axes-")) / "ci.yaml"
CI.write_text(ci_grid("[0]", "[0, 1]"))  # 2 tickets per source, one retrain each: claims can be judged


class BatchSize(Axis):
    """A transfer axis: each ticket retrained at several batch sizes (the README's example)."""

    name = "batch"
    phase = "transfer"
    columns = ("batch",)
    claim_key = "batches"
    fields = {"transfer": {"batch_sizes": (Annotated[Optional[list[int]], BeforeValidator(as_list)], None)}}

    def check(self, study: Any) -> None:
        if any(b < 1 for b in study.spec.transfer.batch_sizes or []):
            raise study.error(("transfer", "batch_sizes"), "a batch size is at least 1")

    def values(self, draft: Draft) -> list[Any]:
        return draft.study.spec.transfer.batch_sizes or [None]

    def apply(self, value: Any, draft: Draft) -> None:
        if value is not None:  # None: the cell is exactly what it was without this axis
            draft.spec["train"] = draft.spec["train"].model_copy(update={"batch_size": value})
            draft.config["train"] = draft.spec["train"].model_dump()
            draft.ids.append((self.name, f"b{value}"))
        draft.info["batch"] = draft.spec["train"].batch_size


@pytest.fixture
def batch_axis(monkeypatch):
    from ticketx.study import load

    monkeypatch.setitem(AXES._entries, "batch", BatchSize())
    load.schema.cache_clear()
    yield
    monkeypatch.undo()
    load.schema.cache_clear()


def _study(tmp_path: Path, extra: str) -> Path:
    text = CI.read_text().replace("transfer:\n", f"transfer:\n{extra}", 1)
    path = tmp_path / "ci.yaml"
    path.write_text(text)
    return path


def test_every_existing_axis_is_declared():
    assert AXES.names() == ["model", "source", "search_optimizer", "criterion", "retrain_mode", "search_method",
                            "search_seed", "width", "search_noise", "target", "transfer_optimizer", "transfer_noise", "point", "seed"]
    roles = {a.name: a.role for a in AXES.values()}
    assert roles["search_seed"] == "ticket" and roles["seed"] == "retrain" and roles["point"] == "x"


def test_an_axis_left_out_changes_no_cell(batch_axis, tmp_path):
    from ticketx.study import load_study

    from ticketx.study.load import schema

    before = {c.key for c in load_study(CI).cells}
    schema.cache_clear()
    AXES._entries.pop("batch")
    try:
        assert {c.key for c in load_study(CI).cells} == before  # registered but not used: the same cells
    finally:
        AXES._entries["batch"] = BatchSize()
        schema.cache_clear()


def test_a_new_axis_reaches_schema_cells_results_tables_and_claims(batch_axis, tmp_path, capsys):
    from ticketx.errors import UsageError
    from ticketx.study import load_study, report, run_study

    with pytest.raises(UsageError, match=r"ci\.yaml:\d+: transfer\.batch_sizes: a batch size is at least 1"):
        load_study(_study(tmp_path, "  batch_sizes: [0]\n"))
    with pytest.raises(UsageError, match=r"transfer\.batch_szes: unknown key; did you mean 'batch_sizes'"):
        load_study(_study(tmp_path, "  batch_szes: [60]\n"))
    plain = load_study(CI)
    study = load_study(_study(tmp_path, "  batch_sizes: [60, 90]\n"))
    transfers = [c for c in study.cells if c.kind == "transfer"]
    assert len(transfers) == 2 * sum(c.kind == "transfer" for c in plain.cells)
    assert {c.info["batch"] for c in transfers} == {60, 90} and all("-b60-" in c.id or "-b90-" in c.id for c in transfers)
    assert {c.transfer.train.batch_size for c in transfers} == {60, 90}
    assert not {c.key for c in transfers} & {c.key for c in plain.cells}  # its value is in every key
    assert {c.key for c in study.cells if c.kind == "search"} == {c.key for c in plain.cells if c.kind == "search"}
    out = tmp_path / "out"
    import torch

    torch.set_num_threads(1)
    run_study(study, out)
    report(out, plots=False)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert "batch" in rows[0] and {r["batch"] for r in rows if r["kind"] == "transfer"} == {"60", "90"}
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert {(r["batch"], r["control"]) for r in summary} >= {("60", "dense"), ("90", "dense"), ("60", "random-mask")}
    err = capsys.readouterr().err
    assert "batch" in err  # a row column of the tables: it has two values
    claim = "expect:\n  - name: b\n    matches: dense\n    within: 50pt\n    batches: [90]\n"
    path = _study(tmp_path, "  batch_sizes: [60, 90]\n")
    path.write_text(path.read_text().split("expect:")[0] + claim)
    claims = load_study(path).claims
    assert claims[0].filters == {"batches": ("90",)}
    assert all(cid.endswith(tuple(c.key for c in transfers if c.info["batch"] == 90)) for cid, _ in claims[0].covers)
    path.write_text(path.read_text().replace("batches: [90]", "batches: [100]"))
    with pytest.raises(UsageError, match=r"100 is not a batch of this study \(the study's batches: 60, 90\)"):
        load_study(path)
