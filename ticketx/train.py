"""The training loop: masked SGD/Adam on tensor-resident data, checkpointed every epoch.

Masks are enforced after every optimizer step with one fused multiply over all pruned tensors,
so pruned weights stay exactly zero under momentum, weight decay and Adam's moments. The loop
never synchronises with the host inside a step except at logging intervals, and every source of
randomness is derived from (seed, epoch), so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketx import distributed, interrupt, runtime, store
from ticketx.errors import TicketxError, UsageError
from ticketx.models import has_batch_norm, is_conv
from ticketx.settings import TrainSpec
from ticketx.steps import to_iterations
from ticketx.threads import cpu_threads, forward_macs, training_threads

if TYPE_CHECKING:
    from ticketx.data import Batches, ImageData, LabelNoise

LOG_EVERY = 25  # iterations between host reads of the running loss (a device sync)

# What `--compile auto` turns on, per device kind: a fixed table from measurements, never a timing, so
# a run's float results never depend on how fast a machine happened to be. CPU (2-vCPU AMD EPYC, torch
# 2.14.1, inductor; README "Performance", `python -m benchmarks --only compile`): the compiled step of
# resnet20 at batch 128 ran at 0.98-1.04x eager after a 53 s cold compile (about 8 s from the on-disk
# cache), lenet_300_100 at batch 60 at 0.90x: it never pays, off. CUDA: not yet measured on a GPU
# (benchmarks/gpu_smoke.sh measures it): off until it is.
COMPILE_AUTO: dict[str, bool] = {"cpu": False, "cuda": False}
# On CUDA a compiled step of fewer FLOPs than this also runs as CUDA graphs (torch.compile
# mode="reduce-overhead"): a small network's step is bound by kernel launches (several microseconds
# of host time each), not arithmetic, and one graph replay launches them all. resnet20 at batch 128
# is ~30 GFLOP; vgg19 at batch 64 is ~1.5 TFLOP (the arithmetic dominates there).
CUDA_GRAPH_FLOPS = 1e11


def eval_batch_size(device: torch.device, image_shape: Sequence[int], conv: bool = False) -> int:
    """Evaluation batch: 1024 on a GPU; on CPU small enough that activations stay in cache: about 256
    images of 32x32 px for a fully connected network, 64 for a conv net (`conv`).

    Measured (2-vCPU AMD EPYC, 32x32 px, eval mode, batch norms folded; images/s at batch 64 / 256):
    conv2 1,638 / 998 (1.64x), resnet20 1,881 / 1,374 (1.37x), vgg16 280 / 285 (0.95x); earlier
    resnet20 unfolded 1,200 at 128-256 and 660 at 512-1024. The logits were bit-identical across these
    batch sizes and accuracy does not depend on them (eval mode: no batch statistics).
    """
    if torch.device(device).type != "cpu":
        return 1024
    pixels = max(1, int(image_shape[-1]) * int(image_shape[-2]))
    return int(min(1024, max(16, (64 if conv else 256) * 32 * 32 // pixels)))


@dataclass
class Schedule:
    """Learning rate at each absolute step: linear warmup from 0, then step decay at milestones."""

    lr: float
    warmup: int
    milestones: tuple[int, ...]
    gamma: float

    def __call__(self, step: int) -> float:
        lr = self.lr * self.gamma ** sum(step >= m for m in self.milestones)
        if self.warmup and step < self.warmup:
            lr *= (step + 1) / self.warmup
        return lr


@dataclass
class Steps:
    """A TrainSpec turned into iteration counts for one data set."""

    iterations_per_epoch: int
    total: int
    eval_every: int
    schedule: Schedule

    @classmethod
    def of(cls, spec: TrainSpec, num_train: int) -> "Steps":
        ipe = max(1, num_train // min(spec.batch_size, num_train))
        total = max(1, to_iterations(spec.length, ipe))
        sched = Schedule(
            spec.lr,
            to_iterations(spec.warmup, ipe),
            tuple(to_iterations(m, ipe) for m in spec.milestones),
            spec.gamma,
        )
        return cls(ipe, total, max(1, to_iterations(spec.eval_every, ipe)), sched)


def make_optimizer(params: Sequence[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or Adam with coupled L2 weight decay, as in the papers."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov and spec.momentum > 0,
            weight_decay=spec.weight_decay, foreach=True,
        )
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)


class MaskEnforcer:
    """Keeps pruned weights at exactly zero: one `_foreach_mul_` after each optimizer step.

    Masks are stored once on the device in the parameters' dtype and memory layout (so the
    multiply is a plain streaming pass, channels_last included); fully dense tensors are left
    out, so a dense run pays nothing. A float mask multiplies faster than a bool one: measured
    6.4 ms vs 17 ms for vgg16's 14.7M weights on one CPU core.

    `frozen` (Zhou et al. 2019's mask-0 actions, ticketx.deconstruct.frozen_values): per tensor,
    the values some pruned weights are held at instead of zero (0 at every other position). After
    the multiply one `_foreach_add_` writes them back, so they are exact after every step whatever
    momentum, weight decay or Adam's moments did to them; `attach` also zeroes their gradients
    before each step (nothing flows into the optimizer's state from a frozen weight). Without
    `frozen` nothing of this runs: the zero-mask path is unchanged.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, torch.Tensor] | None,
                 frozen: Mapping[str, torch.Tensor] | None = None) -> None:
        params = dict(model.named_parameters())
        self.params: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.held: list[torch.Tensor] = []  # parameters with frozen pruned weights
        self.fills: list[torch.Tensor] = []  # their frozen values (0 elsewhere)
        self.held_masks: list[torch.Tensor] = []
        for name, m in (mask or {}).items():
            if bool(m.all()):
                continue
            p = params[name]
            self.params.append(p)
            self.masks.append(torch.empty_like(p).copy_(m))  # empty_like keeps p's strides
            if frozen and name in frozen:
                self.held.append(p)
                self.fills.append(torch.empty_like(p).copy_(frozen[name]))
                self.held_masks.append(self.masks[-1])

    @torch.no_grad()
    def __call__(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)
        if self.held:
            torch._foreach_add_(self.held, self.fills)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero the frozen weights' gradients before every step of `optimizer` (nothing when none is frozen)."""
        if not self.held:
            return

        @torch.no_grad()
        def zero_frozen_grads(*_: Any) -> None:
            pairs = [(p.grad, m) for p, m in zip(self.held, self.held_masks) if p.grad is not None]
            if pairs:
                torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

        optimizer.register_step_pre_hook(zero_frozen_grads)


