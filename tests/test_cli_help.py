"""The CLI's help: option help read from the settings schemas and the registries, filled in only
when a command's help is printed (so `ticketx --help` loads neither pydantic nor the registries)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ticketx import cli as C

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["find", "transfer", "pai", "stability", "compare", "inspect", "datasets", "models"]


@pytest.fixture
def help_of(cli, monkeypatch):
    """`ticketx COMMAND --help` as one line of words (Rich's wrapping and box drawing removed)."""
    monkeypatch.setenv("COLUMNS", "400")

    def run(*command: str) -> str:
        code, out, err = cli(*command, "--help")
        assert code == 0, err
        return " ".join(out.replace("│", " ").split())

    return run


def test_help_lists_every_registered_name(help_of):
    from ticketx.baselines import BASELINES
    from ticketx.criteria import CRITERIA
    from ticketx.pai import CRITERIA as PAI

    find, transfer, pai = help_of("find"), help_of("transfer"), help_of("pai")
    assert CRITERIA.names() and BASELINES.names() and PAI.names()
    assert "One of: " + ", ".join(CRITERIA.names()) in find
    assert "of: " + ", ".join(BASELINES.names()) + "; or 'none'" in transfer
    for name in PAI.names():
        assert f"{name} ({PAI[name].cite})" in pai
    assert "snip (Lee et al. 2019)" in pai and "synflow (Tanaka et al. 2020)" in pai


@pytest.mark.parametrize("command", COMMANDS)
def test_every_placeholder_is_filled(help_of, command):
    import re

    text = help_of(command)
    assert re.search(C.PLACEHOLDER, text) is None and not re.search(r"\{\w+[.:]", text), text


def _options(command: str) -> dict[str, object]:
    import typer

    group = typer.main.get_command(C.app)
    return {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]


def test_training_options_are_the_trainspec_fields_with_their_descriptions(help_of):
    from ticketx.settings import TrainSpec

    assert set(TrainSpec.model_fields) == set(C.TRAINING_OPTIONS) - {"epochs"}
    text = help_of("find")
    for name, info in TrainSpec.model_fields.items():
        assert info.description, name
        assert " ".join(info.description.split()) in text, name
    assert "Batch size. [1<=x<=65536]" in text and "[0<x<=10]" in text  # bounds from the schema
    for command in ("find", "transfer", "pai", "stability"):
        assert set(C.TRAINING_OPTIONS) <= set(_options(command)), command


def test_pruning_options_read_prunespec(help_of):
    from ticketx.settings import PruneSpec

    text = help_of("find")
    for field in ("rounds", "rate", "head_rate", "scope", "keep_dense", "rewind", "criterion"):
        assert PruneSpec.model_fields[field].description, field
        assert " ".join(PruneSpec.model_fields[field].description.split()) in text, field
    assert "[1<=x<=100] [default: 10]" in text and "[default: 0.2]" in text
    assert "--prune-rate" in text


def test_cli_help_loads_neither_pydantic_nor_the_registries():
    code = ("import sys; sys.argv = ['ticketx', '--help']\n"
            "from ticketx.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = ['pydantic', 'ticketx.settings', 'ticketx.baselines', 'ticketx.criteria', 'ticketx.pai']\n"
            "print([m for m in heavy if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout + p.stderr


def test_pai_criterion_and_its_old_name(cli, no_data, tmp_path):
    base = ["pai", "-d", "digits", "-m", "lenet_300_100", "--densities", "0.5", "--out", tmp_path / "t.pt"]
    for flag in ("--criterion", "--method"):
        code, out, err = cli(*base, flag, "snipp")
        assert code == 2 and "did you mean 'snip'" in err and "Traceback" not in err, err
    code, _, err = cli(*base)
    assert code == 2 and "Missing option '--criterion'" in err, err
    code, _, err = cli(*base, "--criterion", "snip", "--method", "grasp")
    assert code == 2 and "--method is its old name" in err, err
    assert "--method" not in " ".join(_options("pai")["criterion"].opts)  # type: ignore[attr-defined]
    assert _options("pai")["method"].hidden  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []
