"""benchmarks/: every row runs and reports its figures from ticketx's own code paths.

No timing thresholds here: machines are noisy, so the benchmark prints PASS/FAIL instead.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from benchmarks import __main__ as BM
from benchmarks import e2e as E
from benchmarks import harness as H
from benchmarks import rows as R
from benchmarks import setups as S
from conftest import REPO
from ticketx import masks as M
from ticketx.errors import UsageError

TINY = R.Sizes(data_images=64, data_batch=16, data_repeats=2, resnet_batch=2, vgg_batch=2, mask_repeats=2, mask_inner=1,
               speed_batch=2, speed_repeats=2, speed_inner=1, ticket_repeats=1, thread_repeats=2, parallel=False,
               ticket_model="resnet20")


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_json_reports_every_row(monkeypatch, capsys):
    monkeypatch.setattr(R.Sizes, "for_run", classmethod(lambda cls, quick, device: TINY))
    assert BM.main(["--quick", "--json", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    keys = [r["key"] for r in res["rows"]]
    expected = {"data", "mask_resnet20", "mask_vgg16", "prune_resnet20", "prune_vgg16", "ticket_vs_bool",
                "ticket_vs_int32", "ticket_load", "speed_fp32", "speed_bf16"}
    assert expected <= set(keys), keys
    if torch.get_num_threads() > 1:
        assert {"threads_lenet_300_100", "threads_resnet20"} <= set(keys)
    for row in res["rows"]:
        assert _positive_finite(row["ratio"]), row
        assert _positive_finite(row["ticketx"]) and _positive_finite(row["baseline"]), row
        assert (row["ok"] is None) == (row["goal"] == ""), row
    goals = {r["key"]: r["goal"] for r in res["rows"]}
    assert goals["data"] == ">= 5x" and goals["mask_vgg16"] == "<= 1.05x" and goals["prune_resnet20"] == "<= 1.0x"
    assert goals["ticket_vs_bool"] == "<= 1/8" and goals["ticket_vs_int32"] == "<= 1/32"
    # Bit-packed nested masks are smaller than the goals by construction, whatever the machine.
    ratios = {r["key"]: r["ratio"] for r in res["rows"]}
    assert ratios["ticket_vs_bool"] <= 1 / 8 and ratios["ticket_vs_int32"] <= 1 / 32
    assert res["machine"]["device"] == "cpu" and res["mode"] == "quick"
    assert res["machine"]["ticketx"] and res["machine"]["torch"] == torch.__version__  # store.versions()
    assert "ticketx bench (quick)" in err and ("PASS" in err or "FAIL" in err)
    assert "num_workers=0" in err


def test_only_selects_rows_and_rejects_unknown(monkeypatch, capsys):
    monkeypatch.setattr(R.Sizes, "for_run", classmethod(lambda cls, quick, device: TINY))
    logged: list[str] = []
    res = R.run(quick=True, device="cpu", only=["ticket"], log=logged.append)
    assert [r["key"] for r in res["rows"]] == ["ticket_vs_bool", "ticket_vs_int32", "ticket_load"]
    assert any("ticket done" in line for line in logged)
    with pytest.raises(UsageError, match="unknown bench row"):
        R.run(quick=True, device="cpu", only=["tickets"])
    assert BM.main(["--only", "tickets", "--device", "cpu"]) == 2  # one red line, usage exit code
    assert "error: unknown bench row(s) tickets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        BM.parse_args(["--e2e-seeds", "a,b"])


def test_goal_parsing_and_ratio_format():
    assert H.meets_goal(6.0, ">= 5x") is True and H.meets_goal(4.9, ">= 5x") is False
    assert H.meets_goal(1.05, "<= 1.05x") is True and H.meets_goal(1.06, "<= 1.05x") is False
    assert H.meets_goal(0.12, "<= 1/8") is True and H.meets_goal(0.13, "<= 1/8") is False
    assert H.meets_goal(1.0, "") is None
    assert H.fmt_ratio(0.084, "<= 1/8") == "1/11.9"
    assert H.fmt_ratio(1.0123, "<= 1.05x") == "1.012x"
    assert H.fmt_ratio(0.25, "", "mfu_bf16") == "25.0%"
    assert H.finite({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}


def test_make_row_flags_a_miss_within_noise():
    row = H.make_row("k", "w", 1.0, 1.0, "ms", 1.06, "<= 1.05x", ratios=[1.0, 1.06, 1.07, 1.08, 1.02])
    assert row.ok is False and row.within_noise is True and row.samples == 5 and row.ci[0] <= 1.05
    far = H.make_row("k", "w", 1.0, 1.0, "ms", 1.5, "<= 1.05x", ratios=[1.4, 1.5, 1.6])
    assert far.ok is False and far.within_noise is False


def test_interleave_alternates_and_times_every_function():
    calls: list[str] = []
    t = H.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                     repeats=2, inner=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(len(v) == 2 and all(x >= 0 for x in v) for v in t.values())


def test_saved_bytes_matches_the_file(tmp_path):
    obj = {"w": torch.randn(100, 7), "m": torch.rand(50) < 0.5}
    torch.save(obj, tmp_path / "x.pt")
    # The same archive up to its record names (the file's stem vs 'archive') and their padding.
    assert abs(R.saved_bytes(obj) - (tmp_path / "x.pt").stat().st_size) < 1024


def test_magnitude_rounds_are_ticketx_pruning_exactly():
    torch.manual_seed(0)
    w = {"a": torch.randn(40, 30), "b": torch.randn(500)}
    masks = R.magnitude_rounds(w, 3)
    for r, m in enumerate(masks, start=1):
        kept = round(1700 * 0.8**r) if r == 1 else None
        if kept is not None:
            assert M.count(m)[0] == kept  # exactly k pruned (20% of 1700)
        assert abs(M.density(m) - 0.8**r) < 2e-3
        if r > 1:
            assert M.is_subset(m, masks[r - 2])
    # The survivors are the largest weights: every kept |w| >= every pruned |w|.
    flat_w = torch.cat([w[n].abs().reshape(-1) for n in w])
    flat_m = torch.cat([masks[-1][n].reshape(-1) for n in w])
    assert flat_w[flat_m].min() >= flat_w[~flat_m].max()


def test_random_mask_keeps_exactly_the_density_per_layer():
    model = S.build_model("resnet20", 10, 3, 32)
    mask = S.random_mask(model, 0.2)
    params = dict(model.named_parameters())
    assert set(mask) == set(S.prunable_names(model))
    for n, m in mask.items():
        assert int(m.sum()) == params[n].numel() - round(0.8 * params[n].numel()), n


def test_ticketx_setup_steps_through_trains_setup(monkeypatch):
    from ticketx import train as TR

    seen = []
    real = TR.prepare
    monkeypatch.setattr(S, "prepare", lambda *a, **k: (seen.append(k), real(*a, **k))[1])
    model = S.build_model("resnet20", 10, 3, 32)
    mask = S.random_mask(model, 0.5)
    s = S.ticketx_setup("resnet20", 4, torch.device("cpu"), mask=mask)
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    s.step()
    assert seen and seen[0]["mask"] is mask
    params = dict(s.model.named_parameters())
    assert any(not torch.equal(before[n], p) for n, p in params.items())  # a real optimizer step
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in mask.items())


def test_ticket_row_with_a_small_model():
    rows = {r.key: r for r in R.bench_ticket(TINY, rounds=3, model_name="resnet20")}
    assert rows["ticket_vs_bool"].ratio < 1 / 8 and rows["ticket_vs_int32"].ratio < 1 / 32
    assert rows["ticket_vs_bool"].ok and rows["ticket_load"].ok is None
    assert _positive_finite(rows["ticket_load"].ratio)


def test_device_peak_takes_the_most_specific_name(monkeypatch):
    peak, name = H.device_peak(torch.device("cpu"), "bf16")
    assert peak is None and name == H.cpu_name()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 PCIe")
    assert H.device_peak(torch.device("cuda"), "bf16") == (756e12, "NVIDIA H100 PCIe")  # not the SXM entry
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert H.device_peak(torch.device("cuda"), "fp32")[0] == 67e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Some Future GPU")
    assert H.device_peak(torch.device("cuda"), "fp32") == (None, "Some Future GPU")


@pytest.mark.slow
def test_parallel_runs_report_throughput():
    rows = R.bench_parallel(torch.device("cpu"), TINY, cases=[("lenet_300_100", 8, 3)])
    assert [r.key for r in rows] == ["parallel_lenet_300_100"]
    assert all(_positive_finite(r.ratio) and _positive_finite(r.ticketx) for r in rows)


@pytest.mark.slow
def test_worker_is_a_module_that_runs_from_the_checkout():
    p = subprocess.run([sys.executable, "-m", "benchmarks.worker", "lenet_300_100", "4", "2", "cpu", "1"], cwd=REPO,
                       input="go\n", capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    ready, result = p.stdout.splitlines()
    assert ready == "ready" and json.loads(result)["seconds"] > 0


def test_archive_is_found_next_to_the_checkout_or_by_environment(tmp_path, monkeypatch):
    assert E.CIFAR10_JPG == REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"  # relative to the repo
    monkeypatch.setenv("TICKETX_CIFAR10_JPG", str(tmp_path / "none.tar.gz"))
    assert E.cifar10_archive() is None  # absent: the e2e falls back to labelled synthetic data
    (tmp_path / "a.tar.gz").write_bytes(b"x")
    monkeypatch.setenv("TICKETX_CIFAR10_JPG", str(tmp_path / "a.tar.gz"))
    assert E.cifar10_archive() == tmp_path / "a.tar.gz"


@pytest.mark.slow
def test_plain_imp_prunes_and_rewinds_like_ticketx():
    """The e2e baseline: torch.nn.utils.prune reaches 0.8^r of the weights."""
    from ticketx.data import ImageData

    xtr, ytr, xte, yte = E.synthetic_folder_data(40, 20)
    data = ImageData("synthetic", [str(i) for i in range(10)], xtr, ytr, xte, yte, (0.5,) * 3, (0.25,) * 3, True, 4)
    cfg = E.E2EConfig(train_per_class=4, test_per_class=2, epochs=2, rounds=2, batch_size=8)
    out = E.plain_imp(data, cfg, torch.device("cpu"), lr=0.1, momentum=0.9, weight_decay=1e-4, milestone_epoch=1)
    assert [round(d, 3) for d in out["density"]] == [1.0, 0.8, 0.64]
    assert len(out["acc"]) == 3 and all(a * 20 == round(a * 20) for a in out["acc"])  # k of the 20 test images


@pytest.mark.slow
def test_e2e_on_synthetic_data_when_the_archive_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "cifar10_archive", lambda: None)
    cfg = E.E2EConfig(train_per_class=4, test_per_class=2, epochs=2, rounds=1, batch_size=8, seeds=(0, 1))
    logged: list[str] = []
    res = E.e2e(cfg, device="cpu", log=logged.append, cache=tmp_path)
    assert res["data"].startswith("SYNTHETIC") and any("SYNTHETIC" in line for line in logged)
    assert [r["round"] for r in res["rounds"]] == [0, 1]
    assert [round(r["density"], 3) for r in res["rounds"]] == [round(r["plain_density"], 3) for r in res["rounds"]] == [1.0, 0.8]
    assert all(len(r["ticketx_acc"]) == len(r["plain_acc"]) == 2 for r in res["rounds"])
    assert _positive_finite(res["speedup"]) and len(res["ticketx_seconds"]) == 2
    acc = res["accuracy"]
    assert acc["seeds"] == 2 and acc["same"] == (abs(acc["mean_difference"]) <= acc["noise"])
    assert "end to end" in str(E.render_e2e(res).title)
    json.dumps(res)  # valid JSON


@pytest.mark.slow
def test_e2e_compiled_side_runs_find_with_compile_on(tmp_path, monkeypatch):
    import functools
    import os

    from ticketx import train as TR

    monkeypatch.setattr(E, "cifar10_archive", lambda: None)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # no C++ build in tests
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before"))  # e2e replaces it; restored afterwards
    monkeypatch.delenv("TICKETX_COMPILE", raising=False)
    modes: list = []
    real = TR.Stepper.__init__
    monkeypatch.setattr(TR.Stepper, "__init__", lambda self, *a, **k: (modes.append(k.get("compile")), real(self, *a, **k))[1])
    cfg = E.E2EConfig(train_per_class=4, test_per_class=2, epochs=2, rounds=1, batch_size=8, seeds=(0, 1), compiled=True)
    res = E.e2e(cfg, device="cpu", cache=tmp_path)
    assert modes.count("default") == 4 and modes.count(False) == 4  # 2 seeds x 2 rounds, compiled and eager
    assert "TICKETX_COMPILE" not in os.environ  # restored after each compiled search
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] != str(tmp_path / "before")  # a fresh cache: the first compile is cold
    assert len(res["compiled_seconds"]) == 2 and _positive_finite(res["compiled_speedup"])
    assert len(res["compiled_acc"]) == 2 and res["compiled_accuracy"]["seeds"] == 2
    assert "--compile on" in str(E.render_e2e(res).caption)


def test_same_within_noise_verdict():
    def rounds(tx, pl):
        return [{"ticketx_acc": a, "plain_acc": b, "ticketx_mean": sum(a) / len(a), "plain_mean": sum(b) / len(b)}
                for a, b in zip(tx, pl)]

    close = E.same_within_noise(rounds([[0.50, 0.54], [0.60, 0.62]], [[0.52, 0.55], [0.61, 0.60]]))
    assert close["same"] is True and close["noise"] > 0.01
    assert close["mean_difference"] == pytest.approx((0.565 - 0.57))  # per-seed means over rounds
    far = E.same_within_noise(rounds([[0.50, 0.51]], [[0.60, 0.61]]))
    assert far["same"] is False and far["mean_difference"] == pytest.approx(-0.10)
    one = E.same_within_noise(rounds([[0.5]], [[0.6]]))
    assert one["same"] is None and one["noise"] is None


@pytest.mark.slow
def test_ticketx_does_not_import_the_benchmarks():
    """No cycle: the installed package never imports benchmarks/, and the CLI has no bench command."""
    code = "import sys, ticketx.cli, ticketx.train; print(any(m.startswith('benchmarks') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout.strip() == "False"
    assert not (REPO / "ticketx" / "bench.py").exists()


@pytest.mark.slow
def test_cohort_rows_compare_a_cohort_step_with_one_network_steps():
    rows = {r.key: r for r in R.bench_cohort(torch.device("cpu"), TINY)}
    sizes = TINY.cohort_mlp
    assert set(rows) == {f"cohort_{m}_n{n}" for m in ("lenet_300_100", "conv4", "resnet20") for n in sizes} | {"cohort_train"}
    for row in rows.values():
        assert _positive_finite(row.ratio) and _positive_finite(row.ticketx) and _positive_finite(row.baseline), row
        assert row.samples == TINY.cohort_repeats == TINY.cohort_conv_repeats
    # Goals where `auto` forms the cohort (lenet on CPU from AUTO_MIN networks), information elsewhere.
    assert rows["cohort_lenet_300_100_n2"].goal == "" and rows["cohort_conv4_n2"].goal == ""
    assert rows["cohort_train"].goal == ">= 1x" and rows["cohort_train"].unit == "networks/s"
    assert rows["cohort_lenet_300_100_n2"].extra["per_network_ms"] > 0


def test_cohort_setup_steps_the_same_networks_as_one_after_another():
    """Both sides of a cohort row start from the same weights and masks, and both really train."""
    alone = S.one_after_another("lenet_300_100", 2, 4, torch.device("cpu"), density=0.5, shape=(1, 8, 8))
    together = S.cohort_setup("lenet_300_100", 2, 4, torch.device("cpu"), density=0.5, shape=(1, 8, 8))
    before = together.model.fc.weight.detach().clone()
    assert torch.equal(alone.model.fc.weight.detach(), before)
    alone.step()
    together.step()
    assert not torch.equal(alone.model.fc.weight.detach(), before)


def test_compile_rows_report_compile_cost_and_break_even(monkeypatch):
    """The compile row's arithmetic on probe figures: speedup, cold/cached seconds, steps to earn them back."""
    probes = []

    def fake_probe(name, batch, device, cache, repeats):
        probes.append((name, cache, repeats))
        if repeats:  # the cold probe: 4 ms eager, 3 ms compiled; 20 s to compile
            return {"first": 20.003, "mode": "default", "threads": 1, "compiled": [0.003] * 3, "eager": [0.004] * 3,
                    "compile_seconds": 20.0}
        return {"first": 2.003, "mode": "default", "threads": 1, "compiled": [0.003], "compile_seconds": 2.0}

    monkeypatch.setattr(R, "_compile_probe", fake_probe)
    rows = R.bench_compile(torch.device("cpu"), TINY, cases=(("lenet_300_100", 60),))
    (row,) = rows
    assert [p[2] for p in probes] == [TINY.compile_repeats, 0] and probes[0][1] == probes[1][1]  # one cache, cold then warm
    assert row.key == "compile_lenet_300_100" and row.ratio == pytest.approx(4 / 3)
    assert row.ticketx == pytest.approx(3.0) and row.baseline == pytest.approx(4.0)  # ms per step
    assert row.extra["break_even_steps"] == pytest.approx(2.0 / 0.001)  # the cached compile over the time saved per step
    assert "20.0 s cold, 2.0 s cached; break-even after 2,000 steps" in row.note

    monkeypatch.setattr(R, "_compile_probe", lambda *a: {**fake_probe(*a), "eager": [0.003] * 3} if a[-1] else fake_probe(*a))
    (slower,) = R.bench_compile(torch.device("cpu"), TINY, cases=(("lenet_300_100", 60),))
    assert slower.extra["break_even_steps"] is None and "never (not faster)" in slower.note


