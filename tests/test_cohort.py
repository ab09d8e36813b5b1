"""ticketx.cohort: N runs trained in one step follow their one-network trajectories, keep their masks,
statistics and data order, resume exactly after a kill, and fail alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketx import cohort as C
from ticketx import masks as M
from ticketx import pruning
from ticketx import train as TR
from ticketx.data import ImageData, load_data
from ticketx.errors import TicketxError, UsageError
from ticketx.models import build_model, prunable_names
from ticketx.settings import TrainSpec

RTOL = 1e-4  # fp32 on CPU: batched matmuls and convolutions round differently from one network's


class SmallBN(nn.Module):
    """A small conv net with batch norm: conv-BN-ReLU twice (the second strided), pool, linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _digits() -> ImageData:
    return load_data("digits[0-4]", image_size=8)


def _images(n_train: int = 256, n_test: int = 64, size: int = 12) -> ImageData:
    g = torch.Generator().manual_seed(0)
    y = lambda n: torch.arange(n) % 10  # noqa: E731
    x = lambda n: (torch.randint(0, 200, (n, 3, size, size), generator=g) + 5 * y(n).view(-1, 1, 1, 1)).to(torch.uint8)  # noqa: E731
    return ImageData("s", [str(i) for i in range(10)], x(n_train), y(n_train), x(n_test), y(n_test),
                     (0.5,) * 3, (0.25,) * 3, True, 2)


def _mask(model: nn.Module, density: float, seed: int) -> M.Mask:
    params = dict(model.named_parameters())
    dense = M.ones_like({n: params[n] for n in prunable_names(model)})
    return pruning.prune_random(None, dense, 1 - density, scope="layerwise", generator=torch.Generator().manual_seed(seed))


def _lenet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet_300_100", 5, 1, 8)


def _bn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return SmallBN()


def _runs(make, seeds, data_seeds, masks=None, **kw) -> list[TR.Run]:
    masks = masks or [None] * len(seeds)
    return [TR.Run.of(make(s), m, data_seed=d, label=f"run {s}", **kw) for s, d, m in zip(seeds, data_seeds, masks)]


