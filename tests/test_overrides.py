"""`--set key=value` on study commands: applied to the parsed file before validation, errors name the
override, recorded in the study folder (a rerun with other ones is refused), passed to every worker."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from ticketx import study as S
from ticketx.errors import UsageError
from ticketx.settings.overrides import parse_override, parse_overrides
from ticketx.study.runner import check_overrides, claim_overrides, default_folder, write_provenance

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "studies" / "ci.yaml"


@functools.cache
def _base():
    return S.load_study(CI)


def _diff(a, b, path=()):
    """The key paths where two dumped specs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in _diff(a.get(k), b.get(k), path + (k,))]
    return [path] if a != b else []


@pytest.mark.parametrize("text, path, value", [
    ("train.lr=0.01", ("train", "lr"), 0.01),
    ("transfer.seeds=[0,1,2]", ("transfer", "seeds"), [0, 1, 2]),
    ("transfer.train.lr=0.002", ("transfer", "train", "lr"), 0.002),
    ("search.prune.rounds=2", ("search", "prune", "rounds"), 2),
])
def test_an_override_changes_exactly_the_named_field(text, path, value):
    base, over = _base(), S.load_study(CI, overrides=[text])
    assert _diff(base.spec.model_dump(), over.spec.model_dump()) == [path]
    node = over.spec.model_dump()
    for p in path:
        node = node[p]
    assert node == value
    assert base.text == over.text and [o.text for o in over.overrides] == [text]


def test_values_are_yaml_and_keys_reach_list_items():
    assert parse_override("train.optimizer=adam").value == "adam"
    assert parse_override("train.lr=1.2e-3").value == pytest.approx(1.2e-3)
    assert parse_override("train.lr=1e-3").value == pytest.approx(1e-3)  # a number (PyYAML alone: a string)
    assert parse_override("train.warmup=1ep").value == "1ep"
    assert parse_override("transfer.baselines=[dense, random-mask]").value == ["dense", "random-mask"]
    assert parse_override("expect[1].within=5pt").path == ("expect", 1, "within")
    s = S.load_study(CI, overrides=["expect[1].within=5pt", "sources[1]=digits[5-7]"])
    assert s.claims[1].threshold == pytest.approx(0.05) and s.sources == ["digits[0-4]", "digits[5-7]"]


def test_what_an_override_reaches_retrains_and_nothing_else():
    base = _base()
    seeds = S.load_study(CI, overrides=["transfer.seeds=[0]"])  # transfers only: the searches are the same cells
    assert {c.key for c in seeds.cells if c.kind == "search"} == {c.key for c in base.cells if c.kind == "search"}
    one, two = ({c.key for c in s.cells if c.kind == "transfer"} for s in (seeds, base))
    assert one < two and len(one) == len(two) // 2  # seed 0's transfers are the same cells
    lr = S.load_study(CI, overrides=["transfer.train.lr=0.002"])  # every transfer retrains, no search
    assert {c.key for c in lr.cells if c.kind == "search"} == {c.key for c in base.cells if c.kind == "search"}
    assert not {c.key for c in lr.cells if c.kind == "transfer"} & two
    claims = S.load_study(CI, overrides=["expect[0].search_accuracy=50%"])  # claims are not science
    assert [c.key for c in claims.cells] == [c.key for c in base.cells]


@pytest.mark.parametrize("sets, message", [
    (["train.lr=-1"], "--set train.lr: Input should be greater than 0"),
    (["train.lrr=0.1"], "--set train.lrr: unknown key; did you mean 'lr'?"),
    (["transfer.seeds=[0,0]"], "--set transfer.seeds: seeds must be distinct"),
    (["search.prune.rewind=5ep"], "--set search.prune.rewind: rewind point 5ep is not before the end of training"),
    (["targets=[cifar11]"], "--set targets: targets[0]: unknown data set 'cifar11'; did you mean 'cifar10'?"),
    (["transfer.optimizer=adamw"], "--set transfer.optimizer:"),
    (["sources[5]=digits"], "--set sources[5]: sources has 2 items"),
    (["train.lr.x=1"], "--set train.lr.x: train.lr is float"),
    (["train.lr"], "--set train.lr: expected KEY=VALUE"),
    (["train..lr=1"], "--set train..lr: expected a key path"),
    (["transfer.seeds=[0,1"], "--set transfer.seeds: the value '[0,1' is not YAML"),
    (["train.lr=0.1", "train=x"], "--set train: also set by --set train.lr"),
])
def test_a_bad_override_fails_naming_it(cli, no_data, sets, message):
    code, _, stderr = cli("study", "validate", CI, *(a for s in sets for a in ("--set", s)))
    assert code == 2, stderr
    line = " ".join(stderr.split())
    assert f"error: {message}" in line, stderr
    assert "ci.yaml:" not in line.split("hint:")[0]  # the override, not a line of the file


def test_an_error_in_a_block_an_override_changed_names_it_too():
    with pytest.raises(UsageError, match=r"ci\.yaml:\d+: expect\[0\]: give exactly one of .* \(with --set expect\[0\]\.beats=dense\)"):
        S.load_study(CI, overrides=["expect[0].beats=dense"])


