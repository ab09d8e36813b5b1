"""ticketx.train: the setup, the loop and its hooks, the training state and its checkpoint."""

from __future__ import annotations

import math
import os

import pytest
import torch

from conftest import tiny_find_spec
from ticketx import masks as M
from ticketx import pruning
from ticketx import train as TR
from ticketx.data import ImageData, load_data
from ticketx.errors import TicketxError
from ticketx.models import build_model, prunable_names
from ticketx.settings import TrainSpec



def train_one(model, data, spec, *, mask=None, device="cpu", data_seed=0, snapshot_steps=(), folder=None,
              checkpoint_key="", reporter=None, compile=None):
    """The trainer on one already built network (a run of `model`)."""
    run = TR.Run.of(model, mask, key=checkpoint_key, folder=folder, data_seed=data_seed, snapshot_steps=snapshot_steps)
    return TR.train([run], TR.Recipe.of(data, spec, device, compile=compile), reporter)[0]

def _digits():
    return load_data("digits[0-4]", image_size=8)


def _random_images(n_train: int, n_test: int) -> ImageData:
    g = torch.Generator().manual_seed(0)
    x = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)  # noqa: E731
    y = lambda n: torch.arange(n) % 10  # noqa: E731
    return ImageData("s", [str(i) for i in range(10)], x(n_train), y(n_train), x(n_test), y(n_test),
                     (0.5,) * 3, (0.25,) * 3, True, 4)


def _random_mask(model, density: float):
    params = dict(model.named_parameters())
    dense = M.ones_like({n: params[n] for n in prunable_names(model)})
    return pruning.prune_random(None, dense, 1 - density, scope="layerwise", generator=torch.Generator().manual_seed(0))


def test_eval_batch_size_keeps_cpu_activations_in_cache():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert TR.eval_batch_size(gpu, (10, 3, 32, 32)) == 1024
    assert TR.eval_batch_size(cpu, (10, 3, 32, 32)) == 256
    assert TR.eval_batch_size(cpu, (10, 1, 8, 8)) == 1024
    assert TR.eval_batch_size(cpu, (10, 3, 224, 224)) == 16
    assert TR.eval_batch_size(cpu, (10, 3, 32, 32), conv=True) == 64  # a conv net's activations are larger
    assert TR.eval_batch_size(cpu, (10, 3, 16, 16), conv=True) == 256
    assert TR.eval_batch_size(gpu, (10, 3, 32, 32), conv=True) == 1024


def test_a_conv_nets_accuracy_does_not_depend_on_its_evaluation_batch():
    from ticketx.data import Batches

    torch.manual_seed(0)
    model = build_model("conv2", 10, 3, 32).to(memory_format=torch.channels_last)
    data = _random_images(8, 300)
    accs = {bs: TR.evaluate(model, Batches(data.test_x, data.test_y, batch_size=bs, mean=data.mean, std=data.std,
                                           train=False, channels_last=True)) for bs in (64, 256)}
    assert accs[64] == accs[256]


def test_mask_enforcer_keeps_channels_last_layout_and_zeros():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 32).to(memory_format=torch.channels_last)
    mask = _random_mask(model, 0.3)
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


def test_prepare_is_trains_setup():
    torch.manual_seed(0)
    conv, lenet = build_model("conv2", 10, 3, 32), build_model("lenet_300_100", 10, 1, 8)
    mask = _random_mask(conv, 0.5)
    s = TR.prepare(conv, TrainSpec(optimizer="adam", lr=1e-3), mask=mask, device="cpu", compile=False)
    assert s.channels_last and s.model is conv and isinstance(s.optimizer, torch.optim.Adam)
    assert len(s.enforce.params) == len(mask) and s.stepper.enforce is s.enforce
    params = dict(conv.named_parameters())
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in mask.items())  # the mask is applied at once
    assert not TR.prepare(lenet, TrainSpec(), device="cpu", compile=False).channels_last  # no conv: plain layout


def test_train_uses_channels_last_for_conv_models_and_returns_plain_layout(monkeypatch):
    data = _random_images(32, 20)
    layouts = []
    real = TR.Stepper.__call__
    monkeypatch.setattr(TR.Stepper, "__call__", lambda self, x, *a, **k: (
        layouts.append(x.is_contiguous(memory_format=torch.channels_last)), real(self, x, *a, **k))[1])
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 32)
    mask = _random_mask(model, 0.5)
    spec = TrainSpec(batch_size=16, length="2it", eval_every="2it", lr=0.01)
    res = train_one(model, data, spec, mask=mask, device="cpu", snapshot_steps=(0, 1))
    assert layouts == [True, True]
    for name, p in model.named_parameters():
        assert p.is_contiguous(), name
    assert sorted(res.snapshots) == [0, 1]
    for snap in res.snapshots.values():
        assert all(t.is_contiguous() for t in snap.values())
    params = dict(model.named_parameters())
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in mask.items())