class Stepper:
    """One training step: forward under autocast, backward, optimizer update, masks re-applied.

    Returns the loss as a device tensor and never waits for the device, so the host queues the
    next step while this one runs (the loop reads the loss every LOG_EVERY steps). With
    `compile` (True, or a torch.compile mode: 'default', 'reduce-overhead' for CUDA graphs), the
    forward and its backward are torch.compile'd; the optimizer and the masks run outside the
    compiled code and update the parameters in place, so a later round on the same model reuses
    the compiled code without recompiling (tests/test_compile.py counts the compilations).
    `first_step_seconds` is then the first step's wall time, the compilation included.
    `forward` is the module to call when it is not `model` itself (its DistributedDataParallel wrapper).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        enforce: Callable[[], None] | None = None,
        *,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        compile: bool | str = False,
        forward: nn.Module | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.enforce = enforce or (lambda: None)
        self.device = torch.device(device)
        self.precision = precision
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        net = model if forward is None else forward
        self.compile_mode: str | None = ("default" if compile is True else compile) or None
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            net if not self.compile_mode else torch.compile(net) if self.compile_mode == "default"
            else torch.compile(net, mode=self.compile_mode))
        self.first_step_seconds: float | None = None  # compiled: the first step, compilation included
        self.correct: torch.Tensor | None = None  # training batches' correct answers since the last read (tracking)
        self.seen = 0

    def count_correct(self) -> None:
        """Also count correct answers on the training batches (one argmax per step on the device, no sync)."""
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)

    def train_accuracy(self) -> float | None:
        """Accuracy on the training batches since the last read (augmented, in train mode; a device sync),
        or None when nothing was counted. Under DDP: this rank's shards only (no collective)."""
        if self.correct is None or not self.seen:
            return None
        acc = float(self.correct.item()) / self.seen
        self.correct.zero_()
        self.seen = 0
        return acc

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float | None = None) -> torch.Tensor:
        if self.compile_mode and self.first_step_seconds is None:
            t0 = time.perf_counter()
            loss = self.step(x, y, lr)
            self.first_step_seconds = time.perf_counter() - t0
            return loss
        return self.step(x, y, lr)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float | None = None) -> torch.Tensor:
        """The step itself (`__call__` also times the first one when it compiles)."""
        if self.compile_mode == "reduce-overhead":
            # CUDA graphs reuse their output memory: a new step begins, the last one's logits are consumed.
            torch.compiler.cudagraph_mark_step_begin()
        if lr is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        with autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y)
        if self.correct is not None:
            self.correct += (logits.detach().argmax(dim=1) == y).sum()
            self.seen += y.shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.enforce()
        return loss.detach()


_UNFOLDABLE: set[type] = set()  # model classes torch.fx could not trace: evaluated as they are


def folded(model: nn.Module) -> nn.Module:
    """The network to evaluate `model` (in eval mode) with: a copy with every batch norm folded into
    the convolution (or linear layer) before it, where there is one (`torch.fx.experimental.
    optimization.fuse`). In eval mode batch norm is a fixed per-channel affine map, so the copy computes
    the same function with one pass over memory less per batch norm: resnet20's evaluation ran 1.35-1.46x
    faster on a 2-vCPU CPU (README "Performance"). Its floats differ from the unfolded ones in the last
    bits (logits ~1e-5 apart: a test image whose two top classes tie that closely can flip), so under
    --deterministic the network is evaluated as it is, as it is for a model fx cannot trace.
    """
    if runtime.deterministic_on() or type(model) in _UNFOLDABLE or not has_batch_norm(model):
        return model
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model, inplace=False)
    except Exception:  # noqa: BLE001 - untraceable control flow (some timm models): unfolded, every time
        _UNFOLDABLE.add(type(model))
        return model


