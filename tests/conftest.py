"""Shared fixtures: a tiny ticket on the embedded digits data set (seconds on a CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_JPG = [REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz", Path("/work/shared/data/cifar10-jpg.tar.gz")]


def tiny_find_spec(**over):
    from ticketx.spec import FindSpec, PruneSpec, TrainSpec

    train = dict(optimizer="adam", lr=1.2e-3, batch_size=60, length="1ep", weight_decay=0.0, momentum=0.9)
    train.update(over.pop("train", {}))
    prune = dict(rounds=2, rate=0.2, scope="layerwise", rewind="0")
    prune.update(over.pop("prune", {}))
    args = dict(data="digits[0-4]", model="lenet_300_100", image_size=8, train=TrainSpec(**train), prune=PruneSpec(**prune))
    args.update(over)
    return FindSpec(**args)


@pytest.fixture(scope="session")
def digits_ticket(tmp_path_factory) -> Path:
    """A 2-round lenet_300_100 ticket found on digits[0-4] at 8x8 px."""
    from ticketx.find import find

    out = tmp_path_factory.mktemp("ticket") / "digits04.pt"
    find(tiny_find_spec(), out, device="cpu")
    return out


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `ticketx ARGS` in-process through cli.main (the real error handling): (code, stdout, stderr)."""
    from ticketx import cli as cli_mod

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["ticketx", *map(str, args)])
        code = 0
        try:
            cli_mod.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run
