"""Studies: YAML -> validated cells -> run, skip, resume -> matrix, CSV, plots (studies/ci.yaml, seconds on a CPU)."""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from ticketx import study as S
from ticketx.errors import UsageError

from datafiles import ci_grid

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"
# studies/ci.yaml's grid with one ticket per source and 4 transfer seeds, without its claims (which
# need its 6 tickets): the machinery under test here needs no statistics, and runs in seconds.
CI = Path(tempfile.mkdtemp(prefix="ticketx-test-study-")) / "ci.yaml"
CI.write_text(ci_grid())
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


class Counter:
    """Stands in for `train` in search.py and transfer.py: counts calls, fails at call `fail_at`."""

    def __init__(self, monkeypatch, fail_at: int | None = None, forbid: bool = False) -> None:
        import ticketx.search
        import ticketx.transfer
        import ticketx.train

        self.real = ticketx.train.train
        self.calls = {"search": 0, "transfer": 0}
        self.fail_at, self.forbid = fail_at, forbid
        monkeypatch.setattr(ticketx.train, "train", self._train)

    def _train(self, runs, recipe, reporter=None, done=None):
        out = []
        for run in runs:  # one network at a time, counted by the experiment it belongs to
            if self.forbid:
                raise AssertionError(f"{run.experiment} trained a network")
            self.calls[run.experiment] += 1
            if self.fail_at is not None and sum(self.calls.values()) == self.fail_at:
                raise KeyboardInterrupt  # as Ctrl-C / SIGTERM would, in the middle of the study
            out += self.real([run], recipe, reporter, done)
        return out

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _key(rows) -> set[tuple]:
    """What must match between two runs of the same study: which networks, and their accuracy."""
    return {(r["run_id"], r["arm"], str(r["round"]), str(r["seed"]), round(float(r["test_acc"]), 9)) for r in rows}


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> Path:
    """studies/ci.yaml run once, uninterrupted (the reference the other tests compare with)."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ci") / "out"
    S.run_study(S.load_study(CI), out)
    S.report(out)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(src, dst)
    return dst


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = CI.read_text()
    assert old in text, old
    path = tmp_path / "ci.yaml"
    path.write_text(text.replace(old, new))
    return path


# ---- end to end through the CLI --------------------------------------------------------------


def test_ci_study_end_to_end_and_rerun_trains_nothing(cli, tmp_path, monkeypatch):
    out = tmp_path / "out"
    code, stdout, stderr = cli("study", "run", CI, "--out", out)
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    # the matrix: targets as rows, each source, the own ticket and the baselines as columns
    assert re.search(r"round 1, 80\.\d\d% weights remaining", stderr)
    for header in ("ticket from", "digits[0-4]", "digits[0-2]", "vs own ticket", "vs random mask", "vs dense", "1 test image"):
        assert header in stderr
    assert "complete" in stderr

    rows = _rows(out / "results.csv")
    assert list(rows[0]) == S.columns()
    # 3 searches x 2 rounds; per transfer seed (4) and source: ticket + random-mask + dense; the own ticket once
    assert len(rows) == 6 + 4 * (2 * 3 + 1)
    labels = [r["arm"] for r in rows]
    assert labels.count("search") == 6
    assert labels.count("ticket") == 8 and labels.count("own-ticket") == 4
    assert labels.count("random-mask") == 8 and labels.count("dense") == 8
    assert len({r["run_id"] for r in rows}) == len(rows)
    for r in rows:
        assert 0.0 <= float(r["test_acc"]) <= 1.0
        assert "ticketx=" in r["versions"] and r["study"] == "ci"
    ticket = next(r for r in rows if r["arm"] == "ticket" and r["source"] == "digits[0-4]")
    assert (ticket["target"], ticket["source_classes"], ticket["target_classes"]) == ("digits[5-9]", "0-4", "5-9")
    assert (ticket["search_optimizer"], ticket["transfer_optimizer"], ticket["round"]) == ("adam", "adam", "1")
    assert abs(float(ticket["density"]) - 0.8) < 0.01
    assert next(r for r in rows if r["arm"] == "dense")["density"] == "1.0"

    plots = sorted((out / "plots").glob("*.png"))
    assert [p.name for p in plots] == ["accuracy-lenet-300-100-digits5-9-adam.png", "margins-lenet-300-100-digits5-9-adam.png"]
    summary = _rows(out / "summary.csv")
    assert {(r["source"], r["control"]) for r in summary} == {
        (s, a) for s in ("digits[0-4]", "digits[0-2]") for a in ("random-mask", "dense", "own-ticket")}
    for r in summary:  # each source's margin is over its own controls: mean of ticket - arm of the same cell
        diffs = []
        for cell in {y["cell"] for y in rows if y["arm"] == "ticket" and y["source"] == r["source"]}:
            mine = {x["arm"]: float(x["test_acc"]) for x in rows if x["cell"] == cell}
            if r["control"] in mine:
                diffs.append(mine["ticket"] - mine[r["control"]])
        if diffs:
            assert (int(r["tickets"]), int(r["retrains"]), r["scope"]) == (1, len(diffs), "ticket") and len(diffs) == 4
            assert float(r["margin"]) == pytest.approx(sum(diffs) / len(diffs))
            assert r["verdict"].startswith("this ticket ")  # one ticket: about that ticket only
            assert float(r["margin_low"]) <= float(r["margin_low_95"])  # adjusted for the table's family
    for p in plots:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    prov = S.load_provenance(out)
    assert prov["counts"] == {"search": 3, "transfer": 8, "networks": 34}
    assert "versions" in prov and prov["text"] == CI.read_text()
    assert all((out / "cells" / c["id"] / "done.json").exists() for c in prov["cells"])

    # Rerun: every cell is done, so nothing may train, and the results are the same.
    Counter(monkeypatch, forbid=True)
    code, _, stderr = cli("study", "run", CI, "--out", out)
    assert code == 0, stderr
    assert "11 of 11 cells already done" in stderr
    assert _rows(out / "results.csv") == rows

    # The report alone, from the folder or from the file.
    code, stdout, stderr = cli("study", "report", out)
    assert code == 0, stderr
    assert "own ticket" in stderr and stdout.strip() == str(out / "results.csv")
    code, _, stderr = cli("study", "report", CI, "--out", out, "--density", "0.5")
    assert code == 0, stderr


def test_validate_prints_cells_by_kind(cli):
    code, stdout, stderr = cli("study", "validate", CI)
    assert code == 0, stderr
    assert '"search": 3' in stdout and '"transfer": 8' in stdout
    assert "3 search cells, 8 transfer cells" in stderr


def test_every_shipped_study_validates(cli):
    files = sorted(STUDIES.glob("*.yaml"))
    assert {"quickstart.yaml", "ci.yaml", "morcos2019_vgg19.yaml", "morcos2019_resnet50.yaml",
            "cifar10_to_svhn.yaml", "deconstruct.yaml", "overparam.yaml"} <= {f.name for f in files}
    for f in files:
        code, stdout, stderr = cli("study", "validate", f)
        assert code == 0, f"{f.name}: {stderr}"
        study = S.load_study(f)
        assert study.name == f.stem
        assert S.count(study.cells)["transfer"] > 0


# ---- reruns, changes, interruptions ---------------------------------------------------------


def test_changing_one_transfer_setting_reruns_only_the_cells_it_affects(ci_run, tmp_path, monkeypatch):
    out = _copy(ci_run, tmp_path)
    before = {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/done.json")}
    calls = Counter(monkeypatch)
    S.run_study(S.load_study(_variant(tmp_path, "seeds: [0, 1, 2, 3]", "seeds: [0, 1, 2, 3, 4]")), out)
    # Seed 4 only: per source a ticket, a random mask and a dense network, and the own ticket once.
    assert calls.calls == {"search": 0, "transfer": 2 * 3 + 1}
    after = {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/done.json")}
    assert all(after[k] == v for k, v in before.items())  # finished cells untouched
    assert len(after) == len(before) + 2

    calls = Counter(monkeypatch)
    S.run_study(S.load_study(_variant(tmp_path, "length: 1ep", "length: 1ep\n  weight_decay: 0.0001")), tmp_path / "x")
    assert calls.calls["search"] > 0  # a training setting of both phases: everything is new

    calls = Counter(monkeypatch)
    S.run_study(S.load_study(_variant(tmp_path, "  own_ticket: true", "  own_ticket: true\n  train:\n    lr: 0.002")), out)
    assert calls.calls == {"search": 0, "transfer": 4 * (2 * 3 + 1)}  # transfer training only: no search reruns


@pytest.mark.parametrize("fail_at", [2, 5, 9])  # during the first search, the own-ticket search, a transfer
def test_interrupted_study_resumes_to_the_same_results(ci_run, tmp_path, monkeypatch, fail_at):
    out = tmp_path / "out"
    study = S.load_study(CI)
    calls = Counter(monkeypatch, fail_at=fail_at)
    with pytest.raises(KeyboardInterrupt):
        S.run_study(study, out)
    assert calls.total == fail_at
    monkeypatch.undo()
    calls = Counter(monkeypatch)
    S.run_study(study, out)
    # the networks finished before the interruption are not trained again
    assert calls.total == 34 - (fail_at - 1)
    S.report(out, plots=False)
    assert _key(_rows(out / "results.csv")) == _key(_rows(ci_run / "results.csv"))


def test_report_of_a_partly_done_study(ci_run, tmp_path):
    out = _copy(ci_run, tmp_path)
    transfer = next((out / "cells").glob("transfer-*"))
    (transfer / "done.json").unlink()  # as if that cell were still running
    written = S.report(out)
    assert written["cells_done"] == written["cells"] - 1
    rows = _rows(out / "results.csv")
    assert len(rows) == 34 - 3  # that cell's ticket, random mask and dense are not reported
    assert all(r["cell"] != transfer.name for r in rows)


def test_a_source_that_is_also_a_target_is_its_own_ticket(tmp_path, monkeypatch):
    text = CI.read_text().split("expect:")[0]  # its claims name the baselines this variant drops
    text = text.replace("  - digits[0-2]\n", "  - digits[5-9]\n").replace("[random-mask, dense]", "[]")
    text = text.replace("  own_ticket: true", "  own_ticket: true\n  own_ticket_init: shared")
    study = _study(tmp_path, text)
    calls = Counter(monkeypatch)
    S.run_study(study, tmp_path / "out")
    # searches: digits[0-4], digits[5-9] (also the own ticket); transfers: one ticket each, nothing twice
    assert calls.calls == {"search": 4, "transfer": 2 * 4}  # 4 transfer seeds
    _, rows = S.collect(tmp_path / "out")
    got = {(r["source"], r["arm"]) for r in rows if r["kind"] == "transfer"}
    assert got == {("digits[0-4]", "ticket"), ("digits[5-9]", "own-ticket")}


# ---- expansion ----------------------------------------------------------------------------


def _study(tmp_path: Path, text: str) -> S.Study:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return S.load_study(path)


BASE = """
model: lenet_300_100
train: {length: 2ep}
search: {prune: {rounds: 3}}
"""


def test_expansion_keys_and_counts(tmp_path):
    s = _study(tmp_path, BASE + """
