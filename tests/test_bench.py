"""The bench runs and reports every figure; the speed work keeps behaviour (layout, threads, masks, data).

No timing thresholds here: machines are noisy, so `ticketx bench` prints PASS/FAIL instead.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from ticketx import bench as B
from ticketx import train as TR
from ticketx.data import Batches, random_crop
from ticketx.errors import UsageError
from ticketx.models import build_model

TINY = B.Sizes(data_images=64, data_batch=16, data_repeats=2, resnet_batch=2, vgg_batch=2, mask_repeats=2, mask_inner=1,
               speed_batch=2, speed_repeats=2, speed_inner=1, ticket_repeats=1, thread_repeats=2, parallel=False,
               ticket_model="resnet20")


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# ------------------------------------------------------------------------------------------
# The bench itself
# ------------------------------------------------------------------------------------------


def test_cli_bench_quick_json_reports_every_row(cli, monkeypatch):
    monkeypatch.setattr(B.Sizes, "for_run", classmethod(lambda cls, quick, device: TINY))
    code, out, err = cli("bench", "--quick", "--json", "--device", "cpu")
    assert code == 0, err
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
    assert "ticketx bench (quick)" in err and ("PASS" in err or "FAIL" in err)
    assert "num_workers=0" in err


def test_bench_only_selects_rows_and_rejects_unknown(monkeypatch):
    monkeypatch.setattr(B.Sizes, "for_run", classmethod(lambda cls, quick, device: TINY))
    logged: list[str] = []
    res = B.run(quick=True, device="cpu", only=["ticket"], log=logged.append)
    assert [r["key"] for r in res["rows"]] == ["ticket_vs_bool", "ticket_vs_int32", "ticket_load"]
    assert any("ticket done" in line for line in logged)
    with pytest.raises(UsageError, match="unknown bench row"):
        B.run(quick=True, device="cpu", only=["tickets"])


def test_goal_parsing_and_ratio_format():
    assert B._goal(6.0, ">= 5x") is True and B._goal(4.9, ">= 5x") is False
    assert B._goal(1.05, "<= 1.05x") is True and B._goal(1.06, "<= 1.05x") is False
    assert B._goal(0.12, "<= 1/8") is True and B._goal(0.13, "<= 1/8") is False
    assert B._goal(1.0, "") is None
    assert B._fmt_ratio(0.084, "<= 1/8") == "1/11.9"
    assert B._fmt_ratio(1.0123, "<= 1.05x") == "1.012x"
    assert B._fmt_ratio(0.25, "", "mfu_bf16") == "25.0%"
    assert B.finite({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}


def test_interleave_alternates_and_times_every_function():
    calls: list[str] = []
    t = B.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                     repeats=2, inner=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(len(v) == 2 and all(x >= 0 for x in v) for v in t.values())


def test_saved_bytes_matches_the_file(tmp_path):
    obj = {"w": torch.randn(100, 7), "m": torch.rand(50) < 0.5}
    torch.save(obj, tmp_path / "x.pt")
    # The same archive up to its record names (the file's stem vs 'archive') and their padding.
    assert abs(B.saved_bytes(obj) - (tmp_path / "x.pt").stat().st_size) < 1024


def test_magnitude_rounds_are_nested_at_the_right_density():
    torch.manual_seed(0)
    w = {"a": torch.randn(40, 30), "b": torch.randn(500)}
    masks = B.magnitude_rounds(w, 3)
    from ticketx import masks as M

    for r, m in enumerate(masks, start=1):
        assert abs(M.density(m) - 0.8**r) < 2e-3
        if r > 1:
            assert M.is_subset(m, masks[r - 2])


def test_ticket_row_with_a_small_model():
    rows = {r.key: r for r in B.bench_ticket(TINY, rounds=3, model_name="resnet20")}
    assert rows["ticket_vs_bool"].ratio < 1 / 8 and rows["ticket_vs_int32"].ratio < 1 / 32
    assert rows["ticket_vs_bool"].ok and rows["ticket_load"].ok is None
    assert _positive_finite(rows["ticket_load"].ratio)


def test_device_peak_table():
    peak, name = B.device_peak(torch.device("cpu"), "bf16")
    assert peak is None and name
    assert dict(B.PEAK_TFLOPS)["H100"] == (989.0, 495.0, 67.0)


def test_parallel_runs_report_throughput():
    rows = B.bench_parallel(torch.device("cpu"), TINY, cases=[("lenet_300_100", 8, 3)])
    assert [r.key for r in rows] == ["parallel_lenet_300_100"]
    assert all(_positive_finite(r.ratio) and _positive_finite(r.ticketx) for r in rows)


def test_plain_imp_prunes_and_rewinds_like_ticketx():
    """The e2e baseline: torch.nn.utils.prune reaches 0.8^r of the weights and accuracy is a fraction."""
    from ticketx.data import ImageData

    xtr, ytr, xte, yte = B.synthetic_folder_data(40, 20)
    data = ImageData("synthetic", [str(i) for i in range(10)], xtr, ytr, xte, yte, (0.5,) * 3, (0.25,) * 3, True, 4)
    cfg = B.E2EConfig(train_per_class=4, test_per_class=2, epochs=2, rounds=2, batch_size=8)
    out = B.plain_imp(data, cfg, torch.device("cpu"), lr=0.1, momentum=0.9, weight_decay=1e-4, milestone_epoch=1)
    assert [round(d, 3) for d in out["density"]] == [1.0, 0.8, 0.64]
    assert all(0 <= a <= 1 for a in out["acc"]) and len(out["acc"]) == 3


def test_e2e_on_synthetic_data_when_the_archive_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "cifar10_archive", lambda: None)
    cfg = B.E2EConfig(train_per_class=4, test_per_class=2, epochs=2, rounds=1, batch_size=8, seeds=(0, 1))
    logged: list[str] = []
    res = B.e2e(cfg, device="cpu", log=logged.append, cache=tmp_path)
    assert res["data"].startswith("SYNTHETIC") and any("SYNTHETIC" in line for line in logged)
    assert [r["round"] for r in res["rounds"]] == [0, 1]
    assert [round(r["density"], 3) for r in res["rounds"]] == [round(r["plain_density"], 3) for r in res["rounds"]] == [1.0, 0.8]
    assert all(len(r["ticketx_acc"]) == len(r["plain_acc"]) == 2 for r in res["rounds"])
    assert _positive_finite(res["speedup"]) and len(res["ticketx_seconds"]) == 2
    assert res["accuracy"]["seeds"] == 2 and res["accuracy"]["same"] in (True, False)
    assert "end to end" in str(B.render_e2e(res).title)
    json.dumps(res)  # valid JSON


def test_same_within_noise_verdict():
    def rounds(tx, pl):
        return [{"ticketx_acc": a, "plain_acc": b, "ticketx_mean": sum(a) / len(a), "plain_mean": sum(b) / len(b)}
                for a, b in zip(tx, pl)]

    close = B.same_within_noise(rounds([[0.50, 0.54], [0.60, 0.62]], [[0.52, 0.55], [0.61, 0.60]]))
    assert close["same"] is True and close["noise"] > 0.01
    assert close["mean_difference"] == pytest.approx((0.565 - 0.57))  # per-seed means over rounds
    far = B.same_within_noise(rounds([[0.50, 0.51]], [[0.60, 0.61]]))
    assert far["same"] is False and far["mean_difference"] == pytest.approx(-0.10)
    one = B.same_within_noise(rounds([[0.5]], [[0.6]]))
    assert one["same"] is None and one["noise"] is None


def test_eval_batch_size_keeps_cpu_activations_in_cache():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert TR.eval_batch_size(gpu, (10, 3, 32, 32)) == 1024
    assert TR.eval_batch_size(cpu, (10, 3, 32, 32)) == 256
    assert TR.eval_batch_size(cpu, (10, 1, 8, 8)) == 1024
    assert TR.eval_batch_size(cpu, (10, 3, 224, 224)) == 16


# ------------------------------------------------------------------------------------------
# Thread policy
# ------------------------------------------------------------------------------------------


def test_forward_macs_counts_conv_and_linear():
    lenet = build_model("lenet_300_100", 10, 1, 8)
    assert TR.forward_macs(lenet, (1, 8, 8)) == 64 * 300 + 300 * 100 + 100 * 10
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    assert TR.forward_macs(conv, (3, 5, 5)) == 4 * 25 * 3 * 9 + 100 * 2
    bn = build_model("resnet20", 10, 3, 32)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.train()
    assert TR.forward_macs(bn, (3, 32, 32)) > 40e6
    assert bn.training and all(torch.equal(before[k], v) for k, v in bn.state_dict().items())  # no BN update


def test_training_threads_policy(monkeypatch):
    monkeypatch.delenv("TICKETX_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(TR, "_TORCH_DEFAULT_THREADS", 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    lenet, resnet = build_model("lenet_300_100", 10, 1, 8), build_model("resnet20", 10, 3, 32)
    assert TR.training_threads(lenet, (1, 8, 8), 60) == 1  # tiny step: one thread
    assert TR.training_threads(resnet, (3, 32, 32), 128) is None  # big step: torch's own count
    monkeypatch.setenv("TICKETX_THREADS", "3")
    assert TR.training_threads(resnet, (3, 32, 32), 128) == 3
    monkeypatch.setenv("TICKETX_THREADS", "many")
    with pytest.raises(UsageError, match="TICKETX_THREADS"):
        TR.training_threads(resnet, (3, 32, 32), 128)
    monkeypatch.delenv("TICKETX_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert TR.training_threads(lenet, (1, 8, 8), 60) is None  # the user's choice
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # set by torch.set_num_threads
    assert TR.training_threads(lenet, (1, 8, 8), 60) is None


def test_cpu_threads_restores_and_train_leaves_the_count_alone(monkeypatch):
    from conftest import tiny_find_spec
    from ticketx.data import load_data

    before = torch.get_num_threads()
    with TR.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    seen = []
    real = TR.Stepper.__call__
    monkeypatch.setattr(TR.Stepper, "__call__", lambda self, *a, **k: (seen.append(torch.get_num_threads()), real(self, *a, **k))[1])
    monkeypatch.delenv("TICKETX_THREADS", raising=False)
    data = load_data("digits[0-4]", image_size=8)
    spec = tiny_find_spec().train
    TR.train(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu")
    assert torch.get_num_threads() == before
    expected = 1 if before > 1 and not os.environ.get("OMP_NUM_THREADS") and before == TR._TORCH_DEFAULT_THREADS else before
    assert set(seen) == {expected}


# ------------------------------------------------------------------------------------------
# Training path: layout, masks, Stepper
# ------------------------------------------------------------------------------------------


def test_mask_enforcer_keeps_channels_last_layout_and_zeros():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 32).to(memory_format=torch.channels_last)
    mask = B.random_mask(model, 0.3)
    from ticketx import masks as M

    M.apply(model, mask)
    enforce = TR.MaskEnforcer(model, mask)
    params = dict(model.named_parameters())
    for p, m in zip(enforce.params, enforce.masks):
        assert m.stride() == p.stride() and m.dtype == p.dtype
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    step = TR.Stepper(model, opt, enforce)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    for _ in range(2):
        loss = step(x, y, lr=0.05)
    assert loss.dim() == 0 and not loss.requires_grad and opt.param_groups[0]["lr"] == 0.05
    for name, m in mask.items():
        assert bool((params[name].detach()[~m] == 0).all()), name
        assert not bool((params[name].detach()[m] == 0).all()), name


def test_train_uses_channels_last_for_conv_models_and_returns_plain_layout(monkeypatch):
    from ticketx.data import ImageData
    from ticketx.spec import TrainSpec

    xtr, ytr, xte, yte = B.synthetic_folder_data(32, 20)
    data = ImageData("s", [str(i) for i in range(10)], xtr, ytr, xte, yte, (0.5,) * 3, (0.25,) * 3, True, 4)
    layouts = []
    real = TR.Stepper.__call__
    monkeypatch.setattr(TR.Stepper, "__call__", lambda self, x, *a, **k: (
        layouts.append(x.is_contiguous(memory_format=torch.channels_last)), real(self, x, *a, **k))[1])
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 32)
    mask = B.random_mask(model, 0.5)
    spec = TrainSpec(batch_size=16, length="2it", eval_every="2it", lr=0.01)
    res = TR.train(model, data, spec, mask=mask, device="cpu", snapshot_steps=(0, 1))
    assert layouts and all(layouts)
    for name, p in model.named_parameters():
        assert p.is_contiguous(), name
    for snap in res.snapshots.values():
        assert all(t.is_contiguous() for t in snap.values())
    params = dict(model.named_parameters())
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in mask.items())


def test_compile_flag_from_environment(monkeypatch):
    seen = []
    real_init = TR.Stepper.__init__

    def spy(self, *a, **k):
        seen.append(k.get("compile"))
        real_init(self, *a, **{**k, "compile": False})

    monkeypatch.setattr(TR.Stepper, "__init__", spy)
    from conftest import tiny_find_spec
    from ticketx.data import load_data

    data = load_data("digits[0-4]", image_size=8)
    spec = tiny_find_spec(train=dict(length="1it", eval_every="1it")).train
    monkeypatch.setenv("TICKETX_COMPILE", "1")
    TR.train(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu")
    monkeypatch.delenv("TICKETX_COMPILE")
    TR.train(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu")
    TR.train(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu", compile=True)
    assert seen == [True, False, True]


def test_compiled_training_does_not_recompile_between_rounds(tmp_path, monkeypatch):
    """A ticket search trains the same model object every round: one traced graph serves them all."""
    import functools

    import torch._dynamo
    from torch._dynamo.utils import counters

    from conftest import tiny_find_spec
    from ticketx.find import find

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # no C++ build in tests
    monkeypatch.setenv("TICKETX_COMPILE", "1")
    torch._dynamo.reset()
    counters.clear()
    t = find(tiny_find_spec(prune=dict(rounds=2)), tmp_path / "t.pt", device="cpu")
    assert len(t.rounds) == 3
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------
# Batches: fused normalisation, one-index crop, channels_last output
# ------------------------------------------------------------------------------------------


def _reference(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x.double() / 255 - m) / s


@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_layouts_give_identical_values(channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(40)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    kw = dict(batch_size=16, mean=mean, std=std, train=True, crop_padding=2, flip=True)
    ref = Batches(x, y, **kw)
    other = Batches(x, y, channels_last=channels_last, **kw)
    for (xa, ya), (xb, yb) in zip(ref.epoch(torch.Generator().manual_seed(3)), other.epoch(torch.Generator().manual_seed(3))):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
        assert xb.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # Evaluation batches are the normalised images themselves, to float32 rounding.
    (xe, _), = list(Batches(x, y, batch_size=40, mean=mean, std=std, train=False, channels_last=channels_last).epoch())
    assert torch.allclose(xe.double(), _reference(x, mean, std), atol=1e-5)


def test_batches_never_copy_the_images_on_cpu():
    """A memory-mapped set (Places365) must stay mapped: channels_last comes from the output, not a copy."""
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    for cl in (False, True):
        b = Batches(x, torch.arange(10), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, crop_padding=2,
                    flip=True, channels_last=cl)
        assert b.x.data_ptr() == x.data_ptr()


def test_batches_assemble_on_one_thread_and_give_the_rest_back(monkeypatch):
    seen = []
    real = torch.addcmul
    monkeypatch.setattr(torch, "addcmul", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    b = Batches(x, torch.arange(12), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, crop_padding=2, flip=True)
    with TR.cpu_threads(2):
        for _ in b.epoch(torch.Generator().manual_seed(0)):
            assert torch.get_num_threads() == 2  # the consumer's training step keeps its threads
    assert seen == [1, 1, 1]


def test_batches_bf16_output_is_the_rounded_fp32_output():
    x = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    kw = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=False)
    (f32, _), = list(Batches(x, torch.arange(8), **kw).epoch())
    (b16, _), = list(Batches(x, torch.arange(8), dtype=torch.bfloat16, channels_last=True, **kw).epoch())
    assert b16.dtype == torch.bfloat16 and torch.equal(b16, f32.to(torch.bfloat16))


def test_random_crop_on_channels_last_input_and_zero_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (5, 3, 6, 6), dtype=torch.uint8, generator=g)
    offsets = torch.tensor([[0, 0], [4, 4], [2, 2], [0, 4], [3, 1]])
    plain = random_crop(x, offsets, 2)
    assert torch.equal(random_crop(x.contiguous(memory_format=torch.channels_last), offsets, 2), plain)
    assert torch.equal(plain[2], x[2])  # offset (p, p) is the original image
    assert bool((plain[0, :, :2, :] == 0).all()) and bool((plain[0, :, :, :2] == 0).all())  # padding is zero
    assert torch.equal(plain[1, :, :4, :4], x[1, :, 2:, 2:])


# ------------------------------------------------------------------------------------------
# digits without scikit-learn's import
# ------------------------------------------------------------------------------------------


def test_digits_loads_without_importing_sklearn(tmp_path):
    code = ("import sys; from ticketx.data import load_data; d = load_data('digits', %r); "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'; print(len(d.train_x), len(d.test_x))" % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1438", "359"]
