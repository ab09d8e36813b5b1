"""The training loop: masked SGD/Adam on tensor-resident data, checkpointed every epoch.

Masks are enforced after every optimizer step with one fused multiply over all pruned tensors,
so pruned weights stay exactly zero under momentum, weight decay and Adam's moments. The loop
never synchronises with the host inside a step except at logging intervals, and every source of
randomness is derived from (seed, epoch), so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketx import interrupt, store
from ticketx.errors import TicketxError, UsageError
from ticketx.spec import TrainSpec
from ticketx.steps import to_iterations

if TYPE_CHECKING:
    from ticketx.data import Batches, ImageData

LOG_EVERY = 25  # iterations between host reads of the running loss (a device sync)

# ---- CPU threads -----------------------------------------------------------------------------
# A training step smaller than this many FLOPs runs on one CPU thread: OpenMP synchronises the
# threads in every op (~10-50 us), as much as a small op's whole work, and a thread that loses
# its core to another process stalls every op. Measured on a 2-vCPU AMD EPYC VM (`ticketx bench`
# threads rows), lenet_300_100 at batch 60 (0.1 GFLOP): 1.8-2.6 vs 1.8-2.2 ms per step (1 vs 2
# threads) when the machine is idle, 4.1 vs 10.6 ms when other processes load it; two such runs
# side by side at 1 thread each train 1.8x as fast as one. Bigger steps (resnet20 at batch 128
# is ~30 GFLOP) gain from threads on an idle machine (1.5-1.8x), so they keep torch's count.
SMALL_STEP_FLOPS = 2e9
# torch's choice at import (all cores, or OMP_NUM_THREADS). A different count at train() time
# means the caller ran torch.set_num_threads, and that choice is respected.
_TORCH_DEFAULT_THREADS = torch.get_num_threads()
_MAC_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def forward_macs(model: nn.Module, sample_shape: Sequence[int]) -> int | None:
    """Multiply-adds of one sample's forward pass through the conv and linear layers (None if it fails).

    Runs one forward of a zero sample in eval mode without gradients: batch-norm statistics,
    the RNG and the weights are untouched.
    """
    total = 0

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        nonlocal total
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
        else:
            total += out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((1, *sample_shape), dtype=dtype, device=param.device if param is not None else "cpu")
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _MAC_LAYERS)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception:  # the estimate is only a hint; training reports real errors itself
        return None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def training_threads(model: nn.Module, sample_shape: Sequence[int], batch_size: int) -> int | None:
    """CPU threads to train `model` with, or None to leave torch's setting alone.

    $TICKETX_THREADS wins. OMP_NUM_THREADS, MKL_NUM_THREADS or an earlier torch.set_num_threads
    are respected. Otherwise one thread when a step (3x the forward, 2 FLOPs per multiply-add)
    is under SMALL_STEP_FLOPS. The choice depends only on the model and the batch, never on the
    machine's load, so --deterministic runs stay bit-reproducible.
    """
    env = os.environ.get("TICKETX_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UsageError(f"TICKETX_THREADS must be a positive integer, got {env!r}")
        return int(env)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    if torch.get_num_threads() != _TORCH_DEFAULT_THREADS or _TORCH_DEFAULT_THREADS <= 1:
        return None
    macs = forward_macs(model, sample_shape)
    if macs is None:
        return None
    return 1 if 6 * macs * batch_size < SMALL_STEP_FLOPS else None


def eval_batch_size(device: torch.device, image_shape: Sequence[int]) -> int:
    """Evaluation batch: 1024 on a GPU; on CPU, about 256 images of 32x32 px, so activations stay in cache.

    Measured (resnet20, 32 px, one 2-vCPU EPYC with 32 MB L3): 1200 images/s in batches of
    128-256, 660 at 512 and 1024. Accuracy does not depend on it (eval mode: no batch statistics).
    """
    if torch.device(device).type != "cpu":
        return 1024
    pixels = max(1, int(image_shape[-1]) * int(image_shape[-2]))
    return int(min(1024, max(16, 256 * 32 * 32 // pixels)))


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch using `n` CPU threads (None: unchanged), then restore the count."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"invalid device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev


def set_deterministic(on: bool) -> None:
    """Bit-reproducible runs where PyTorch allows it.

    CPU: two runs with the same seeds give bit-identical tickets (masks, rewind weights,
    accuracies) on the same machine, torch version and thread count (tests/test_reliability.py).
    Another CPU type or thread count may round differently (other BLAS kernels).

    CUDA cannot always guarantee it:
    - ops without a deterministic CUDA kernel (e.g. the backward of adaptive/avg pooling,
      index_add_/scatter_add_, some interpolation backwards used by timm models) only *warn*
      here (warn_only=True) and stay nondeterministic, since refusing would stop those models;
    - cuBLAS is deterministic only with CUBLAS_WORKSPACE_CONFIG set before its first use in the
      process: set here if unset, which is too late when CUDA ran earlier in the same process;
    - results differ across GPU models, driver/CUDA/cuDNN versions and precisions (bf16/fp16).
    """
    if on:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # torch.use_deterministic_algorithms also imports torch._inductor (~2.5 s); the
        # switch it flips for eager mode is this one.
        setter = getattr(torch._C, "_set_deterministic_algorithms", None)
        if setter is not None:
            setter(True, warn_only=True)
        else:  # pragma: no cover - other torch versions
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def seed_for(*parts: int) -> int:
    """Derive an independent 63-bit seed from integers (stable across runs and machines)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


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
class Plan:
    """A TrainSpec turned into iteration counts for one data set."""

    iterations_per_epoch: int
    total: int
    eval_every: int
    schedule: Schedule

    @classmethod
    def make(cls, spec: TrainSpec, num_train: int) -> "Plan":
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
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, torch.Tensor] | None) -> None:
        params = dict(model.named_parameters())
        self.params: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        for name, m in (mask or {}).items():
            if bool(m.all()):
                continue
            p = params[name]
            self.params.append(p)
            self.masks.append(torch.empty_like(p).copy_(m))  # empty_like keeps p's strides

    @torch.no_grad()
    def __call__(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)