transfer: {rounds: [1, 3], seeds: [0, 1], optimizer: [same, sgd], own_ticket_init: shared}
sources: [{data: digits, classes: 0-4, optimizer: [adam, sgd], seeds: [0]}, "digits[5-9]"]
targets: ["digits[5-9]", {data: digits, classes: [0, 1, 2, 3, 4]}]
""")
    cells = s.cells
    assert len({c.key for c in cells}) == len(cells) == len({c.id for c in cells})
    search = [c for c in cells if c.kind == "search"]
    transfer = [c for c in cells if c.kind == "transfer"]
    # sources: digits[0-4] adam, digits[0-4] sgd, digits[5-9] (model default: adam); each target's
    # own tickets (adam, sgd) are the same configurations: 2 data sets x 2 optimizers in all.
    assert {(c.info["source"], c.info["search_optimizer"]) for c in search} == {
        ("digits[0-4]", "adam"), ("digits[0-4]", "sgd"), ("digits[5-9]", "adam"), ("digits[5-9]", "sgd")}
    assert len(search) == 4
    assert cells[: len(search)] == search  # searches run first
    # tickets x transfer optimizers ('same' and sgd): adam/sgd 2 + sgd/sgd 1 + digits[5-9] adam/sgd 2
    assert len(transfer) == 5 * 2 * 2 * 2  # (ticket, transfer optimizer) x target x round x seed
    tickets = {(c.info["source"], c.info["search_optimizer"]) for c in search if c.info["role"] == "source"}
    for c in transfer:
        # the own ticket is retrained next to each transferred one, unless it is itself a source:
        # then the cell transferring it to its own data set trains it, once
        assert (c.own_ticket is None) == ((c.info["target"], c.info["transfer_optimizer"]) in tickets)
        assert ("dense" in c.transfer.baselines) == (c.info["round"] == 1)  # dense once per ticket/target/seed
    sgd = S.train_spec(s, "lenet_300_100", "transfer", "sgd")
    assert (sgd.optimizer, sgd.lr) == ("sgd", 0.1)  # switching optimizer without an lr: that optimizer's default
    assert S.train_spec(s, "lenet_300_100", "search", "adam").lr == pytest.approx(1.2e-3)


def test_keys_follow_the_configuration(tmp_path):
    base = BASE + "sources: ['digits[0-4]']\ntargets: ['digits[5-9]']\n"
    a = {c.key for c in _study(tmp_path, base).cells}
    assert a == {c.key for c in _study(tmp_path, "# a comment\n" + base + "description: same science\n").cells}
    b = {c.key for c in _study(tmp_path, base + "transfer: {train: {lr: 0.002}}\n").cells}
    kinds = {c.key: c.kind for c in _study(tmp_path, base).cells}
    assert {kinds[k] for k in a & b} == {"search"}  # a transfer setting changes only transfer cells
    assert {c.key for c in _study(tmp_path, base + "cpu_threads: 1\ndevice: cpu\n").cells} == a  # speed, not science


def test_per_optimizer_settings_and_channels(tmp_path):
    s = _study(tmp_path, """