def test_compile_probe_failure_is_a_row_not_a_crash(monkeypatch):
    def broken(*a):
        raise RuntimeError("compile probe exited 1: no C++ compiler")

    monkeypatch.setattr(R, "_compile_probe", broken)
    (row,) = R.bench_compile(torch.device("cpu"), TINY, cases=(("resnet20", 2),))
    assert math.isnan(row.ratio) and "no C++ compiler" in row.note


def test_quick_bench_leaves_out_the_slow_rows_unless_named(monkeypatch):
    called = []
    monkeypatch.setattr(R, "bench_compile", lambda dev, sz: called.append("compile") or [])
    monkeypatch.setattr(R, "bench_precision", lambda dev, sz: called.append("precision") or [])
    monkeypatch.setattr(R.Sizes, "for_run", classmethod(lambda cls, quick, device: TINY))
    R.run(quick=True, device="cpu", only=["compile", "precision"])
    assert called == ["compile", "precision"]
    for name in ("bench_data", "bench_mask", "bench_ticket", "bench_speed", "bench_threads", "bench_parallel", "bench_cohort"):
        monkeypatch.setattr(R, name, lambda *a, **k: [])
    called.clear()
    R.run(quick=True, device="cpu")
    assert called == []


@pytest.mark.slow
def test_precision_rows_pair_fp32_and_bf16_trainings(monkeypatch):
    import dataclasses

    sz = dataclasses.replace(TINY, precision_seeds=2, precision_epochs=1)
    (row,) = R.bench_precision(torch.device("cpu"), sz, cases=(("lenet_300_100", "digits", 8),))
    assert row.key == "precision_lenet_300_100_digits" and len(row.extra["fp32"]) == len(row.extra["bf16"]) == 2
    assert row.extra["identical_losses"] == 0  # bf16 autocast did change the arithmetic
    assert row.extra["mean_difference"] == pytest.approx(
        sum(b - f for b, f in zip(row.extra["bf16"], row.extra["fp32"])) / 2)
    assert 0 < row.baseline <= 100 and 0 < row.ticketx <= 100 and "2 seeds x 1 epochs" in row.note