def test_train_runs_on_its_threads_and_restores_the_count(monkeypatch):
    before = torch.get_num_threads()
    seen = []
    real = TR.Stepper.__call__
    monkeypatch.setattr(TR.Stepper, "__call__", lambda self, *a, **k: (seen.append(torch.get_num_threads()), real(self, *a, **k))[1])
    monkeypatch.setenv("TICKETX_THREADS", "1" if before > 1 else "2")
    train_one(build_model("lenet_300_100", 5, 1, 8), _digits(), tiny_find_spec().train, device="cpu")
    assert torch.get_num_threads() == before
    assert set(seen) == {1 if before > 1 else 2}


def test_compile_flag_from_environment(monkeypatch):
    seen = []
    real_init = TR.Stepper.__init__

    def spy(self, *a, **k):
        seen.append(k.get("compile"))
        real_init(self, *a, **{**k, "compile": False})

    monkeypatch.setattr(TR.Stepper, "__init__", spy)
    data = _digits()
    spec = tiny_find_spec(train=dict(length="1it", eval_every="1it")).train
    monkeypatch.setenv("TICKETX_COMPILE", "1")
    train_one(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu")
    monkeypatch.delenv("TICKETX_COMPILE")
    train_one(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu")
    train_one(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu", compile=True)
    assert seen == ["default", False, "default"]  # TICKETX_COMPILE=1 is `on`; unset is `auto`, off on CPU


def test_compiled_training_does_not_recompile_between_rounds(tmp_path, monkeypatch):
    """A ticket search trains the same model object every round: one traced graph serves them all."""
    import functools

    import torch._dynamo
    from torch._dynamo.utils import counters

    from ticketx.search import find

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # no C++ build in tests
    monkeypatch.setenv("TICKETX_COMPILE", "1")
    torch._dynamo.reset()
    counters.clear()
    t = find(tiny_find_spec(prune=dict(rounds=2)), tmp_path / "t.pt", device="cpu")
    assert len(t.rounds) == 3
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
    torch._dynamo.reset()


# ---- the loop, its hooks and the training state ----------------------------------------------


def test_running_loss_reads_the_mean_since_the_last_read():
    r = TR.RunningLoss(torch.device("cpu"))
    assert math.isnan(r.read())  # nothing added yet
    for v in (1.0, 2.0, 6.0):
        r.add(torch.tensor(v))
    assert r.as_list() == [9.0, 3, r.last] and r.read() == 3.0
    assert r.read() == 3.0 and r.count == 0  # no new step: the previous mean
    r.add(torch.tensor(5.0))
    assert r.read() == 5.0


class _Recorder:
    def __init__(self):
        self.updates: list[tuple[int, dict]] = []
        self.logs: list[str] = []

    def start(self, label, total):
        return label

    def update(self, task, completed, **fields):
        self.updates.append((completed, fields))

    def finish(self, task):
        pass

    def log(self, message):
        self.logs.append(message)


def test_log_hook_reports_every_epoch_with_throughput_and_accuracy():
    data = _digits()  # 721 training images: 12 steps per epoch at batch 60
    rep = _Recorder()
    spec = tiny_find_spec(train=dict(length="2ep", eval_every="1ep")).train
    res = train_one(build_model("lenet_300_100", 5, 1, 8), data, spec, device="cpu", reporter=rep)
    ends = [(step, f) for step, f in rep.updates if "img_s" in f]
    ipe = len(data.train_y) // 60
    assert [step for step, _ in ends] == [ipe, 2 * ipe]
    assert [f["epoch"] for _, f in ends] == ["1/2", "2/2"]
    assert [f["acc"] for _, f in ends] == [h["test_acc"] for h in res.history]
    assert all(f["img_s"] > 0 and f["loss"] == h["loss"] for (_, f), h in zip(ends, res.history))


def test_a_diverged_run_stops_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(TR.Stepper, "__call__", lambda self, x, y, lr=None: torch.tensor(float("nan")))
    spec = tiny_find_spec(train=dict(length="3ep")).train  # 36 steps: one loss read at step 25
    with pytest.raises(TicketxError, match=f"diverged.*step {TR.LOG_EVERY}"):
        train_one(build_model("lenet_300_100", 5, 1, 8), _digits(), spec, device="cpu")


def test_an_interrupted_run_resumes_bit_identically(tmp_path, monkeypatch):
    data = _digits()
    spec = tiny_find_spec(train=dict(length="3ep", eval_every="1ep")).train
    kw = dict(device="cpu", data_seed=1, snapshot_steps=(5,), checkpoint_key="k")

    def run(**extra):
        torch.manual_seed(0)
        model = build_model("lenet_300_100", 5, 1, 8)
        return model, train_one(model, data, spec, **kw, **extra)

    ref_model, ref = run()
    real_save = TR.TrainState.save

    def save_then_stop(self, path, key):
        real_save(self, path, key)
        raise KeyboardInterrupt

    monkeypatch.setattr(TR.TrainState, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(folder=tmp_path)
    monkeypatch.setattr(TR.TrainState, "save", real_save)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # The checkpoint layout of every earlier ticketx version: old checkpoints stay resumable.
    assert set(ck) == {"key", "start_step", "step", "model", "optimizer", "scaler", "history", "elapsed",
                       "snapshots", "running"}
    assert ck["step"] == len(data.train_y) // 60 and list(ck["snapshots"]) == ["5"] and len(ck["running"]) == 3
    rep = _Recorder()
    model, res = run(folder=tmp_path, reporter=rep)
    assert rep.logs == [f"[dim]train: resumed from checkpoint at step {ck['step']}/{3 * ck['step']}[/]"]
    assert rep.updates[0][0] == ck["step"]  # the progress starts where the checkpoint left off
    assert res.history == ref.history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))
    assert all(torch.equal(res.snapshots[5][k], ref.snapshots[5][k]) for k in ref.snapshots[5])


def test_train_state_loads_only_its_own_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet_300_100", 5, 1, 8)
    opt = TR.make_optimizer(list(model.parameters()), TrainSpec(optimizer="adam", lr=1e-3))

    def state(start: int) -> TR.TrainState:
        return TR.TrainState(model, opt, None, start, start, TR.RunningLoss(torch.device("cpu")))

    s = state(0)
    s.step, s.history, s.snapshots = 7, [{"step": 7, "test_acc": 0.5}], {3: {"w": torch.ones(2)}}
    s.running.add(torch.tensor(2.0))
    s.save(tmp_path / "ck.pt", "key-a")
    assert not state(0).load(tmp_path / "ck.pt", "key-b")  # another run's checkpoint
    assert not state(3).load(tmp_path / "ck.pt", "key-a")  # another rewind point
    assert not state(0).load(tmp_path / "missing.pt", "key-a")
    back = state(0)
    assert back.load(tmp_path / "ck.pt", "key-a")
    assert (back.step, back.history, list(back.snapshots)) == (7, s.history, [3])
    assert (back.running.as_list()[:2], back.elapsed > 0) == ([2.0, 1], True)
    # A checkpoint from before the running loss was saved still loads, with a fresh accumulator.
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    del ck["running"]
    torch.save(ck, tmp_path / "old.pt")
    old = state(0)
    assert old.load(tmp_path / "old.pt", "key-a") and old.step == 7 and old.running.count == 0


# ---- evaluation with batch norms folded; the models' in-place ReLUs ----


@pytest.mark.parametrize("name", ["resnet20", "vgg11"])
def test_evaluation_folds_batch_norm_into_the_convolutions_and_answers_the_same(name, monkeypatch):
    from torch.fx import GraphModule

    from ticketx import runtime

    torch.manual_seed(0)
    model = build_model(name, 10, 3, 32).to(memory_format=torch.channels_last)
    model.train()
    with torch.no_grad():  # batch statistics away from the initial ones, so folding has something to fold
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    model.eval()
    monkeypatch.setattr(runtime, "deterministic_on", lambda: False)
    net = TR.folded(model)
    assert isinstance(net, GraphModule) and net is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = model(x), net(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    assert torch.equal(a.argmax(1), b.argmax(1))
    monkeypatch.setattr(runtime, "deterministic_on", lambda: True)  # --deterministic: the eager network itself
    assert TR.folded(model) is model


def test_models_without_batch_norm_or_that_fx_cannot_trace_are_evaluated_as_they_are(monkeypatch):
    from ticketx import runtime

    monkeypatch.setattr(runtime, "deterministic_on", lambda: False)
    lenet = build_model("lenet_300_100", 10, 1, 8)
    assert TR.folded(lenet) is lenet

    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.bn(self.conv(x))
            return self.conv(x)

    net = Branchy().eval()
    assert TR.folded(net) is net and Branchy in TR._UNFOLDABLE
    assert TR.folded(net) is net


def test_resnet_blocks_in_place_relus_give_the_out_of_place_floats():
    import torch.nn.functional as F

    from ticketx.models.resnet import _BasicBlock

    torch.manual_seed(0)
    for c_in, c_out, stride in ((8, 8, 1), (8, 16, 2)):
        block = _BasicBlock(c_in, c_out, stride).train()
        x = torch.randn(4, c_in, 8, 8, requires_grad=True)

        def reference(x):
            out = F.relu(block.bn1(block.conv1(x)))
            return F.relu(block.bn2(block.conv2(out)) + block.shortcut(x))

        grads = []
        for fn in (block, reference):
            out = fn(x)
            grads.append((out.detach(), *torch.autograd.grad(out.square().sum(), [x, *block.parameters()])))
        for a, b in zip(*grads):
            assert torch.equal(a, b)