class Stepper:
    """One training step: forward under autocast, backward, optimizer update, masks re-applied.

    Returns the loss as a device tensor and never waits for the device, so the host queues the
    next step while this one runs (the loop reads the loss every LOG_EVERY steps). With
    `compile`, the forward is torch.compile'd; the masks are applied outside the compiled code,
    in place, so a later round on the same model reuses it without recompiling.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        enforce: Callable[[], None] | None = None,
        *,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.enforce = enforce or (lambda: None)
        self.device = torch.device(device)
        self.precision = precision
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compile else model

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float | None = None) -> torch.Tensor:
        if lr is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        with autocast(self.device, self.precision):
            loss = F.cross_entropy(self.forward(x), y)
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


@torch.no_grad()
def evaluate(model: nn.Module, batches: "Batches", precision: str = "fp32") -> float:
    """Top-1 accuracy over all batches (one host read at the end)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=batches.device)
    n = 0
    for x, y in batches.epoch():
        with autocast(batches.device, precision):
            out = model(x)
        correct += (out.argmax(dim=1) == y).sum()
        n += y.numel()
    model.train(was_training)
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
    extra: dict[str, Any] = field(default_factory=dict)


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state (parameters and buffers), in the default memory layout."""
    return {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def _with_training_threads(fn: Callable[..., "TrainResult"]) -> Callable[..., "TrainResult"]:
    """Run train() on CPU with the thread count `training_threads` picks, restored afterwards."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, data: "ImageData", spec: TrainSpec, **kw: Any) -> "TrainResult":
        n = None
        if torch.device(kw.get("device", "cpu")).type == "cpu":
            n = training_threads(model, tuple(data.train_x.shape[1:]), max(1, min(spec.batch_size, len(data.train_y))))
        with cpu_threads(n):
            return fn(model, data, spec, **kw)

    return wrapper


