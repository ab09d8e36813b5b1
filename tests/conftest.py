"""Shared fixtures: a tiny ticket on the embedded digits data set (seconds on a CPU), the CLI in
process, no network for data sets, and a guard that fails if any data set is loaded."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_JPG = [REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz", Path("/work/shared/data/cifar10-jpg.tar.gz")]


def tiny_find_spec(**over):
    from ticketx.settings import SearchSpec, PruneSpec, TrainSpec

    train = dict(optimizer="adam", lr=1.2e-3, batch_size=60, length="1ep", weight_decay=0.0, momentum=0.9)
    train.update(over.pop("train", {}))
    prune = dict(rounds=2, rate=0.2, scope="layerwise", rewind="0")
    prune.update(over.pop("prune", {}))
    args = dict(data="digits[0-4]", model="lenet_300_100", image_size=8, train=TrainSpec(**train), prune=PruneSpec(**prune))
    args.update(over)
    return SearchSpec(**args)


@pytest.fixture(scope="session")
def digits_ticket(tmp_path_factory) -> Path:
    """A 2-round lenet_300_100 ticket found on digits[0-4] at 8x8 px."""
    from ticketx.search import find

    out = tmp_path_factory.mktemp("ticket") / "digits04.pt"
    find(tiny_find_spec(), out, device="cpu")
    return out


def each_run(fn):
    """A stand-in for `ticketx.train.train` that calls `fn(run, recipe, reporter)` once per run handed over
    (the trainer is called with a list of runs); `fn` may call the real trainer on `[run]`."""

    def trainer(runs, recipe, reporter=None, done=None):
        out = []
        for run in runs:
            out.append(fn(run, recipe, reporter))
            if done is not None:
                done(run, out[-1])
        return out

    return trainer


def real_train_one():
    """The real trainer on one run: `real(run, recipe, reporter) -> TrainResult` (for `each_run` stand-ins)."""
    from ticketx import train as TR

    real = TR.train
    return lambda run, recipe, reporter=None: real([run], recipe, reporter)[0]


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


@pytest.fixture
def no_data(monkeypatch):
    """Fail loudly if any data set is loaded: the command must reject its input first.

    Patches the two places every load goes through, whoever calls `load_data` and however it
    was imported: the registry's loaders (digits, cifar10, ...) and the image-folder loader.
    """

    def refuse(*a, **k):
        raise AssertionError("a data set was loaded before the input was rejected")

    from ticketx.data import images, registry

    for name in registry.LOADERS:
        monkeypatch.setitem(registry.LOADERS, name, refuse)
    monkeypatch.setattr(images, "load_imagefolder", refuse)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download: every torchvision fetch fails as it does without network; $TICKETX_DATA is a temp folder."""
    from urllib.error import URLError

    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.mnist as mnist
    import torchvision.datasets.places365 as places365
    import torchvision.datasets.svhn as svhn
    import torchvision.datasets.utils as utils

    def fail(*args, **kwargs):
        raise URLError("[Errno 101] Network is unreachable")

    for module, name in [
        (cifar, "download_and_extract_archive"),
        (mnist, "download_and_extract_archive"),
        (places365, "download_and_extract_archive"),
        (svhn, "download_url"),
        (utils, "download_url"),
        (utils, "download_and_extract_archive"),
    ]:
        monkeypatch.setattr(module, name, fail)
    # Never fall back to the user's real cache folder.
    monkeypatch.setenv("TICKETX_DATA", str(tmp_path / "env-root"))


@pytest.fixture
def no_md5(monkeypatch):
    """Tiny data files have the real layout but not the real checksums: accept any existing file."""
    import os

    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.places365 as places365
    import torchvision.datasets.svhn as svhn

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    for module in (cifar, svhn, places365):
        monkeypatch.setattr(module, "check_integrity", exists)


@pytest.fixture
def one_thread():
    """Tiny nets: one CPU thread is much faster than two on shared cores (and deterministic).
    A module takes it for every test with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def child_env() -> dict[str, str]:
    """The environment of a `python -m ticketx` child process: one thread, this checkout first on the path."""
    env = dict(os.environ, TICKETX_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def worker_events(out: Path, what: str) -> Counter:
    """How many times each cell had event `what` (start, done, takeover) in all worker logs of study folder `out`."""
    n: Counter = Counter()
    for log in (out / "logs").glob("*.log"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3] == what:
                n[parts[4]] += 1
    return n
