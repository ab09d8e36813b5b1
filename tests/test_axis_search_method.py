"""The search-method axis (search.method: [imp, edge-popup, bernoulli]): supermask tickets as a study
source kind, at the IMP schedule's densities (and, with the imp profile, its per-layer counts),
transferred with the usual arms; IMP cells are those of before; schema errors at their line."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import pytest

from datafiles import ci_grid

CI = Path(tempfile.mkdtemp(prefix="ticketx-test-method-")) / "ci.yaml"
CI.write_text(ci_grid("[0]", "[0]"))


def _with(tmp_path: Path, lines: str, name: str = "ci.yaml") -> Path:
    path = tmp_path / name
    path.write_text(CI.read_text().replace("search:\n", f"search:\n{lines}", 1))
    return path


def test_an_absent_or_imp_only_axis_changes_no_cell(tmp_path):
    from ticketx.study import load_study

    plain = load_study(CI)
    imp = load_study(_with(tmp_path, "  method: imp\n"))
    assert [(c.id, c.key) for c in imp.cells] == [(c.id, c.key) for c in plain.cells]
    assert all("supermask" not in c.config.get("find", {}) for c in plain.cells if c.kind == "search")
    assert {c.info["search_method"] for c in plain.cells} == {"imp"}


def test_supermask_methods_multiply_the_searches(tmp_path):
    from ticketx.study import load_study

    plain = load_study(CI)
    study = load_study(_with(tmp_path, "  method: [imp, edge-popup, bernoulli]\n  supermask:\n"
                                       "    weights: [init, signed-constant]\n    profile: [imp, uniform]\n"))
    sources = [c for c in study.cells if c.kind == "search" and c.info["role"] == "source"]
    before = [c for c in plain.cells if c.kind == "search" and c.info["role"] == "source"]
    assert len(sources) == (1 + 2 * 2 * 2) * len(before)
    assert {c.key for c in sources if c.info["search_method"] == "imp"} == {c.key for c in before}
    masks = [c for c in sources if c.find.supermask is not None]
    assert {(c.find.supermask.method, c.find.supermask.weights, c.find.supermask.profile) for c in masks} == {
        (m, w, p) for m in ("edge-popup", "bernoulli") for w in ("init", "signed-constant") for p in ("imp", "uniform")}
    assert all(c.info["supermask_profile"] in ("imp", "uniform") for c in masks)
    assert len({c.key for c in sources}) == len(sources)  # every supermask setting is in the key
    # the own ticket is found the same way as the source ticket
    owns = {c.id: c for c in study.cells if c.kind == "search" and c.info["role"] == "own"}
    by_id = {c.id: c for c in sources}
    for t in (c for c in study.cells if c.kind == "transfer" and c.own_ticket):
        assert owns[t.own_ticket].find.supermask == by_id[t.source].find.supermask


@pytest.mark.parametrize("lines, where, message", [
    ("  method: [imp, edge-pop]\n", r"search\.method", "did you mean 'edge-popup'"),
    ("  method: [imp]\n  supermask:\n    length: 2ep\n", r"search\.supermask", "no supermask method"),
    ("  method: [edge-popup]\n  supermask:\n    weights: [init, signed]\n", r"search\.supermask\.weights", ""),
    ("  method: [edge-popup]\n  supermask:\n    length: 20\n", r"search\.supermask\.length", "give a unit"),
    ("  method: [edge-popup]\n  supermask:\n    lenght: 2ep\n", r"search\.supermask\.lenght", "did you mean 'length'"),
    ("  method: [bernoulli]\n  label_noise: [0, 0.2]\n", r"search\.label_noise", "clean labels"),
])
def test_schema_errors_name_the_line(tmp_path, lines, where, message):
    from ticketx.errors import UsageError
    from ticketx.study import load_study

    with pytest.raises(UsageError, match=rf"ci\.yaml:\d+: {where}.*{message}"):
        load_study(_with(tmp_path, lines))


def test_imp_profile_needs_a_layerwise_schedule_and_no_zhou_mask0(tmp_path):
    from ticketx.errors import UsageError
    from ticketx.study import load_study

    path = _with(tmp_path, "  method: [edge-popup]\n")
    path.write_text(path.read_text().replace("    rounds: 1\n", "    rounds: 1\n    scope: global\n"))
    with pytest.raises(UsageError, match=r"ci\.yaml:\d+: search\.method: the imp profile .* global"):
        load_study(path)
    path.write_text(path.read_text().replace("  method: [edge-popup]\n", "  method: [edge-popup]\n  supermask:\n"
                                                                         "    profile: uniform\n"))
    assert any(c.find.supermask for c in load_study(path).cells if c.kind == "search")  # uniform: any scope
    path = _with(tmp_path, "  method: [edge-popup]\n")
    path.write_text(path.read_text().replace("  own_ticket: true\n", "  own_ticket: true\n  mask0: zhou\n"))
    with pytest.raises(UsageError, match=r"ci\.yaml:\d+: transfer\.mask0: zhou needs"):
        load_study(path)


def test_supermask_tickets_end_to_end(tmp_path):
    """Found, transferred with the usual arms, in results.csv and summary.csv by method; each layer of the
    imp-profile supermask ticket keeps exactly the IMP ticket's count at every round."""
    import torch

    from ticketx import store
    from ticketx import ticket as ticketfile
    from ticketx.study import load_study, report, run_study

    torch.set_num_threads(1)
    path = _with(tmp_path, "  method: [imp, edge-popup]\n  supermask:\n    length: 2ep\n")
    text = path.read_text().replace("  - digits[0-2]\n", "").replace("    rounds: 1\n", "    rounds: 2\n    rate: 0.6\n"
                                                                    "    head_rate: 0.3\n")
    path.write_text(text.replace("  own_ticket: true\n", "  own_ticket: false\n"))
    study = load_study(path)
    out = tmp_path / "out"
    run_study(study, out)
    report(out, plots=False)
    searches = {c.info["search_method"]: c for c in study.cells if c.kind == "search"}
    imp = ticketfile.load(out / "cells" / searches["imp"].id / "ticket.pt")
    sm = ticketfile.load(out / "cells" / searches["edge-popup"].id / "ticket.pt")
    assert sm.meta["found_by"] == "supermask" and sm.meta["prune"]["profile"] == "imp"
    assert sm.meta["fingerprint"] == store.fingerprint(searches["edge-popup"].find.science())
    assert sm.num_rounds == imp.num_rounds == 2
    for r in (1, 2):
        assert {n: int(m.sum()) for n, m in sm.mask(r).items()} == {n: int(m.sum()) for n, m in imp.mask(r).items()}
    assert all(not (sm.mask(2)[n] & ~sm.mask(1)[n]).any() for n in sm.names)  # nested
    # the frozen weights are the IMP ticket's initialisation (same init seed, rewind 0)
    assert all(torch.equal(sm.rewind[n], imp.rewind[n]) for n in sm.names)
    rows = list(csv.DictReader(open(out / "results.csv")))
    transfers = [r for r in rows if r["kind"] == "transfer"]
    assert {r["search_method"] for r in transfers} == {"imp", "edge-popup"}
    assert {r["supermask_profile"] for r in transfers if r["search_method"] == "edge-popup"} == {"imp"}
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert {(r["search_method"], r["control"]) for r in summary} >= {("imp", "random-mask"), ("edge-popup", "random-mask"),
                                                                   ("edge-popup", "dense")}
    searched = [r for r in rows if r["kind"] == "search" and r["search_method"] == "edge-popup"]
    assert searched and all(r["supermask_weights"] == "init" for r in searched)