class _Losses:
    """Every step's loss of every run: one list per one-network Stepper, one column per cohort run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.solo: dict[int, list[float]] = {}
        self.cohort: list[list[float]] = []
        self._alive: list[object] = []  # keep every Stepper alive: a freed one's id() can be reused by the next
        real_solo, real_cohort = TR.Stepper.__call__, C.Step.__call__

        def solo(stepper, x, y, lr=None):
            loss = real_solo(stepper, x, y, lr)
            if id(stepper) not in self.solo:
                self._alive.append(stepper)
            self.solo.setdefault(id(stepper), []).append(float(loss))
            return loss

        def many(step, x, y, lr, shared):
            losses = real_cohort(step, x, y, lr, shared)
            self.cohort.append(losses.tolist())
            return losses

        monkeypatch.setattr(TR.Stepper, "__call__", solo)
        monkeypatch.setattr(C.Step, "__call__", many)

    def solo_runs(self) -> list[list[float]]:
        return list(self.solo.values())

    def cohort_runs(self) -> list[list[float]]:
        return [list(col) for col in zip(*self.cohort)]


def _compare(solo: list[TR.TrainResult], together: list[TR.TrainResult], rtol: float = RTOL) -> None:
    for a, b in zip(solo, together):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert list(sa) == list(sb)
        for k in sa:
            if sa[k].is_floating_point():
                torch.testing.assert_close(sb[k], sa[k], rtol=rtol, atol=1e-5, msg=k)
            else:  # BatchNorm's num_batches_tracked
                assert torch.equal(sb[k], sa[k]), k
        assert [h["step"] for h in a.history] == [h["step"] for h in b.history]
        assert [h["loss"] for h in b.history] == pytest.approx([h["loss"] for h in a.history], rel=rtol)


def test_lenet_adam_cohort_of_three_follows_three_single_runs_step_by_step(monkeypatch):
    """N = 3 (two data seeds: one shared batch and one of its own) vs three N = 1 runs, 20 Adam steps."""
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="20it", eval_every="10it", weight_decay=1e-4)
    rec = _Losses(monkeypatch)
    masks = [_mask(_lenet(0), 0.3, 0), None, _mask(_lenet(0), 0.1, 2)]
    solo = TR.train(_runs(_lenet, [0, 1, 2], [5, 5, 6], masks), TR.Recipe.of(data, spec, "cpu"))
    together = TR.train(_runs(_lenet, [0, 1, 2], [5, 5, 6], masks), TR.Recipe.of(data, spec, "cpu", cohort=3))
    assert len(rec.cohort) == 20  # one batched step per step, not a loop over the networks
    for a, b in zip(rec.solo_runs(), rec.cohort_runs()):
        assert len(a) == len(b) == 20
        assert b == pytest.approx(a, rel=1e-5)
    _compare(solo, together)
    for res, ref, mask in zip(together, solo, masks):  # the masks: exactly the pruned weights are zero
        params, alone = dict(res.model.named_parameters()), dict(ref.model.named_parameters())
        for n, m in (mask or {}).items():
            assert bool((params[n].detach()[~m] == 0).all()), n
        # and no other weight: the dense run in the same cohort stays as dense as it is alone
        assert {n: int((p == 0).sum()) for n, p in params.items()} == {n: int((p == 0).sum()) for n, p in alone.items()}
    assert [r.test_acc for r in together] == pytest.approx([r.test_acc for r in solo], abs=2 / len(data.test_y))


def test_bn_conv_net_with_sgd_momentum_keeps_each_runs_statistics(monkeypatch):
    """A small BatchNorm conv net under SGD with momentum: losses step by step, running statistics per run."""
    data = _images()
    spec = TrainSpec(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=32,
                     length="20it", eval_every="10it")
    rec = _Losses(monkeypatch)
    masks = [_mask(_bn(0), 0.5, 0), None, _mask(_bn(0), 0.2, 1)]
    solo = TR.train(_runs(_bn, [0, 1, 2], [0, 1, 2], masks), TR.Recipe.of(data, spec, "cpu"))
    together = TR.train(_runs(_bn, [0, 1, 2], [0, 1, 2], masks), TR.Recipe.of(data, spec, "cpu", cohort=3))
    assert len(rec.cohort) == 20
    for a, b in zip(rec.solo_runs(), rec.cohort_runs()):
        assert b == pytest.approx(a, rel=1e-5)
    _compare(solo, together)
    stats = [r.model.bn2.running_mean for r in together]
    assert not torch.allclose(stats[0], stats[1]) and not torch.allclose(stats[1], stats[2])  # each run its own
    assert all(int(r.model.bn1.num_batches_tracked) == 20 for r in together)
    for res, mask in zip(together, masks):
        params = dict(res.model.named_parameters())
        assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in (mask or {}).items())


def _resnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet20", 10, 3, 12, width=0.25)  # 4/8/16 channels: the real blocks, small


def test_a_resnet_cohort_follows_single_runs_as_closely_as_another_memory_layout(monkeypatch):
    """ResNet-20 (residual blocks, in-place ReLUs and adds, 1x1 shortcut convs, 19 batch norms) in a cohort of 3.

    Its loss curve amplifies any last-bit difference step by step (~10x a step here), so after the first
    steps the yardstick is the float noise of one network itself: the same runs alone in NCHW instead of
    channels_last (the cohort's layout is NCHW)."""
    data = _images()
    spec = TrainSpec(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=32, length="10it",
                     eval_every="5it")
    rec = _Losses(monkeypatch)
    masks = [_mask(_resnet(0), 0.5, 0), None, _mask(_resnet(2), 0.2, 1)]
    TR.train(_runs(_resnet, [0, 1, 2], [0, 1, 2], masks), TR.Recipe.of(data, spec, "cpu", channels_last=False))
    TR.train(_runs(_resnet, [0, 1, 2], [0, 1, 2], masks), TR.Recipe.of(data, spec, "cpu"))
    together = TR.train(_runs(_resnet, [0, 1, 2], [0, 1, 2], masks), TR.Recipe.of(data, spec, "cpu", cohort=3))
    solo = rec.solo_runs()
    nchw, nhwc, cohort = solo[:3], solo[3:], rec.cohort_runs()
    assert len(cohort) == 3 and all(len(c) == 10 for c in cohort)
    for a, b in zip(nchw, cohort):
        assert b[:4] == pytest.approx(a[:4], rel=1e-5)  # the first steps: tight
    gap = lambda x, y: max(abs(p - q) / abs(p) for p, q in zip(x, y))  # noqa: E731
    layout = max(gap(a, b) for a, b in zip(nchw, nhwc))  # one network, another memory layout
    assert max(gap(a, b) for a, b in zip(nchw, cohort)) <= max(3 * layout, 1e-5)
    means = [r.model.blocks[-1].bn2.running_mean for r in together]
    assert not torch.allclose(means[0], means[1])  # each run its own statistics
    for res, mask in zip(together, masks):
        params = dict(res.model.named_parameters())
        assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in (mask or {}).items())