def test_the_default_folder_of_other_settings_is_another_study():
    assert default_folder(_base()) == Path("runs/ci")
    assert default_folder(S.load_study(CI, overrides=["train.lr=0.01", "transfer.seeds=[0,1]"])) == \
        Path("runs/ci+train.lr=0.01+transfer.seeds=-0-1")
    # keys that change no result keep the study's folder
    assert default_folder(S.load_study(CI, overrides=["expect[1].within=5pt", "device=cpu", "cpu_threads=2"])) == Path("runs/ci")
    assert default_folder(S.load_study(CI, overrides=["cohort=auto"])) == Path("runs/ci")  # speed, not science


def _done(out: Path, study) -> None:
    """Mark every cell done (a finished folder without training)."""
    for c in study.cells:
        (out / "cells" / c.id).mkdir(parents=True, exist_ok=True)
        (out / "cells" / c.id / "done.json").write_text(json.dumps({"key": c.key}))


def test_the_folder_records_the_overrides_and_refuses_other_ones(tmp_path, cli):
    lr = S.load_study(CI, overrides=["train.lr=0.01"])
    write_provenance(lr, tmp_path)
    assert json.loads((tmp_path / "study.json").read_text())["overrides"] == ["train.lr=0.01"]
    check_overrides(S.load_study(CI, overrides=["train.lr=1e-2"]), tmp_path)  # the same value, written otherwise
    check_overrides(S.load_study(CI, overrides=["train.lr=0.01", "expect[1].within=5pt"]), tmp_path)  # claims: not science
    with pytest.raises(UsageError, match=r"holds this study run with --set train.lr=0.01, not no --set"):
        check_overrides(_base(), tmp_path)
    with pytest.raises(UsageError, match=r"not --set train.lr=0.02"):
        write_provenance(S.load_study(CI, overrides=["train.lr=0.02"]), tmp_path)
    # the command refuses before any worker starts or anything trains
    code, _, stderr = cli("study", "run", CI, "--out", tmp_path, "--workers", "2")
    assert code == 2 and "holds this study run with --set train.lr=0.01" in " ".join(stderr.split()), stderr
    assert not (tmp_path / "logs").exists()
    # the folder itself is the study as it ran: its file and overrides
    _done(tmp_path, lr)
    code, out, stderr = cli("study", "status", tmp_path, "--json")
    assert code == 0, stderr
    code, out, stderr = cli("study", "run", tmp_path, "--no-report")
    assert code == 0 and "--set train.lr=0.01" in stderr, stderr


def test_workers_and_jobs_get_the_same_overrides(tmp_path, monkeypatch):
    import subprocess

    from ticketx.study import local, slurm

    seen = []

    class Proc:
        pid, returncode = 1, 0

        def __init__(self, cmd, **kw):
            seen.append(cmd)

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Proc)
    local.spawn_workers(CI, tmp_path, [{"device": "cpu", "threads": 1}] * 2, overrides=["train.lr=0.01", "transfer.seeds=[0]"],
                        log=lambda m: None)
    assert len(seen) == 2
    for cmd in seen:
        assert cmd[cmd.index("--set") :][:4] == ["--set", "train.lr=0.01", "--set", "transfer.seeds=[0]"]

    got = {}
    monkeypatch.setattr(slurm, "work", lambda study, out, **kw: got.setdefault("study", study))
    import submitit

    monkeypatch.setattr(submitit, "JobEnvironment", lambda: type("E", (), {"job_id": "7"})())
    slurm.SubmititWorker(str(CI), str(tmp_path), overrides=["train.lr=0.01"])()
    assert got["study"].spec.train.lr == 0.01 and [o.text for o in got["study"].overrides] == ["train.lr=0.01"]


def test_claims_changed_after_results_are_recorded_and_reported(tmp_path):
    from ticketx.study.expect import markdown

    base = _base()
    write_provenance(base, tmp_path)
    changed = S.load_study(CI, overrides=["expect[1].within=20pt"])
    assert claim_overrides(changed, tmp_path) == []  # no results yet: claims stated before the data
    _done(tmp_path, base)
    notes = claim_overrides(changed, tmp_path)
    assert len(notes) == 1 and "after results existed" in notes[0] and "--set expect[1].within=20pt" in notes[0]
    assert claim_overrides(changed, tmp_path) == notes  # recorded once
    prov = json.loads((tmp_path / "study.json").read_text())
    assert prov["claims_overridden"][0]["set"] == ["expect[1].within=20pt"]
    write_provenance(changed, tmp_path)  # a later run keeps the record
    assert json.loads((tmp_path / "study.json").read_text())["claims_overridden"] == prov["claims_overridden"]
    assert "> [!WARNING]" in markdown([], "ci", notes=notes) and "within=20pt" in markdown([], "ci", notes=notes)


def test_overrides_given_twice_or_overlapping_are_refused():
    with pytest.raises(UsageError, match="also set by"):
        parse_overrides(["train.lr=1", "train.lr=2"])
    assert len(parse_overrides(["train.lr=1", "transfer.train.lr=2"])) == 2
