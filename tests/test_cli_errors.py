"""Every bad input: exact exit code, one error line (plus an optional hint), no traceback, no files.

Each case runs `ticketx.cli.main` in-process. Cases marked `before_data` must be rejected before
any data set is loaded (that is, before any work starts): loading one fails the test.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch

FIND = ["find", "-d", "digits", "-m", "lenet_300_100", "--device", "cpu", "--epochs", "2"]
FIND_DIGITS = ["find", "-m", "lenet_300_100", "--device", "cpu", "--epochs", "2"]

# (id, argv after `ticketx` ({out} = output file in a fresh folder), exit code, phrase, rejected before data)
CASES = [
    ("rate-negative", [*FIND, "--prune-rate", "-0.1"], 2, "rate: Input should be greater than 0", True),
    ("rate-one", [*FIND, "--prune-rate", "1"], 2, "rate: Input should be less than 1", True),
    ("head-rate", [*FIND, "--head-rate", "1.5"], 2, "head_rate", True),
    ("zero-rounds", [*FIND, "--rounds", "0"], 2, "rounds: Input should be greater than or equal to 1", True),
    ("unknown-data", [*FIND_DIGITS, "-d", "digitz"], 2, "unknown data set 'digitz'; did you mean 'digits'?", True),
    ("unknown-model", ["find", "-d", "digits", "-m", "lenet_300_10"], 2, "did you mean 'lenet_300_100'?", True),
    ("classes-out-of-range", [*FIND_DIGITS, "-d", "digits[0-12]"], 2, "class 10, 11, 12 out of range for digits", True),
    ("reversed-subset", [*FIND_DIGITS, "-d", "digits[3-1]"], 2, "reversed range 3-1", True),
    ("subset-markup", [*FIND_DIGITS, "-d", "digits[a]"], 2, "'digits[a]': bad class selector 'a'", True),
    ("model-markup", ["find", "-d", "digits", "-m", "lenet[/x]"], 2, "unknown model 'lenet[/x]'", True),
    ("bad-rewind", [*FIND, "--rewind", "3xx"], 2, "invalid step '3xx'", True),
    ("epochs-not-a-number", [*FIND[:-2], "--epochs", "abc"], 2, "Invalid value for '--epochs'", True),
    ("epochs-negative", [*FIND[:-2], "--epochs", "-1"], 2, "--epochs must be positive", True),
    ("length-without-unit", [*FIND[:-2], "--length", "5"], 2, "give a unit", True),
    ("epochs-and-length", [*FIND, "--length", "2ep"], 2, "either --epochs or --length", True),
    ("milestones", [*FIND, "--milestones", "3x"], 2, "invalid step '3x'", True),
    ("eval-every-zero", [*FIND, "--eval-every", "0"], 2, "evaluation interval must be positive", True),
    ("optimizer", [*FIND, "--optimizer", "rmsprop"], 2, "unknown optimizer 'rmsprop'", True),
    ("scope", [*FIND, "--scope", "bogus"], 2, "scope: Input should be 'global' or 'layerwise'", True),
    ("lr", [*FIND, "--lr", "-1"], 2, "lr: Input should be greater than 0", True),
    ("batch-size", [*FIND, "--batch-size", "0"], 2, "batch_size", True),
    ("precision", [*FIND, "--precision", "fp8"], 2, "precision", True),
    ("val-split", [*FIND, "--val-split", "1"], 2, "val_split", True),
    ("seed", [*FIND, "--seed", "-1"], 2, "seed", True),
    ("image-size", [*FIND, "--image-size", "2"], 2, "image_size", True),
    ("device-unknown", [*FIND[:-4], "--device", "tpu", "--epochs", "2"], 2, "invalid device 'tpu'", True),
    ("keep-dense", [*FIND, "--keep-dense", "fc.weight,foo.weight"], 2, "--keep-dense names unknown tensors: foo.weight", True),
    ("rewind-after-end", [*FIND, "--rewind", "5ep"], 2, "rewind point 5ep is not before the end of training", True),
    # mixed units need the data set's size: rejected after loading it, before training or writing
    ("rewind-after-end-it", [*FIND, "--rewind", "5000it"], 2, "is not before the end of training", False),
    ("unknown-option", [*FIND, "--bogus"], 2, "No such option: --bogus", True),
    ("missing-option", ["find", "-m", "lenet_300_100"], 2, "Missing option '--data'", True),
    ("unknown-command", ["fnd"], 2, "No such command 'fnd'", True),
    ("out-is-a-folder", [*FIND, "--out", "{dir}"], 2, "is a folder", True),
]
if not torch.cuda.is_available():
    CASES.append(("device-cuda", [*FIND[:-4], "--device", "cuda", "--epochs", "2"], 2, "CUDA is not available", True))


def test_no_data_guard_refuses_every_way_of_loading(no_data, tmp_path):
    # The guard must bite whoever loads: load_data itself, find's own import of it, an image folder.
    import ticketx.search
    from ticketx.data import load_data

    for load in (lambda: load_data("digits"), lambda: ticketx.search.load_data("cifar10[0-1]", tmp_path),
                 lambda: load_data(f"imagefolder:{tmp_path}")):
        with pytest.raises(AssertionError, match="loaded before the input was rejected"):
            load()


def check_one_error(code: int, err: str, expected_code: int, phrase: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == expected_code, err
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith("error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    assert phrase in lines[0], err


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv,code,phrase,before_data", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_find_input(cli, request, tmp_path, argv, code, phrase, before_data):
    if before_data:
        request.getfixturevalue("no_data")
    out = tmp_path / "run" / "t.pt"
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    if argv[0] == "find" and "--out" not in argv:
        argv += ["--out", str(out)]
    got, stdout, err = cli(*argv)
    check_one_error(got, err, code, phrase)
    assert stdout == ""
    assert files_in(tmp_path) == [], "a rejected command left files behind"


def test_unwritable_out_folder(cli, no_data, monkeypatch, tmp_path):
    # Tests run as root, where chmod cannot make a folder read-only: refuse temp files there.
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve().is_relative_to(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    code, _, err = cli(*FIND, "--out", locked / "sub" / "t.pt")
    check_one_error(code, err, 1, "permission denied")
    assert files_in(tmp_path) == ["locked"]


def test_existing_file_that_is_not_this_search(cli, no_data, tmp_path):
    out = tmp_path / "t.pt"
    out.write_bytes(b"precious results")
    code, _, err = cli(*FIND, "--out", out)
    check_one_error(code, err, 2, "already exists and was not made by this search")
    assert out.read_bytes() == b"precious results"
    assert files_in(tmp_path) == ["t.pt"]


# ---- inspect: files that are missing, damaged, foreign, newer or crafted ----

class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(folder: Path, ticket: Path) -> dict[str, Path]:
    data = ticket.read_bytes()
    files = {}
    files["truncated"] = folder / "truncated.pt"
    files["truncated"].write_bytes(data[: len(data) // 3])
    flipped = bytearray(data)
    for i in range(len(flipped) // 2, len(flipped) // 2 + 64):
        flipped[i] ^= 0xFF
    files["corrupted"] = folder / "corrupted.pt"
    files["corrupted"].write_bytes(bytes(flipped))
    files["text"] = folder / "notes.pt"
    files["text"].write_text("not a ticket\n")
    files["foreign"] = folder / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, files["foreign"])
    raw = torch.load(ticket, weights_only=True)
    raw["format_version"] = 99
    files["newer"] = folder / "newer.pt"
    torch.save(raw, files["newer"])
    raw = torch.load(ticket, weights_only=True)
    name = raw["names"][0]
    raw["rewind"][name] = raw["rewind"][name][:, :-1].clone()
    files["shapes"] = folder / "shapes.pt"
    torch.save(raw, files["shapes"])
    raw = torch.load(ticket, weights_only=True)
    del raw["meta"]["model"]
    raw["meta"]["train"] = "adam"
    files["meta"] = folder / "meta.pt"
    torch.save(raw, files["meta"])
    return files


INSPECT_CASES = [
    ("truncated", 1, "truncated, corrupted or not a ticketx file"),
    ("corrupted", 1, "corrupted"),
    ("text", 1, "truncated, corrupted or not a ticketx file"),
    ("foreign", 1, "is not a ticketx ticket"),
    ("newer", 1, "format version 99"),
    ("shapes", 1, "mask and rewind weights disagree for: fc_layers.0.weight"),
    ("meta", 1, "ticket metadata is missing or malformed: model, train"),
]


@pytest.mark.parametrize("kind,code,phrase", INSPECT_CASES, ids=[c[0] for c in INSPECT_CASES])
def test_bad_ticket_file(cli, no_data, digits_ticket, tmp_path, kind, code, phrase):
    path = _bad_files(tmp_path, digits_ticket)[kind]
    for argv in (["inspect", path], ["inspect", "--json", path],
                 ["transfer", path, "--to", "digits", "--device", "cpu", "--out", tmp_path / "o"],
                 ["transfer", digits_ticket, "--against", path, "--to", "digits", "--device", "cpu", "--out", tmp_path / "o"]):
        got, stdout, err = cli(*argv)
        check_one_error(got, err, code, phrase)
        assert stdout == ""
    assert not (tmp_path / "o").exists()


def test_inspect_missing_and_folder(cli, tmp_path):
    code, _, err = cli("inspect", tmp_path / "nope.pt")
    check_one_error(code, err, 2, "ticket not found")
    code, _, err = cli("inspect", tmp_path)
    check_one_error(code, err, 2, "is a folder")


def test_malicious_pickle_never_runs(cli, tmp_path):
    marker = tmp_path / "pwned"
    import pickle

    zipped, raw2, raw4 = tmp_path / "evil.pt", tmp_path / "evil-p2.pt", tmp_path / "evil-p4.pt"
    torch.save({"format": "ticketx-ticket", "format_version": 1, "payload": _Evil(str(marker))}, zipped)
    raw2.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
    raw4.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=4))
    for path, phrase in ((zipped, "refusing to load"), (raw2, "refusing to load"), (raw4, "not a ticketx file")):
        code, _, err = cli("inspect", path)
        check_one_error(code, err, 1, phrase)
        assert not marker.exists(), "loading a ticket executed code"
    assert "asks to import posix.system" in cli("inspect", zipped)[2]


# ---- transfer ----

@pytest.fixture
def mismatched_ticket(digits_ticket, tmp_path) -> Path:
    """The ticket with one tensor of another shape everywhere (consistent file, wrong model)."""
    raw = torch.load(digits_ticket, weights_only=True)
    name = raw["names"][0]
    old = raw["shapes"][name]
    raw["shapes"][name] = [old[0], old[1] + 1]
    raw["rewind"][name] = torch.zeros(old[0], old[1] + 1)
    for group in raw.get("extras", {}).values():  # per-weight extras (toward_zero) follow the shape
        if name in group:
            group[name] = torch.zeros(old[0], old[1] + 1, dtype=group[name].dtype)
    # re-encode round 1 and 2 masks for the new size: every weight kept (valid nesting)
    from ticketx import ticket as ticketfile

    total = sum(int(torch.Size(s).numel()) for s in raw["shapes"].values())
    packed, bits = ticketfile.encode([torch.ones(total, dtype=torch.bool)] * len(raw["mask_bits"]))
    raw["masks"], raw["mask_bits"] = packed, bits
    path = tmp_path / "mismatch.pt"
    torch.save(raw, path)
    return path


def transfer_cases(ticket: Path, tmp: Path) -> list[tuple[list, int, str]]:
    t = ["transfer", ticket, "--to", "digits[5-9]", "--device", "cpu", "--epochs", "1", "--out", tmp / "out"]
    return [
        (["transfer", tmp / "nope.pt", "--to", "digits", "--out", tmp / "out"], 2, "ticket not found"),
        ([*t[:2], "--to", "digitz", *t[4:]], 2, "did you mean 'digits'?"),
        ([*t, "--round", "7"], 2, "round 7 is not in the ticket (rounds 0..2)"),
        ([*t, "--round", "x"], 2, "--round expects round numbers"),
        ([*t, "--round", "1", "--density", "0.5"], 2, "only one of --round, --density, --weights and --rounds"),
        ([*t, "--density", "1.5"], 2, "density"),
        ([*t, "--baselines", "random-mask,bogus"], 2, "baselines"),
        ([*t, "--seeds", "0,0"], 2, "seeds"),
        ([*t, "--seeds", "a"], 2, "--seeds expects integers"),
        ([*t, "--model", "conv4"], 2, "model: ticket 'lenet_300_100' vs requested 'conv4'"),
        ([*t, "--optimizer", "adamw"], 2, "unknown optimizer 'adamw'; did you mean 'adam'?"),
        ([*t, "--against", tmp / "nope.pt"], 2, "own ticket not found"),
        ([*t[:-2], "--out", tmp / "file.txt"], 2, "file.txt"),
    ] + ([] if torch.cuda.is_available() else [([*t[:4], "--device", "cuda", *t[6:]], 2, "CUDA is not available")])


def test_bad_transfer_input(cli, no_data, digits_ticket, tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    for argv, code, phrase in transfer_cases(digits_ticket, tmp_path):
        got, stdout, err = cli(*argv)
        check_one_error(got, err, code, phrase)
        assert stdout == "", argv
        assert files_in(tmp_path) == ["file.txt"], (argv, files_in(tmp_path))


def test_transfer_rejects_mismatched_tensors(cli, no_data, mismatched_ticket, tmp_path):
    code, _, err = cli("transfer", mismatched_ticket, "--to", "digits[5-9]", "--device", "cpu", "--out", tmp_path / "o")
    check_one_error(code, err, 1, "does not match model 'lenet_300_100'")
    assert "fc_layers.0.weight: ticket (300, 65) vs model (300, 64)" in err
    assert not (tmp_path / "o").exists()


# ---- study files ----

STUDY_OK = """\
name: s
model: lenet_300_100
image_size: 8
device: cpu
train:
  length: 1ep