def test_a_runs_result_does_not_depend_on_the_other_runs_of_its_cohort():
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="20it", eval_every="20it")
    recipe = TR.Recipe.of(data, spec, "cpu", cohort=8)
    in_two = TR.train(_runs(_lenet, [0, 1], [0, 1]), recipe)[0]
    in_four = TR.train(_runs(_lenet, [0, 7, 8, 9], [0, 3, 3, 4]), recipe)[0]
    _compare([in_two], [in_four], rtol=1e-5)


def test_snapshots_are_each_runs_rewind_point():
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="20it", eval_every="20it")
    solo = TR.train(_runs(_lenet, [0, 1], [0, 1], snapshot_steps=(0, 7)), TR.Recipe.of(data, spec, "cpu"))
    together = TR.train(_runs(_lenet, [0, 1], [0, 1], snapshot_steps=(0, 7)), TR.Recipe.of(data, spec, "cpu", cohort=2))
    for a, b in zip(solo, together):
        assert sorted(b.snapshots) == [0, 7]
        for k, v in a.snapshots[0].items():
            assert torch.equal(b.snapshots[0][k], v)  # the start: exact
        for k, v in a.snapshots[7].items():
            assert b.snapshots[7][k].is_contiguous() and b.snapshots[7][k].device.type == "cpu"
            torch.testing.assert_close(b.snapshots[7][k], v, rtol=1e-5, atol=1e-6)


def test_a_killed_cohort_resumes_bit_identically(tmp_path, monkeypatch):
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="3ep", eval_every="1ep")
    recipe = TR.Recipe.of(data, spec, "cpu", cohort=3)

    def runs(folder=None):
        out = _runs(_lenet, [0, 1, 2], [0, 0, 1], [None, _mask(_lenet(0), 0.2, 0), None], snapshot_steps=(5,))
        for i, r in enumerate(out):
            r.key, r.folder = f"k{i}", None if folder is None else folder / f"run{i}"
        return out

    ref = TR.train(runs(), recipe)
    real_save = C.Cohort.save

    def save_then_stop(self, i, step, running, seconds):  # killed right after the first epoch's checkpoints
        real_save(self, i, step, running, seconds)
        if i == self.n - 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(C.Cohort, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        TR.train(runs(tmp_path), recipe)
    monkeypatch.setattr(C.Cohort, "save", real_save)
    ipe = len(data.train_y) // 60
    for i in range(3):
        ck = torch.load(tmp_path / f"run{i}" / "checkpoint.pt", weights_only=True)
        # One network's checkpoint layout (train.TrainState.save): either trainer resumes it.
        assert set(ck) == {"key", "start_step", "step", "model", "optimizer", "scaler", "history", "elapsed",
                           "snapshots", "running"}
        assert ck["step"] == ipe and list(ck["snapshots"]) == ["5"] and ck["optimizer"]["param_groups"][0]["foreach"]
        # This run's tensors only: no slice of the cohort's stacked storage.
        saved = [*ck["model"].values(), *(v for s in ck["optimizer"]["state"].values() for v in s.values())]
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in saved)
    resumed = TR.train(runs(tmp_path), recipe)
    for a, b in zip(ref, resumed):
        assert b.history == a.history
        assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
        assert all(torch.equal(a.snapshots[5][k], b.snapshots[5][k]) for k in a.snapshots[5])