model: vgg19
train: {sgd: {lr: 0.05}, adam: {lr: 0.0002}}
search: {train: {length: 3ep, adam: {length: 5ep}}, prune: {rounds: 2}}
sources: [{data: cifar10, optimizer: [sgd, adam]}, fashion-mnist]
targets: [svhn]
""")
    sgd = S.train_spec(s, "vgg19", "search", "sgd")
    adam = S.train_spec(s, "vgg19", "search", "adam")
    assert (sgd.lr, sgd.length, adam.lr, adam.length) == (0.05, "3ep", 0.0002, "5ep")
    assert S.train_spec(s, "vgg19", "transfer", "sgd").length == "160ep"  # search overrides stay in the search
    assert s.channels == 3  # fashion-mnist is grayscale: every ticket is made RGB so it fits every target


# ---- bad files: one line naming file, line and key; before any training ---------------------

GOOD = """name: bad
model: lenet_300_100
train:
  length: 1ep
search:
  prune:
    rounds: 2
transfer:
  seeds: [0]
sources:
  - data: digits
    classes: 0-4
    optimizer: adam
targets:
  - digits[5-9]
"""

BAD = [
    ("typo in a key", ("    optimizer: adam", "    optimzer: adam"), 13, "sources[0].optimzer: unknown key; did you mean 'optimizer'?"),
    ("typo at the top", ("train:", "trian:"), 3, "trian: unknown key; did you mean 'train'?"),
    ("typo in train", ("  length: 1ep", "  lenght: 1ep"), 4, "train.lenght: unknown key; did you mean 'length'?"),
    ("out of range", ("    rounds: 2", "    rounds: 0"), 7, "search.prune.rounds: Input should be greater than or equal to 1"),
    ("bad optimizer", ("optimizer: adam", "optimizer: adamw"), 13, "sources[0].optimizer[0]: Input should be 'sgd' or 'adam'"),
    ("bad type", ("  seeds: [0]", "  seeds: [zero]"), 9, "transfer.seeds[0]: Input should be a valid integer"),
    ("bad step", ("  length: 1ep", "  length: 1 epoch"), 4, "train.length: invalid step '1 epoch'"),
    ("unknown data set", ("  - digits[5-9]", "  - digitz[5-9]"), 15, "targets[0]: unknown data set 'digitz'; did you mean 'digits'?"),
    ("unknown model", ("model: lenet_300_100", "model: lenet_300_10"), 2, "model: unknown model 'lenet_300_10'; did you mean 'lenet_300_100'?"),
    ("classes out of range", ("classes: 0-4", "classes: 8-12"), 12, "sources[0].classes: class 10, 11, 12 out of range for digits"),
    ("no targets", ("  - digits[5-9]\n", "  []\n"), 14, "targets: no cells: give at least one target"),
    ("no seeds", ("  seeds: [0]", "  seeds: []"), 9, "transfer.seeds: no cells: give at least one seed"),
    ("round past the search", ("  seeds: [0]", "  seeds: [0]\n  rounds: [1, 5]"), 10, "transfer.rounds: round 5 is past the last round"),
    ("rewind after the end", ("    rounds: 2", "    rounds: 2\n    rewind: 3ep"), 8, "search.prune.rewind: rewind point 3ep is not before the end"),
    ("duplicate key", ("  length: 1ep", "  length: 1ep\n  length: 2ep"), 5, "train.length: duplicate key"),
    ("yaml syntax", ("  seeds: [0]", "  seeds: [0"), 10, "invalid YAML"),
]


@pytest.mark.parametrize("name,edit,line,message", BAD, ids=[b[0] for b in BAD])
def test_bad_study_is_rejected_before_training(cli, tmp_path, monkeypatch, name, edit, line, message):
    assert edit[0] in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(edit[0], edit[1], 1))
    Counter(monkeypatch, forbid=True)
    for command in ("validate", "run"):
        code, stdout, stderr = cli("study", command, path, "--out", tmp_path / "out") if command == "run" \
            else cli("study", command, path)
        assert code == 2, stderr
        first = stderr.strip().splitlines()[0]
        assert first.startswith(f"error: {path}:{line}: "), first
        assert message in " ".join(stderr.split()), stderr
        assert "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "out").exists()


def test_the_good_file_is_good(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert S.count(S.load_study(path).cells) == {"search": 2, "transfer": 2, "networks": 6 + 2 * 4 + 1}


def test_missing_study_file_and_folder_without_study(cli, tmp_path):
    code, _, stderr = cli("study", "validate", tmp_path / "nope.yaml")
    assert code == 2 and "study file not found" in stderr
    code, _, stderr = cli("study", "report", tmp_path)
    assert code == 2 and "holds no study" in stderr


def test_own_ticket_starts_from_an_independent_initialisation_by_default(tmp_path):
    text = BASE + """