@torch.no_grad()
def evaluate(model: nn.Module, batches: "Batches", precision: str = "fp32") -> float:
    """Top-1 accuracy over all batches (one host read at the end), batch norms folded (`folded`).

    Under DDP each rank evaluates its block of the set (`Batches(shard=...)`) and the counts of
    correct answers and images are summed over ranks: integers, so the sum is exact and every
    rank gets the same accuracy, N times faster than rank 0 evaluating everything alone.
    """
    was_training = model.training
    model.eval()
    net = folded(model)
    correct = torch.zeros((), dtype=torch.int64, device=batches.device)
    n = 0
    for x, y in batches.epoch():
        with autocast(batches.device, precision):
            out = net(x)
        correct += (out.argmax(dim=1) == y).sum()
        n += y.numel()
    model.train(was_training)
    if distributed.active():
        counts = distributed.all_reduce_sum_(torch.stack([correct, torch.tensor(n, device=correct.device)]))
        correct, n = counts[0], int(counts[1].item())
    return float(correct.item()) / max(1, n)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class TrainResult:
    test_acc: float
    val_acc: float | None
    history: list[dict[str, Any]]
    snapshots: dict[int, dict[str, torch.Tensor]]
    seconds: float
    steps: int
    images_per_second: float = 0.0
    model: nn.Module | None = None  # the trained network (in place: the run's own model)
    mask: Mapping[str, torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the run's Start.info
    train_acc: float | None = None  # at the end, eval mode, on the whole unaugmented training split (its labels)
    memorised: float | None = None  # label noise: the share of flipped examples predicted with their noisy label
    noise: dict[str, Any] | None = None  # label noise: what was flipped (LabelNoise.as_dict)


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state (parameters and buffers), in the default memory layout."""
    return {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}




# ---- Setup: what train() builds before the first step (the benchmarks time this same path) ----


def compile_plan(mode: str | bool | None, device: torch.device | str, model: nn.Module,
                 sample_shape: Sequence[int] | None = None, batch_size: int | None = None) -> str | None:
    """The torch.compile mode a training step runs under ('default', or 'reduce-overhead': CUDA graphs), None for eager.

    `mode` is --compile's off/auto/on (None: $TICKETX_COMPILE, unset = auto). `auto` compiles only
    where COMPILE_AUTO says it pays, and never under --deterministic (compiled kernels round
    differently from eager ones); `on` always compiles. On CUDA a step under CUDA_GRAPH_FLOPS
    (3x the forward, from `sample_shape` and `batch_size`) also runs as CUDA graphs.
    """
    mode = runtime.compile_mode(mode)
    device = torch.device(device)
    if mode == "off" or (mode == "auto" and (runtime.deterministic_on() or not COMPILE_AUTO.get(device.type, False))):
        return None
    if device.type == "cuda" and sample_shape is not None and batch_size:
        macs = forward_macs(model, sample_shape)
        if macs is not None and 6 * macs * batch_size < CUDA_GRAPH_FLOPS:
            return "reduce-overhead"
    return "default"


def inductor_cache_dir() -> str:
    """Where torch.compile keeps its compiled code between processes: $TORCHINDUCTOR_CACHE_DIR, else torch's default."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return env
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # pragma: no cover - other torch versions
        import getpass
        import tempfile

        return os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
    return cache_dir()


@dataclass
class Setup:
    """A model on its device, with its optimizer, mask enforcement and step function."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    enforce: MaskEnforcer
    stepper: Stepper
    device: torch.device
    channels_last: bool


def prepare(
    model: nn.Module,
    spec: TrainSpec,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    channels_last: bool | None = None,
    compile: bool | str | None = None,
    frozen: Mapping[str, torch.Tensor] | None = None,
    sample_shape: Sequence[int] | None = None,
) -> Setup:
    """Move `model` (in place) to `device` and its layout, apply `mask`, and build the optimizer and Stepper.

    `channels_last` None = on for convolutional models; `compile` is off/auto/on or a bool (None:
    $TICKETX_COMPILE, unset = auto), resolved by `compile_plan` with `sample_shape` (one image's
    shape) and the spec's batch. `frozen`: values some pruned weights are held at (MaskEnforcer).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not torch.backends.cudnn.deterministic
    if channels_last is None:
        # NHWC convolutions: tensor cores on CUDA, oneDNN's fastest kernels on CPU (measured:
        # resnet20 steps 0.73-0.89x the NCHW time on CPU, vgg16 about equal).
        channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    compile_as = compile_plan(compile, device, model, sample_shape, spec.batch_size)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if mask:
        from ticketx.masks import apply

        apply(model, mask)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], spec)
    enforce = MaskEnforcer(model, mask, frozen)
    if frozen:
        enforce()  # the frozen values in place of the zeros `apply` wrote
        enforce.attach(optimizer)
    # DDP: gradients are averaged over ranks, so the weights (and the masked zeros, re-applied
    # after every step) stay identical on every rank.
    net = distributed.wrap(model, device) if distributed.active() else None
    stepper = Stepper(model, optimizer, enforce, device=device, precision=spec.precision,
                      compile=compile_as or False, forward=net)
    return Setup(model, optimizer, enforce, stepper, device, channels_last)


