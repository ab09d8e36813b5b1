"""--compile off|auto|on: parsing, what `auto` turns on (never under --deterministic), CUDA graphs for
small steps on CUDA, and a compiled search that compiles once for all its rounds."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from ticketx import runtime
from ticketx import train as TR
from ticketx.errors import UsageError
from ticketx.models import build_model


def test_compile_mode_parses_values_bools_and_the_environment(monkeypatch):
    assert [runtime.compile_mode(v) for v in ("off", "AUTO", " on ", True, False)] == ["off", "auto", "on", "on", "off"]
    monkeypatch.delenv("TICKETX_COMPILE", raising=False)
    assert runtime.compile_mode() == "auto"  # unset
    for env, mode in (("1", "on"), ("0", "off"), ("", "auto"), ("off", "off"), ("on", "on")):
        monkeypatch.setenv("TICKETX_COMPILE", env)
        assert runtime.compile_mode() == mode, env
    monkeypatch.setenv("TICKETX_COMPILE", "yes")
    with pytest.raises(UsageError, match="TICKETX_COMPILE must be one of off, auto, on, got 'yes'"):
        runtime.compile_mode()
    with pytest.raises(UsageError, match="--compile must be one of off, auto, on, got '1'"):
        runtime.compile_mode("1")  # 1/0 are the environment variable's old spelling only


def test_auto_compiles_only_where_the_table_says_and_never_when_deterministic(monkeypatch):
    model = build_model("lenet_300_100", 10, 1, 8)
    before = torch.are_deterministic_algorithms_enabled()
    torch._C._set_deterministic_algorithms(False)  # an earlier test in this process may have left it on
    try:
        assert TR.COMPILE_AUTO["cpu"] is False  # measured not to pay on CPU (README "Performance")
        assert TR.compile_plan("auto", "cpu", model) is None
        assert TR.compile_plan("off", "cpu", model) is None
        assert TR.compile_plan("on", "cpu", model) == "default"
        monkeypatch.setitem(TR.COMPILE_AUTO, "cpu", True)
        assert TR.compile_plan("auto", "cpu", model) == "default"
        torch._C._set_deterministic_algorithms(True, warn_only=True)  # what runtime.set_deterministic(True) flips
        assert runtime.deterministic_on()
        assert TR.compile_plan("auto", "cpu", model) is None  # --deterministic: nothing switched on by default
        assert TR.compile_plan("on", "cpu", model) == "default"  # asked for explicitly: it is the user's choice
    finally:
        torch._C._set_deterministic_algorithms(before, warn_only=True)


def test_cuda_graphs_only_for_small_steps_on_cuda():
    small = build_model("lenet_300_100", 10, 1, 28)
    big = build_model("vgg16", 10, 3, 32)
    assert TR.compile_plan("on", torch.device("cuda"), small, (1, 28, 28), 60) == "reduce-overhead"
    assert TR.compile_plan("on", torch.device("cuda"), big, (3, 32, 32), 128) == "default"  # ~1.2 TFLOP a step
    assert TR.compile_plan("on", "cpu", small, (1, 28, 28), 60) == "default"  # CUDA graphs are CUDA's
    assert TR.compile_plan("on", torch.device("cuda"), small) == "default"  # no shape: no FLOP count


def test_stepper_compiled_mode_and_eager_default():
    model = build_model("lenet_300_100", 10, 1, 8)
    spec = TR.TrainSpec(optimizer="adam", lr=1e-3, batch_size=8, length="1ep")
    eager = TR.prepare(model, spec, compile="off")
    assert eager.stepper.compile_mode is None and eager.stepper.forward is model
    assert TR.prepare(model, spec, compile=False).stepper.forward is model


def test_cli_compile_option(monkeypatch):
    from ticketx.cli import app

    monkeypatch.setenv("TICKETX_COMPILE", "auto")  # restored after the test
    res = CliRunner().invoke(app, ["find", "-d", "digits", "-m", "lenet_300_100", "--compile", "sometimes"])
    assert res.exit_code != 0
    assert "--compile must be one of off, auto, on, got 'sometimes'" in str(res.exception) + res.output
    from ticketx.cli import _compile

    _compile("off")
    import os

    assert os.environ["TICKETX_COMPILE"] == "off"  # what worker processes inherit
    _compile(None)
    assert os.environ["TICKETX_COMPILE"] == "off"


@pytest.mark.slow
def test_compiled_search_compiles_once_for_every_round(tmp_path, monkeypatch):
    """Masks and rewinds change the parameters in place: round 1 and 2 reuse round 0's compiled step."""
    from torch._dynamo.utils import counters

    from conftest import tiny_find_spec
    from ticketx.search import find

    monkeypatch.setenv("TICKETX_COMPILE", "on")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    counters.clear()
    logs: list[str] = []

    from ticketx.ui import Reporter

    class Collect(Reporter):  # the plain reporter, collecting its log lines
        def log(self, msg: str) -> None:
            logs.append(msg)

    ticket = find(tiny_find_spec(), tmp_path / "t.pt", device="cpu", reporter=Collect())
    assert ticket.num_rounds == 2
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])  # 3 rounds, one compilation
    assert not counters["recompiles"], dict(counters["recompiles"])
    said = [m for m in logs if "torch.compile" in m]
    assert len(said) == 3 and str(tmp_path / "inductor") in said[0]  # one line per round: compile time, cache
    assert all(0.2 <= r["test_acc"] <= 1.0 for r in ticket.rounds)  # it learned (5 classes: chance is 0.2)
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_smoke.sh)")
def test_cuda_graph_step_keeps_masks_and_does_not_recompile_across_rounds():
    from torch._dynamo.utils import counters

    from benchmarks.setups import random_mask

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = build_model("lenet_300_100", 10, 1, 28)
    spec = TR.TrainSpec(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=60, length="1ep")
    x, y = torch.randn(60, 1, 28, 28, device="cuda"), torch.randint(0, 10, (60,), device="cuda")
    masks = [random_mask(model, density, seed=r) for r, density in enumerate((0.5, 0.25))]  # drawn on the CPU
    for mask in masks:
        setup = TR.prepare(model, spec, mask=mask, device="cuda", compile="on", sample_shape=(1, 28, 28))
        assert setup.stepper.compile_mode == "reduce-overhead"
        losses = [float(setup.stepper(x, y)) for _ in range(5)]
        assert all(torch.isfinite(torch.tensor(losses)))
        params = dict(model.named_parameters())
        for name, m in mask.items():
            assert bool((params[name][~m.to("cuda")] == 0).all()), name
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    torch._dynamo.reset()


@pytest.mark.parametrize("command", [["find"], ["transfer"], ["stability"], ["study", "run"]])
def test_every_training_command_takes_compile(command):
    from ticketx.cli import app

    res = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "--compile" in res.output and "off|auto|on" in res.output