sources:
  - digits[0-4]
targets:
  - digits[5-9]
"""

STUDY_CASES = [
    ("yaml-syntax", "name: s\nmodel: [lenet_300_100\n", 2, "invalid YAML"),
    ("unknown-key", STUDY_OK + "modle: conv4\n", 2, "modle"),
    ("no-cells", STUDY_OK.replace("targets:\n  - digits[5-9]", "targets: []"), 2, "no cells"),
    ("rate", STUDY_OK + "search:\n  prune:\n    rate: 1.5\n", 2, "rate"),
    ("unknown-data", STUDY_OK.replace("digits[5-9]", "digitz"), 2, "did you mean 'digits'?"),
    ("classes", STUDY_OK.replace("digits[5-9]", "digits[5-19]"), 2, "out of range"),
    ("unknown-model", STUDY_OK.replace("model: lenet_300_100", "model: lenet_300_10"), 2, "did you mean 'lenet_300_100'?"),
    ("bad-step", STUDY_OK.replace("length: 1ep", "length: 1xp"), 2, "invalid step"),
    ("not-a-mapping", "- just\n- a list\n", 2, ""),
    ("empty", "", 2, ""),
]


@pytest.mark.parametrize("text,code,phrase", [c[1:] for c in STUDY_CASES], ids=[c[0] for c in STUDY_CASES])
def test_bad_study_file(cli, no_data, tmp_path, text, code, phrase):
    pytest.importorskip("ticketx.study")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    for command in (["study", "validate", path], ["study", "run", path, "--out", tmp_path / "out"]):
        got, stdout, err = cli(*command)
        check_one_error(got, err, code, phrase)
        assert "s.yaml" in err, err
        assert stdout == ""
    assert files_in(tmp_path) == ["s.yaml"]


def test_missing_study_file(cli, tmp_path):
    pytest.importorskip("ticketx.study")
    code, _, err = cli("study", "run", tmp_path / "nope.yaml", "--out", tmp_path / "out")
    check_one_error(code, err, 2, "nope.yaml")
    assert files_in(tmp_path) == []


def test_invert_of_an_imp_ticket_is_a_one_line_usage_error(cli, digits_ticket, tmp_path):
    code, _, stderr = cli("transfer", digits_ticket, "--to", "digits[5-9]", "--baselines", "invert", "--out", tmp_path / "o")
    assert code == 2 and "defined for prune-at-init tickets" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "o").exists()


def test_a_study_with_invert_is_refused_at_validation(cli, tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "studies" / "ci.yaml").read_text()
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("baselines: [random-mask, dense]", "baselines: [random-mask, invert]"))
    code, _, stderr = cli("study", "validate", path)
    assert code == 2 and "s.yaml:" in stderr and "IMP searches" in stderr