@dataclass
class RunBatches:
    """The batches of one run: augmented training batches, test and (optional) validation batches."""

    train: "Batches"
    test: "Batches"
    val: "Batches | None"


def make_batches(data: "ImageData", batch_size: int, setup: Setup,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None, augment: bool = True) -> RunBatches:
    """Tensor-resident batches on the setup's device and layout (evaluation in cache-sized batches).

    Under DDP each rank gets its shard of every global batch of `batch_size` (see `Batches`).
    `augment` False: training batches without the data set's crop and flip.
    """
    from ticketx.data import Batches

    common = dict(mean=data.mean, std=data.std, device=setup.device, channels_last=setup.channels_last,
                  shard=distributed.shard())
    eval_bs = eval_batch_size(setup.device, tuple(data.test_x.shape), is_conv(setup.model))
    return RunBatches(
        Batches(data.train_x, data.train_y, batch_size=batch_size, train=True,
                crop_padding=data.crop_padding if augment else 0, flip=data.flip and augment, **common),
        Batches(data.test_x, data.test_y, batch_size=eval_bs, train=False, **common),
        Batches(val[0], val[1], batch_size=eval_bs, train=False, **common) if val is not None and len(val[1]) else None,
    )


def training_split(recipe: "Recipe", run: "Run") -> tuple["ImageData", tuple[torch.Tensor, torch.Tensor] | None,
                                                        "LabelNoise | None"]:
    """What `run` trains on: (the data with its training split, the validation split or None, the label noise or None).

    The validation split is held out first, so it keeps its true labels; label noise then replaces
    labels of the training split only (ticketx.data.noise), from the noise seed alone: the spec's
    `noise_seed`, else the run's (`Run.noise_seed`, else its data seed). The test set is never touched.
    """
    from ticketx.data import add_label_noise, split_validation

    spec, data, val = recipe.spec, recipe.data, None
    if spec.val_split > 0:  # held out of the training set; the test set chooses nothing
        data, val = split_validation(data, spec.val_split, run.data_seed if run.split_seed is None else run.split_seed)
    noise = None
    if spec.label_noise > 0:
        seed = spec.noise_seed_or(run.data_seed if run.noise_seed is None else run.noise_seed)
        data, noise = add_label_noise(data, spec.label_noise, spec.noise_mode, seed)
    return data, val, noise


@torch.no_grad()
def measure_fit(model: nn.Module, train: "Batches", noise: "LabelNoise | None", precision: str = "fp32"
                ) -> tuple[float, float | None]:
    """(train accuracy, memorisation) at the end of training, in eval mode on the whole training split as
    it was trained on (its labels, noisy ones included; no augmentation).

    Memorisation (with label noise): the share of the flipped examples the network predicts with their
    noisy label, i.e. how much of the noise it has fitted (Zhang et al. 2017; the interpolation regime
    of Belkin et al. 2019 and Nakkiran et al. 2020 fits all of it). None without noise.
    """
    eval_bs = eval_batch_size(train.device, tuple(train.x.shape), is_conv(model))
    acc = evaluate(model, train.unaugmented(eval_bs), precision)
    if noise is None or noise.count == 0:
        return acc, None
    return acc, evaluate(model, train.unaugmented(eval_bs, noise.flipped), precision)


# ---- Training state: everything a resumed run needs -------------------------------------------


class RunningLoss:
    """The training loss summed on the device since it was last read (reading it is a device sync)."""

    def __init__(self, device: torch.device, total: float = 0.0, count: int = 0, last: float = float("nan")) -> None:
        self.total = torch.full((), float(total), device=device)
        self.count = int(count)
        self.last = float(last)  # the mean at the last read: what a log line or history record shows

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.float()
        self.count += 1

    def sync(self) -> None:
        """DDP: replace each rank's sum of its shard losses by the mean over ranks, the global batches' loss.

        Every rank calls it at the same step (reads and checkpoints happen at the same steps on
        all ranks), so afterwards all ranks hold the same sum. A no-op in one process.
        """
        if distributed.active():
            distributed.all_reduce_sum_(self.total).div_(distributed.world_size())

    def read(self) -> float:
        """The mean since the last read, and start a new sum (the previous mean if no step was added)."""
        self.sync()
        if self.count:
            self.last = float(self.total.item()) / self.count
            self.total.zero_()
            self.count = 0
        return self.last

    def as_list(self) -> list[float]:
        return [float(self.total.item()), self.count, self.last]