def test_a_single_run_resumes_from_a_cohorts_checkpoint(tmp_path, monkeypatch):
    """The checkpoint is one network's: `--cohort 1` continues a run a cohort started (to float tolerance)."""
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="3ep", eval_every="1ep")

    def runs():
        out = _runs(_lenet, [0, 1], [0, 1])
        for i, r in enumerate(out):
            r.key, r.folder = f"k{i}", tmp_path / f"run{i}"
        return out

    ref = TR.train(_runs(_lenet, [0, 1], [0, 1]), TR.Recipe.of(data, spec, "cpu"))
    real_save = C.Cohort.save

    def save_then_stop(self, i, step, running, seconds):
        real_save(self, i, step, running, seconds)
        if i == self.n - 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(C.Cohort, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        TR.train(runs(), TR.Recipe.of(data, spec, "cpu", cohort=2))
    monkeypatch.setattr(C.Cohort, "save", real_save)
    resumed = TR.train(runs(), TR.Recipe.of(data, spec, "cpu"))  # one at a time
    _compare(ref, resumed, rtol=1e-4)


def test_one_diverging_run_fails_alone(monkeypatch):
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="30it", eval_every="10it")  # a read at step 25

    def make(seed):
        model = _lenet(seed)
        if seed == 1:
            with torch.no_grad():
                model.fc.weight.fill_(3e38)  # its logits overflow: loss inf, then NaN
        return model

    solo = TR.train(_runs(make, [0, 2], [0, 1]), TR.Recipe.of(data, spec, "cpu"))
    finished: list[tuple[str, TR.TrainResult]] = []
    with pytest.raises(TicketxError, match=r"^run 1: training diverged \(loss (nan|inf)\) at step 25$") as err:
        TR.train(_runs(make, [0, 1, 2], [0, 0, 1]), TR.Recipe.of(data, spec, "cpu", cohort=3),
                 done=lambda run, res: finished.append((run.label, res)))
    assert err.value.hint == "lower --lr or add --warmup"
    assert [label for label, _ in finished] == ["run 0", "run 2"]  # recorded before the error
    _compare(solo, [res for _, res in finished], rtol=1e-5)


def test_cohorts_are_formed_by_the_inputs_alone():
    data = _digits()
    spec = TrainSpec(optimizer="adam", batch_size=60, length="20it")
    recipe = TR.Recipe.of(data, spec, "cpu", cohort=2)
    wide = lambda s: build_model("lenet_300_100", 5, 1, 8, width=2)  # noqa: E731
    runs = _runs(_lenet, [0, 1, 2], [0, 1, 2]) + _runs(wide, [3], [0]) + _runs(_lenet, [4], [0])
    runs.append(TR.Run.of(_lenet(5), None, label="run 5", start_step=3))  # another rewind point
    groups = [[run.label for run, _ in g] for g in C.plan(runs, recipe)]
    assert groups == [["run 0", "run 1"], ["run 2"], ["run 3"], ["run 4"], ["run 5"]]
    auto = TR.Recipe.of(data, spec, "cpu", cohort="auto")
    assert [len(g) for g in C.plan(_runs(_lenet, range(18), range(18)), auto)] == [16, 1, 1]  # tail < AUTO_MIN: alone
    assert [len(g) for g in C.plan(_runs(_bn, range(3), range(3)), auto)] == [1, 1, 1]  # conv nets on CPU
    assert C.size("auto", torch.device("cpu"), _lenet(0)) == C.AUTO["cpu", "mlp"] == 16
    assert C.size("auto", torch.device("cpu"), _bn(0)) == 1 and C.size(5, torch.device("cpu"), _bn(0)) == 5