transfer: {rounds: [1]}
sources: ["digits[0-4]"]
targets: ["digits[5-9]"]
"""
    for init, same in (("", False), ("\n  own_ticket_init: shared", True)):
        s = _study(tmp_path, text.replace("transfer: {rounds: [1]}", "transfer:\n  rounds: [1]" + init))
        src = next(c for c in s.cells if c.kind == "search" and c.info["role"] == "source")
        own = next(c for c in s.cells if c.kind == "search" and c.info["role"] == "own")
        assert (src.find.seeds[0] == own.find.seeds[0]) is same
        assert next(c for c in s.cells if c.kind == "transfer").info["own_ticket_init"] == ("shared" if same else "independent")


def test_criteria_axis_finds_one_ticket_per_criterion_with_matching_own_tickets(tmp_path):
    s = _study(tmp_path, BASE.replace("search: {prune: {rounds: 3}}", "search: {prune: {rounds: 2}, criteria: [magnitude, movement]}") + """
transfer: {rounds: [1]}
sources: ["digits[0-4]"]
targets: ["digits[5-9]"]
""")
    search = [c for c in s.cells if c.kind == "search"]
    assert sorted((c.info["role"], c.find.prune.criterion) for c in search) == [
        ("own", "magnitude"), ("own", "movement"), ("source", "magnitude"), ("source", "movement")]
    by_id = {c.id: c for c in search}
    for c in (c for c in s.cells if c.kind == "transfer"):
        # each ticket is compared with an own ticket found by the same criterion
        assert by_id[c.source].find.prune.criterion == by_id[c.own_ticket].find.prune.criterion == c.info["criterion"]


def test_unknown_criterion_is_rejected_with_a_suggestion(tmp_path):
    with pytest.raises(UsageError, match=r"s.yaml:\d+: search.criteria: unknown criterion 'movment'; did you mean 'movement'"):
        _study(tmp_path, BASE.replace("search: {prune: {rounds: 3}}", "search: {prune: {rounds: 3}, criteria: [movment]}") + """
sources: ["digits[0-4]"]
targets: ["digits[5-9]"]
""")


def test_report_writes_the_overlap_of_the_studys_tickets(ci_run):
    out = ci_run
    S.report(out, plots=False)
    rows = _rows(out / "overlap.csv")
    # three tickets (digits[0-4], digits[0-2], the own ticket on digits[5-9]): every pair once
    assert len(rows) == 3
    for r in rows:
        assert 0 <= float(r["a_kept_by_b"]) <= 1 and abs(float(r["chance_a_kept_by_b"]) - float(r["density"])) < 0.02