@dataclass
class TrainState:
    """One run's training state: the live model, optimizer and scaler, and the loop's counters.

    `save` writes it as a checkpoint (atomically) and `load` restores it in place, so a run
    stopped at an epoch end continues exactly as the uninterrupted run would have: data order
    depends only on (data seed, epoch), the optimizer's moments and the running loss are saved.
    The file layout is unchanged since the first ticketx checkpoints (resumable across versions).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    start_step: int  # the step this run started from (the rewind point): part of the checkpoint's identity
    step: int
    running: RunningLoss
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    elapsed: float = 0.0  # training seconds of earlier sessions of this run (before a resume)
    started: float = field(default_factory=time.perf_counter)  # this session's clock start (not saved)
    images: int = 0  # images trained on in this session (not saved)

    def seconds(self) -> float:
        """Training seconds of this run so far, earlier sessions included."""
        return self.elapsed + time.perf_counter() - self.started

    def save(self, path: Path, key: str) -> None:
        """Write a checkpoint that `load` accepts only for the same `key` and start step.

        Under DDP every rank calls it (the running loss is averaged over ranks first) and only
        rank 0 writes (ticketx.store).
        """
        self.running.sync()
        store.save_torch(path, {
            "key": key, "start_step": self.start_step, "step": self.step,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "history": self.history, "elapsed": self.seconds(),
            "snapshots": {str(k): v for k, v in self.snapshots.items()},
            "running": self.running.as_list(),
        })

    def load(self, path: Path, key: str) -> bool:
        """Restore the checkpoint at `path` in place if it is this run's (same key and start step).

        Under DDP every rank loads the same file; they check that they resume at the same step.
        """
        ck = store.load_torch(path, "checkpoint") if path.exists() else None  # weights_only: never runs code
        if ck is not None and (ck.get("key") != key or ck.get("start_step") != self.start_step):
            ck = None
        distributed.agree(None if ck is None else ck["step"], f"the step to resume from ({path})")
        if ck is None:
            return False
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.step, self.history, self.elapsed = ck["step"], ck["history"], ck["elapsed"]
        self.snapshots = {int(k): v for k, v in ck["snapshots"].items()}
        if "running" in ck:  # so a resumed run logs the same losses
            self.running = RunningLoss(self.running.total.device, *ck["running"])
        return True


# ---- Hooks: what happens between steps besides training ---------------------------------------


class Hook:
    """Called by the loop after every step and at every epoch end (the base does nothing)."""

    def after_step(self, state: TrainState) -> None:
        pass

    def after_epoch(self, state: TrainState) -> None:
        pass


@dataclass
class LogHook(Hook):
    """Progress: the running loss every LOG_EVERY steps (stopping a diverged run), a status line per epoch.

    The epoch-end update carries `img_s` (images/s of this session); a plain-text reporter
    prints one line per such update.
    """

    reporter: Any
    task: Any
    label: str
    steps: Steps

    def after_step(self, state: TrainState) -> None:
        if state.step % LOG_EVERY:
            return
        loss = state.running.read()
        if not math.isfinite(loss):
            raise TicketxError(f"{self.label}: training diverged (loss {loss}) at step {state.step}", "lower --lr or add --warmup")
        self.reporter.update(self.task, state.step, epoch=f"{state.step / self.steps.iterations_per_epoch:.1f}", loss=loss)

    def after_epoch(self, state: TrainState) -> None:
        ipe = self.steps.iterations_per_epoch
        fields: dict[str, Any] = {"epoch": f"{math.ceil(state.step / ipe)}/{math.ceil(self.steps.total / ipe)}",
                                  "loss": state.running.last}
        if state.history and state.history[-1]["step"] == state.step:
            fields["acc"] = state.history[-1]["test_acc"]
        fields["img_s"] = state.images / max(1e-9, time.perf_counter() - state.started)
        self.reporter.update(self.task, state.step, **fields)


@dataclass
class SnapshotHook(Hook):
    """Keep a CPU copy of the weights at the given absolute steps (the rewind point)."""

    steps: Sequence[int]

    def after_step(self, state: TrainState) -> None:
        if state.step in self.steps:
            state.snapshots[state.step] = state_copy(state.model)


@dataclass
class EvalHook(Hook):
    """Every `steps.eval_every` steps and at the end: test (and validation) accuracy into the history."""

    batches: RunBatches
    steps: Steps
    precision: str
    reporter: Any
    task: Any
    trained_at: float = 0.0  # perf_counter when the steps before the last evaluation had finished (after its sync)

    def after_step(self, state: TrainState) -> None:
        if state.step % self.steps.eval_every and state.step != self.steps.total:
            return
        loss = state.running.read()  # waits for the device: the training steps so far are done
        self.trained_at = time.perf_counter()
        record = {"step": state.step, "epoch": round(state.step / self.steps.iterations_per_epoch, 4), "loss": loss,
                  "test_acc": evaluate(state.model, self.batches.test, self.precision)}
        if self.batches.val is not None:
            record["val_acc"] = evaluate(state.model, self.batches.val, self.precision)
        state.history.append(record)
        self.reporter.update(self.task, state.step, epoch=f"{state.step / self.steps.iterations_per_epoch:.1f}",
                             loss=loss, acc=record["test_acc"])


@dataclass
class TrackHook(Hook):
    """A network's curves into its tracker run (ticketx.trackers) while it trains, by global step.

    Every LOG_EVERY steps: the running training loss (as LogHook read it), the accuracy on the
    training batches since the last point, the learning rate of the last step and the wall time
    per step (between two reads of the loss, which wait for the device, so it is the real step
    time; the evaluation's own time left out). At every evaluation also the test (and
    validation) accuracy and the network's density. At every epoch end the tool is flushed and
    the last step recorded, so a resumed run logs no step twice.
    """

    run: Any  # a ticketx.trackers.TrackedRun
    steps: Steps
    stepper: Stepper
    evaluation: EvalHook
    density: float | None = None
    since: tuple[float, int] | None = None  # (time, step) of the last point

    def after_step(self, state: TrainState) -> None:
        evaluated = bool(state.history) and state.history[-1]["step"] == state.step
        if state.step % LOG_EVERY and not evaluated:
            return
        now = self.evaluation.trained_at if evaluated else time.perf_counter()
        values: dict[str, Any] = {"train/loss": state.running.last, "train/lr": self.steps.schedule(state.step - 1),
                                  "train/accuracy": self.stepper.train_accuracy(), "epoch": state.step / self.steps.iterations_per_epoch}
        if self.since is not None and state.step > self.since[1]:
            values["time/step_ms"] = 1000 * (now - self.since[0]) / (state.step - self.since[1])
        if evaluated:
            record = state.history[-1]
            values.update({"test/accuracy": record["test_acc"], "val/accuracy": record.get("val_acc"),
                           "density": self.density})
        self.run.log(state.step, {k: v for k, v in values.items() if v is not None})
        self.since = (time.perf_counter(), state.step)

    def after_epoch(self, state: TrainState) -> None:
        self.run.checkpoint()


def track(reporter: Any, name: str, config: Any, **kw: Any) -> Any:
    """`reporter.track(...)` (ticketx.ui.Reporter): a tracker run, or None (also for a reporter without `track`)."""
    fn = getattr(reporter, "track", None)
    return fn(name, config, **kw) if fn is not None else None


def tracked_config(run: "Run", recipe: "Recipe", start: "Start") -> dict[str, Any]:
    """What a tracker shows as a network's configuration: the fields its key fingerprints, then what it is."""
    info = {k: v for k, v in {**run.info, **start.info}.items() if k != "config"}
    return {**run.config, "run": {"key": run.key, "experiment": run.experiment, "label": run.label,
                                  "start_step": run.start_step, "data_seed": run.data_seed, "total_steps": recipe.steps.total,
                                  "iterations_per_epoch": recipe.steps.iterations_per_epoch, **info}}