def test_a_cohort_trains_on_each_runs_noisy_labels_and_measures_its_fit(monkeypatch):
    """Label noise: runs with one noise seed share a cohort (the same flipped labels), another seed's run
    trains apart; train accuracy and memorisation are measured as for a run alone; no augmentation
    is no augmentation."""
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="20it", eval_every="10it", label_noise=0.2,
                     augment=False)
    solo = TR.train(_runs(_lenet, [0, 1, 2], [0, 0, 1]), TR.Recipe.of(data, spec, "cpu"))
    sizes: list[int] = []
    real = C.train_group
    monkeypatch.setattr(C, "train_group", lambda group, *a, **k: sizes.append(len(group)) or real(group, *a, **k))
    together = TR.train(_runs(_lenet, [0, 1, 2], [0, 0, 1]), TR.Recipe.of(data, spec, "cpu", cohort=3))
    assert sizes == [2]  # runs 0 and 1 (noise seed 0) together, run 2 (noise seed 1) alone
    _compare(solo, together, rtol=RTOL)
    n = len(data.train_y)
    for a, b in zip(solo, together):
        assert a.noise is not None and b.noise == a.noise and a.memorised is not None
        assert b.train_acc == pytest.approx(a.train_acc, abs=2 / n)
        assert b.memorised == pytest.approx(a.memorised, abs=2 / a.noise["flipped"])


def test_what_trains_alone_says_why():
    data = _digits()
    recipe = TR.Recipe.of(data, TrainSpec(batch_size=60, length="20it"), "cpu", cohort=4)
    assert C.alone_reason(_lenet(0), recipe) is None
    assert "dropout" in C.alone_reason(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 5)), recipe)
    assert C.alone_reason(nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(64, 5)), recipe) is None
    fp16 = TR.Recipe.of(data, TrainSpec(batch_size=60, length="20it", precision="fp16"), "cpu", cohort=4)
    assert "GradScaler" in C.alone_reason(_lenet(0), fp16)
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert "tied" in C.alone_reason(tied, recipe)
    model = _lenet(0)
    held = TR.Start(model, _mask(model, 0.5, 0), frozen={"fc.weight": torch.zeros_like(model.fc.weight)})
    assert "frozen" in C.alone_reason(model, recipe, held)
    runs = [TR.Run(key="", start=lambda: held, label="held"), *_runs(_lenet, [1, 2], [0, 1])]
    assert [[r.label for r, _ in g] for g in C.plan(runs, recipe)] == [["held"], ["run 1", "run 2"]]


def test_compile_on_with_a_cohort_says_the_cohort_trains_eager(monkeypatch):
    from ticketx.ui import Reporter

    class Said(Reporter):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def log(self, message: str) -> None:
            self.lines.append(message)

    monkeypatch.setattr(C, "train_group", lambda group, *a, **k: [None] * len(group))  # no training: what is said
    data = _digits()
    for mode, told in (("on", 1), ("off", 0), ("auto", 0)):
        said = Said()
        recipe = TR.Recipe.of(data, TrainSpec(batch_size=60, length="5it"), "cpu", cohort=4, compile=mode)
        TR.train(_runs(_lenet, [0, 1, 2], [0, 1, 2]), recipe, said)
        assert sum("cohorts train eager" in line for line in said.lines) == told, mode


def test_cohort_one_is_todays_path(monkeypatch):
    monkeypatch.setattr(C, "plan", lambda *a, **k: pytest.fail("cohort 1 must not plan cohorts"))
    data = _digits()
    TR.train(_runs(_lenet, [0, 1], [0, 1]), TR.Recipe.of(data, TrainSpec(batch_size=60, length="5it"), "cpu"))