@_with_training_threads
def train(
    model: nn.Module,
    data: "ImageData",
    spec: TrainSpec,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    data_seed: int = 0,
    start_step: int = 0,
    snapshot_steps: Sequence[int] = (),
    checkpoint: Path | None = None,
    checkpoint_key: str = "",
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    reporter: Any = None,
    label: str = "train",
    channels_last: bool | None = None,
    compile: bool | None = None,
) -> TrainResult:
    """Train `model` (in place) from absolute step `start_step` to the end of `spec.length`.

    The learning-rate schedule is indexed by the absolute step, so a rewound network retrained
    from step k sees the same schedule as the original run from step k onwards (open_lth).
    `snapshot_steps` are absolute steps whose weights are returned (the rewind point).
    With `checkpoint`, state is saved atomically at every epoch end and restored on start.
    `channels_last` None = on for convolutional models; `compile` None = $TICKETX_COMPILE=1
    (torch.compile, meant for GPUs). CPU runs pick their thread count with `training_threads`.
    """
    from ticketx.data import Batches
    from ticketx.ui import Reporter

    reporter = reporter or Reporter()
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not torch.backends.cudnn.deterministic
    plan = Plan.make(spec, len(data.train_y))
    if start_step >= plan.total:
        raise UsageError(f"the rewind point (step {start_step}) is not before the end of training ({plan.total} steps)")
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last is None:
        # NHWC convolutions: tensor cores on CUDA, oneDNN's fastest kernels on CPU (measured:
        # resnet20 steps 0.73-0.89x the NCHW time on CPU, vgg16 about equal).
        channels_last = has_conv
    if compile is None:
        compile = os.environ.get("TICKETX_COMPILE", "").strip() not in ("", "0")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if mask:
        from ticketx.masks import apply

        apply(model, mask)
    train_batches = Batches(
        data.train_x, data.train_y, batch_size=spec.batch_size, mean=data.mean, std=data.std, train=True,
        crop_padding=data.crop_padding, flip=data.flip, device=device, channels_last=channels_last,
    )
    eval_bs = eval_batch_size(device, tuple(data.test_x.shape))
    test_batches = Batches(
        data.test_x, data.test_y, batch_size=eval_bs, mean=data.mean, std=data.std, train=False, device=device,
        channels_last=channels_last,
    )
    val_batches = None
    if val is not None and len(val[1]):
        val_batches = Batches(val[0], val[1], batch_size=eval_bs, mean=data.mean, std=data.std, train=False,
                              device=device, channels_last=channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, spec)
    enforce = MaskEnforcer(model, mask)
    stepper = Stepper(model, optimizer, enforce, device=device, precision=spec.precision, compile=compile)
    scaler = stepper.scaler

    step = start_step
    history: list[dict[str, Any]] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    if step in snapshot_steps:
        snapshots[step] = state_copy(model)
    elapsed = 0.0
    running = (0.0, 0, float("nan"))  # (loss sum, steps in it, last logged loss) carried across epochs
    if checkpoint is not None and checkpoint.exists():
        ck = store.load_torch(checkpoint, "checkpoint")
        if ck.get("key") == checkpoint_key and ck.get("start_step") == start_step:
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            step, history, elapsed = ck["step"], ck["history"], ck["elapsed"]
            snapshots = {int(k): v for k, v in ck["snapshots"].items()}
            running = tuple(ck.get("running", running))  # so a resumed run logs the same losses
            reporter.log(f"[dim]{label}: resumed from checkpoint at step {step}/{plan.total}[/]")

    task = reporter.start(label, plan.total)
    reporter.update(task, step)
    ipe = plan.iterations_per_epoch
    model.train()
    t0 = time.perf_counter()
    images = 0
    loss_sum = torch.full((), float(running[0]), device=device)
    loss_n = int(running[1])
    last_loss = float(running[2])
    while step < plan.total:
        epoch = step // ipe
        # Data order and augmentation depend only on (data_seed, epoch): resumable and the
        # same in every round of a ticket search (open_lth uses one data order per level).
        gen = torch.Generator().manual_seed(seed_for(data_seed, epoch))
        torch.manual_seed(seed_for(data_seed, epoch, 1))  # dropout and other stochastic layers
        epoch_end = min((epoch + 1) * ipe, plan.total)
        batches = itertools.islice(train_batches.epoch(gen), step - epoch * ipe, None)
        for x, y in batches:
            interrupt.check()  # a Ctrl-C/SIGTERM whose KeyboardInterrupt was swallowed stops here
            if step >= epoch_end:
                break
            loss = stepper(x, y, plan.schedule(step))
            step += 1
            images += y.shape[0]
            loss_sum += loss.float()
            loss_n += 1
            if step % LOG_EVERY == 0:
                last_loss = float(loss_sum.item()) / loss_n
                if not math.isfinite(last_loss):
                    raise TicketxError(f"{label}: training diverged (loss {last_loss}) at step {step}", "lower --lr or add --warmup")
                loss_sum.zero_()
                loss_n = 0
                reporter.update(task, step, epoch=f"{step / ipe:.1f}", loss=last_loss)
            if step in snapshot_steps:
                snapshots[step] = state_copy(model)
            if step % plan.eval_every == 0 or step == plan.total:
                if loss_n:
                    last_loss = float(loss_sum.item()) / loss_n
                    loss_sum.zero_()
                    loss_n = 0
                record = {"step": step, "epoch": round(step / ipe, 4), "loss": last_loss,
                          "test_acc": evaluate(model, test_batches, spec.precision)}
                if val_batches is not None:
                    record["val_acc"] = evaluate(model, val_batches, spec.precision)
                history.append(record)
                reporter.update(task, step, epoch=f"{step / ipe:.1f}", loss=last_loss, acc=record["test_acc"])
        if checkpoint is not None and step < plan.total:
            store.save_torch(checkpoint, {
                "key": checkpoint_key, "start_step": start_step, "step": step,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "history": history, "elapsed": elapsed + time.perf_counter() - t0,
                "snapshots": {str(k): v for k, v in snapshots.items()},
                "running": [float(loss_sum.item()), loss_n, last_loss],
            })
    seconds = elapsed + time.perf_counter() - t0
    reporter.finish(task)
    final = history[-1]
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return TrainResult(
        test_acc=final["test_acc"], val_acc=final.get("val_acc"), history=history, snapshots=snapshots,
        seconds=seconds, steps=step - start_step, images_per_second=images / max(1e-9, time.perf_counter() - t0),
    )