@dataclass
class CompileHook(Hook):
    """Say once, after the first compiled step, what compiling cost and where its on-disk cache is."""

    reporter: Any
    label: str
    stepper: Stepper
    said: bool = False

    def after_step(self, state: TrainState) -> None:
        if self.said or self.stepper.first_step_seconds is None:
            return
        self.said = True
        self.reporter.log(f"[dim]{self.label}: torch.compile (mode {self.stepper.compile_mode}): first step "
                          f"{self.stepper.first_step_seconds:.1f} s, compilation included; cache {inductor_cache_dir()}[/]")


@dataclass
class CheckpointHook(Hook):
    """Save the state at every epoch end before the last (the finished run is its caller's to save)."""

    path: Path
    key: str
    total: int

    def after_epoch(self, state: TrainState) -> None:
        if state.step < self.total:
            state.save(self.path, self.key)


# ---- The loop -----------------------------------------------------------------------------------


def run_epochs(stepper: Stepper, steps: Steps, batches: "Batches", state: TrainState, hooks: Sequence[Hook],
               data_seed: int) -> None:
    """Train from `state.step` to `steps.total`, calling the hooks after every step and epoch."""
    ipe = steps.iterations_per_epoch
    rank, world = distributed.shard()
    state.model.train()
    state.started = time.perf_counter()
    while state.step < steps.total:
        epoch = state.step // ipe
        gen = runtime.data_order(data_seed, epoch)  # resumable: a pure function of (data seed, epoch)
        torch.manual_seed(runtime.dropout_seed(data_seed, epoch, rank if world > 1 else None))
        epoch_end = min((epoch + 1) * ipe, steps.total)
        for x, y in itertools.islice(batches.epoch(gen), state.step - epoch * ipe, None):
            if state.step >= epoch_end:
                break
            interrupt.check()  # a Ctrl-C/SIGTERM whose KeyboardInterrupt was swallowed stops here
            state.running.add(stepper(x, y, steps.schedule(state.step)))
            state.step += 1
            state.images += y.shape[0] * world  # the global batch
            for hook in hooks:
                hook.after_step(state)
        for hook in hooks:
            hook.after_epoch(state)


@dataclass
class Start:
    """A run's network before its first step: the model with its weights set, and the mask to enforce."""

    model: nn.Module
    mask: Mapping[str, torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what is known once it is built (its density, ...)
    frozen: Mapping[str, torch.Tensor] | None = None  # values pruned weights are held at (None: zero)


@dataclass
class Run:
    """One network to train: what it starts from, where in the schedule, with which data seed, where it lives.

    `start` builds the network only when the run is trained (a finished run is never built).
    The run's checkpoint lives in `folder` (None: nothing is written; the run is not resumable);
    `key` names the configuration a checkpoint or a stored result belongs to.
    """

    key: str
    start: Callable[[], Start]
    folder: Path | None = None
    label: str = "train"
    start_step: int = 0  # absolute step: the rewind point of a retrained ticket, else 0
    data_seed: int = 0  # data order, augmentation and dropout
    split_seed: int | None = None  # the validation split's seed (the recipe's val_split); None: data_seed
    noise_seed: int | None = None  # the label noise's seed unless the spec gives one; None: data_seed
    snapshot_steps: tuple[int, ...] = ()  # absolute steps whose weights are returned (the rewind point)
    experiment: str = ""  # what it belongs to (search, transfer, stability): for logs and counts
    info: dict[str, Any] = field(default_factory=dict)  # the record's fields known before training
    config: dict[str, Any] = field(default_factory=dict)  # the fields `key` fingerprints (what a tracker shows)
    keep_weights: bool = False  # store the final weights and snapshots with the result (a search needs them)

    @classmethod
    def of(cls, model: nn.Module, mask: Mapping[str, torch.Tensor] | None = None, **fields: Any) -> "Run":
        """A run of an already built network (no checkpoint unless `folder` is given)."""
        return cls(key=fields.pop("key", ""), start=lambda: Start(model, mask), **fields)

    @property
    def checkpoint(self) -> Path | None:
        return None if self.folder is None else self.folder / "checkpoint.pt"


@dataclass(frozen=True)
class Recipe:
    """What every run handed to the trainer together shares: the data set, the settings, the steps, the device.

    `steps` is computed once from the number of training images after the validation split
    (the same for every split seed), so the experiment that built the recipe and the trainer
    agree on the rewind step and the end of training.
    """

    data: "ImageData"
    spec: TrainSpec
    steps: Steps
    device: torch.device
    channels_last: bool | None = None  # as in `prepare`
    compile: bool | str | None = None  # as in `prepare`: off/auto/on, None = $TICKETX_COMPILE
    cohort: int | str = 1  # runs trained together in one step (ticketx.cohort): 1 = one at a time, or 'auto'

    @classmethod
    def of(cls, data: "ImageData", spec: TrainSpec, device: torch.device | str = "cpu", **options: Any) -> "Recipe":
        from ticketx.data import held_out_count

        n = len(data.train_y) - (held_out_count(data.train_y, spec.val_split) if spec.val_split > 0 else 0)
        return cls(data, spec, Steps.of(spec, n), torch.device(device), **options)


def train(runs: Sequence[Run], recipe: Recipe, reporter: Any = None,
          done: Callable[[Run, TrainResult], None] | None = None) -> list[TrainResult]:
    """Train every run of `runs` (they share `recipe`), one after another; a result per run, in order.

    `done(run, result)` is called as soon as a run has finished, so its result can be recorded
    before the next one starts (an interruption then loses only the run in progress). Runs that
    share a recipe are what a cohort trainer can train together; this trainer is the one-network
    path every other one must agree with.
    """
    if recipe.cohort != 1 and len(runs) > 1:
        return _train_cohorts(runs, recipe, reporter, done)
    results = []
    for run in runs:
        results.append(_train_one(run, recipe, reporter))
        if done is not None:
            done(run, results[-1])
    return results


def _train_cohorts(runs: Sequence[Run], recipe: Recipe, reporter: Any = None,
                   done: Callable[[Run, TrainResult], None] | None = None) -> list[TrainResult]:
    """`train` with `recipe.cohort` > 1 or 'auto': the cohorts of `ticketx.cohort.plan`, a run that cannot
    join one (or is alone in it) on the one-network path."""
    import dataclasses

    from ticketx import cohort

    tools = cohort.Tools(make_optimizer, TrainResult, eval_batch_size, LOG_EVERY, track, tracked_config,
                         training_split, measure_fit)
    results: list[TrainResult] = []
    told = False
    for group in cohort.plan(runs, recipe):
        if len(group) > 1 and not told and runtime.compile_mode(recipe.compile) == "on":
            from ticketx.ui import Reporter

            told = True  # asked for explicitly: say why it is not honoured here (README "Cohorts")
            (reporter if reporter is not None else Reporter()).log(
                "[yellow]--compile on: cohorts train eager (their compiled vmapped step ran slower than eager); "
                "runs trained alone are compiled[/]")
        if len(group) == 1:
            run, start = group[0]
            results.append(_train_one(dataclasses.replace(run, start=lambda start=start: start), recipe, reporter))
            if done is not None:
                done(run, results[-1])
        else:
            results += cohort.train_group(group, recipe, reporter, done, tools)
    return results


def _train_one(run: Run, recipe: Recipe, reporter: Any = None) -> TrainResult:
    """Train one run (in place) from absolute step `run.start_step` to the end of the recipe's length.

    The learning-rate schedule is indexed by the absolute step, so a rewound network retrained
    from step k sees the same schedule as the original run from step k onwards (open_lth).
    With a folder, state is saved atomically at every epoch end and restored on start. CPU runs
    pick their thread count with `ticketx.threads.training_threads`.

    Under DDP (ticketx.distributed) every rank calls this with the same arguments: each trains on
    its shard of every global batch of `spec.batch_size`, with the same schedule and number of
    steps as one process; only rank 0 reports progress and writes the checkpoint.
    """
    from ticketx.ui import Reporter

    spec, device, steps = recipe.spec, recipe.device, recipe.steps
    reporter = reporter if reporter is not None and distributed.is_main() else Reporter()
    data, val, noise = training_split(recipe, run)
    start = run.start()
    model, mask = start.model, start.mask
    batch = max(1, min(spec.batch_size, len(data.train_y)))
    distributed.check_batch_size(batch)
    threads = training_threads(model, tuple(data.train_x.shape[1:]), batch // distributed.world_size(), device)
    if run.start_step >= steps.total:
        raise UsageError(f"the rewind point (step {run.start_step}) is not before the end of training ({steps.total} steps)")
    sync_bn = distributed.sync_bn_wanted()
    if sync_bn and device.type == "cpu":
        raise UsageError("TICKETX_SYNC_BN=1 needs GPUs: PyTorch's SyncBatchNorm has no CPU kernel")
    with cpu_threads(threads), distributed.sync_batchnorm(model, sync_bn):
        setup = prepare(model, spec, mask=mask, device=device, channels_last=recipe.channels_last, compile=recipe.compile,
                        frozen=start.frozen, sample_shape=tuple(data.train_x.shape[1:]))
        batches = make_batches(data, spec.batch_size, setup, val, augment=spec.augment)
        state = TrainState(model, setup.optimizer, setup.stepper.scaler, run.start_step, run.start_step,
                           RunningLoss(setup.device))
        if run.start_step in run.snapshot_steps:
            state.snapshots[run.start_step] = state_copy(model)
        checkpoint = run.checkpoint
        if checkpoint is not None and state.load(checkpoint, run.key):
            reporter.log(f"[dim]{run.label}: resumed from checkpoint at step {state.step}/{steps.total}[/]")
        task = reporter.start(run.label, steps.total)
        reporter.update(task, state.step)
        evaluation = EvalHook(batches, steps, spec.precision, reporter, task)
        hooks: list[Hook] = [LogHook(reporter, task, run.label, steps), SnapshotHook(run.snapshot_steps), evaluation]
        # only rank 0's reporter tracks (see above): the hook makes no collective call
        tracked = track(reporter, run.label, tracked_config(run, recipe, start), folder=run.folder, key=run.key,
                        kind=run.experiment or "network")
        if tracked is not None:
            setup.stepper.count_correct()
            hooks.append(TrackHook(tracked, steps, setup.stepper, evaluation, {**run.info, **start.info}.get("density"),
                                   since=(time.perf_counter(), state.step)))
        if checkpoint is not None:
            hooks.append(CheckpointHook(checkpoint, run.key, steps.total))
        if setup.stepper.compile_mode:
            hooks.append(CompileHook(reporter, run.label, setup.stepper))
        try:
            run_epochs(setup.stepper, steps, batches.train, state, hooks, run.data_seed)
        finally:
            if tracked is not None:
                tracked.finish(ok=state.step >= steps.total)
        seconds = state.seconds()
        train_acc, memorised = measure_fit(model, batches.train, noise, spec.precision)
        reporter.finish(task)
        if setup.channels_last:
            model.to(memory_format=torch.contiguous_format)
    final = state.history[-1]
    return TrainResult(
        test_acc=final["test_acc"], val_acc=final.get("val_acc"), history=state.history, snapshots=state.snapshots,
        seconds=seconds, steps=state.step - run.start_step,
        images_per_second=state.images / max(1e-9, time.perf_counter() - state.started), model=model,
        mask=mask, info=start.info, train_acc=train_acc, memorised=memorised,
        noise=None if noise is None else noise.as_dict(),
    )