def test_cohort_setting_parses():
    assert C.parse("auto") == "auto" and C.parse(" AUTO ") == "auto"
    assert C.parse("4") == 4 and C.parse(16) == 16 and C.parse(1) == 1
    for bad in ("0", "-1", "x", 0, 2000, True, 1.5):
        with pytest.raises(UsageError, match="--cohort expects"):
            C.parse(bad)


# ---- where cohorts are used: a transfer cell, stability copies, the CLI and study files ----


def test_a_transfer_cell_trains_its_arms_seeds_and_rounds_as_one_cohort(digits_ticket, tmp_path, monkeypatch):
    from ticketx.settings import TransferSpec, resolve_transfer
    from ticketx.transfer import transfer

    spec = TransferSpec(target="digits[5-9]", rounds=[1, 2], seeds=[0, 1], baselines=["random-mask", "dense"],
                        train=TrainSpec(optimizer="adam", lr=1e-3, length="1ep"))
    plan = resolve_transfer(digits_ticket, spec)
    one = transfer(plan, tmp_path / "one", device="cpu")
    sizes: list[int] = []
    real = C.train_group
    monkeypatch.setattr(C, "train_group", lambda group, *a: (sizes.append(len(group)), real(group, *a))[1])
    many = transfer(plan, tmp_path / "many", device="cpu", cohort=16)
    assert sizes == [10]  # 2 rounds x 2 seeds x (ticket, random mask) + dense once per seed, in one step
    assert sorted(p.name for p in (tmp_path / "one" / "runs").iterdir()) == \
        sorted(p.name for p in (tmp_path / "many" / "runs").iterdir())  # the same runs: keys do not change
    tests = one["test_images"]
    for a, b in zip(one["runs"], many["runs"]):
        assert (a["key"], a["label"], a["for_round"], a["seed"]) == (b["key"], b["label"], b["for_round"], b["seed"])
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=1.01 / tests)  # at most one test image apart
        assert b["density"] == a["density"]


def test_stability_copies_train_as_a_cohort(digits_ticket, monkeypatch):
    from ticketx import ticket as ticketfile
    from ticketx.stability import stability

    t = ticketfile.load(digits_ticket)
    data = load_data("digits[0-4]", image_size=8)
    sizes: list[int] = []
    real = C.train_group
    monkeypatch.setattr(C, "train_group", lambda group, *a: (sizes.append(len(group)), real(group, *a))[1])
    one = stability(t, 2, data, seeds=(0, 1), points=3)
    two = stability(t, 2, data, seeds=(0, 1), points=3, cohort=2)
    assert sizes == [2]
    assert two["endpoint_test_acc"] == pytest.approx(one["endpoint_test_acc"], abs=1.01 / len(data.test_y))
    assert two["test_error"] == pytest.approx(one["test_error"], abs=1.01 / len(data.test_y))


def test_cli_cohort_option(digits_ticket, tmp_path, cli):
    code, out, err = cli("transfer", digits_ticket, "--to", "digits[5-9]", "--round", "2", "--epochs", "1",
                         "--baselines", "random-mask", "--cohort", "auto", "--out", tmp_path / "t")
    assert code == 0, err
    code, out, err = cli("transfer", digits_ticket, "--to", "digits[5-9]", "--epochs", "1", "--cohort", "many",
                         "--out", tmp_path / "u")
    assert code == 2 and "--cohort expects a number of runs or 'auto', got 'many'" in err and "Traceback" not in err
    assert not (tmp_path / "u").exists()
    code, out, err = cli("stability", digits_ticket, "--cohort", "0", "--epochs", "1")
    assert code == 2 and "--cohort expects" in err


def test_study_cohort_is_speed_not_science(tmp_path):
    from ticketx import study as S

    base = "model: lenet_300_100\ntrain: {length: 2ep}\nsearch: {prune: {rounds: 3}}\n" \
           "sources: ['digits[0-4]']\ntargets: ['digits[5-9]']\n"
    study = lambda text: S.load_study((tmp_path / "s.yaml").write_text(text) and tmp_path / "s.yaml")  # noqa: E731
    keys = [c.key for c in study(base).cells]
    assert [c.key for c in study(base + "cohort: auto\n").cells] == keys
    assert study(base + "cohort: 8\n").spec.cohort == 8 and study(base).spec.cohort == 1
    for bad in ("0", "many", "5000"):
        with pytest.raises(UsageError, match="cohort"):
            study(base + f"cohort: {bad}\n")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_smoke.sh)")
@pytest.mark.parametrize("net", ["lenet", "bn"])
def test_cohort_on_cuda_follows_single_runs(monkeypatch, net):
    """On the GPU, with TF32 off (fp32 matmuls and convolutions), as on the CPU: losses step by step, weights, statistics."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    if net == "lenet":
        data, make = _digits(), _lenet
        spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="20it", eval_every="10it")
    else:
        data, make = _images(), _bn
        spec = TrainSpec(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, length="20it", eval_every="10it")
    rec = _Losses(monkeypatch)
    masks = [_mask(make(0), 0.3, 0), None, _mask(make(0), 0.1, 2)]
    solo = TR.train(_runs(make, [0, 1, 2], [5, 5, 6], masks), TR.Recipe.of(data, spec, "cuda"))
    together = TR.train(_runs(make, [0, 1, 2], [5, 5, 6], masks), TR.Recipe.of(data, spec, "cuda", cohort=3))
    assert len(rec.cohort) == 20 and together[0].model.fc.weight.device.type == "cuda"
    for a, b in zip(rec.solo_runs(), rec.cohort_runs()):
        assert b == pytest.approx(a, rel=1e-4)
    _compare(solo, together, rtol=1e-3)
    for res, mask in zip(together, masks):
        params = dict(res.model.named_parameters())
        assert all(bool((params[n].detach()[~m.to(params[n].device)] == 0).all()) for n, m in (mask or {}).items())


class _Tracked:
    def __init__(self) -> None:
        self.points: list[tuple[int, dict]] = []
        self.checkpoints = 0
        self.ok: bool | None = None

    def log(self, step, values):
        self.points.append((step, dict(values)))
        return True

    def checkpoint(self):
        self.checkpoints += 1

    def finish(self, ok=True):
        self.ok = ok


class _Tracking:
    def __init__(self) -> None:
        self.runs: dict[str, _Tracked] = {}

    def track(self, name, config, *, folder=None, key="", kind="network"):
        self.runs[name] = _Tracked()
        return self.runs[name]

    def start(self, label, total):
        return label

    def update(self, task, completed, **fields):
        pass

    def finish(self, task):
        pass

    def log(self, message):
        pass


def test_a_cohort_tracks_each_network_as_it_trains_alone():
    """A tracker (ticketx.trackers) gets every network's points at the same steps with the same names."""
    data = _digits()
    spec = TrainSpec(optimizer="adam", lr=3e-3, batch_size=60, length="40it", eval_every="20it")
    alone, together = _Tracking(), _Tracking()
    TR.train(_runs(_lenet, [0, 1, 2], [0, 0, 1]), TR.Recipe.of(data, spec, "cpu"), alone)
    TR.train(_runs(_lenet, [0, 1, 2], [0, 0, 1]), TR.Recipe.of(data, spec, "cpu", cohort=3), together)
    assert sorted(together.runs) == sorted(alone.runs) == ["run 0", "run 1", "run 2"]
    for name, a in alone.runs.items():
        b = together.runs[name]
        assert [s for s, _ in b.points] == [s for s, _ in a.points] == [20, 25, 40]
        assert [sorted(v) for _, v in b.points] == [sorted(v) for _, v in a.points]
        for (_, va), (_, vb) in zip(a.points, b.points):
            for k in ("train/loss", "train/lr", "epoch", "test/accuracy"):
                if k in va:
                    assert vb[k] == pytest.approx(va[k], rel=1e-4, abs=2 / len(data.test_y)), k
            assert vb["train/accuracy"] == pytest.approx(va["train/accuracy"], abs=0.02)
        assert b.ok is True and b.checkpoints == a.checkpoints > 0
