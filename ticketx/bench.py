"""`ticketx bench`: ticketx's training path side by side with plain PyTorch, in one process.

Every row times its variants interleaved in the same process on the same device: each repeat
runs all variants back to back, alternating their order, and a ratio is the median of the
per-repeat ratios, so background load that comes and goes hits both sides alike. Absolute
figures are medians. What is measured is the real code: `Batches`, `Stepper`, `MaskEnforcer`,
the ticket file and the thread policy of `ticketx.train`, never a copy of them.

Rows (goals from issue 5):
  data      training batches/s: Batches vs torchvision DataLoader + PIL transforms    >= 5x
  mask      masked vs unmasked training step (resnet20, vgg16; density 0.2)            <= 1.05x
  prune     ticketx masked step vs torch.nn.utils.prune on the same model              <= 1.0x
  ticket    resnet50, 5 rounds: ticket masks vs torch.save bool / int32 masks          <= 1/8, 1/32
  speed     resnet20 images/s: plain fp32 NCHW eager loop vs ticketx's default, bf16   >= 1x
  mfu       CUDA: images/s x training FLOPs per image / the device's peak
            (full bench on CUDA also: torch.compile'd step vs eager)
  threads   CPU: 1 thread vs torch's default count (the evidence for the thread policy)
  parallel  (full bench) 2 training processes at once vs 1

`--e2e` instead runs a whole ticket search (`ticketx find`, resnet20) against the same search
written as a plain PyTorch loop with torchvision's DataLoader, at equal hyperparameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketx import masks as M
from ticketx.errors import UsageError
from ticketx.train import (
    MaskEnforcer,
    Stepper,
    cpu_threads,
    make_optimizer,
    resolve_device,
    training_threads,
)

ROWS = ("data", "mask", "prune", "ticket", "speed", "mfu", "threads", "parallel")

# CIFAR-10 per-channel statistics (Krizhevsky 2009 training set): only used to normalise the
# synthetic images, so both data paths do the same arithmetic.
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)

# Dense peak TFLOP/s by device-name fragment (vendor data sheets): (bf16/fp16 tensor, tf32 tensor, fp32).
# First match wins, so the more specific names come first.
PEAK_TFLOPS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("H100 PCIe", (756.0, 378.0, 51.0)),
    ("H100 NVL", (835.0, 418.0, 60.0)),
    ("H100", (989.0, 495.0, 67.0)),  # SXM
    ("H200", (989.0, 495.0, 67.0)),
    ("GH200", (989.0, 495.0, 67.0)),
    ("A100", (312.0, 156.0, 19.5)),
    ("L40S", (362.0, 183.0, 91.6)),
    ("L4", (121.0, 60.0, 30.3)),
    ("A10G", (70.0, 35.0, 31.2)),
    ("A10", (125.0, 62.5, 31.2)),
    ("RTX 4090", (165.0, 82.6, 82.6)),
    ("RTX 3090", (71.0, 35.6, 35.6)),
    ("V100", (125.0, 15.7, 15.7)),  # fp16 tensor cores; no bf16, no tf32
    ("T4", (65.0, 8.1, 8.1)),
)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: ticketx vs a baseline, the ratio, the goal and whether it is met."""

    key: str
    what: str
    ticketx: float  # absolute figure of ticketx's path, in `unit`
    baseline: float  # the same figure for the baseline (nan when there is none)
    unit: str
    ratio: float  # in the goal's direction: a speedup (higher is better) or a cost (lower is better)
    goal: str = ""  # '>= 5x', '<= 1.05x', '<= 1/8', or '' (information only)
    ok: bool | None = None  # the median ratio meets the goal (None: no goal)
    note: str = ""
    ci: tuple[float, float] | None = None  # 95% interval of the median ratio (bootstrap over repeats)
    within_noise: bool | None = None  # the median misses the goal but the goal lies inside `ci`
    samples: int = 0  # paired repeats behind the ratio
    extra: dict[str, Any] = field(default_factory=dict)


def _goal(ratio: float, goal: str) -> bool | None:
    """Whether `ratio` meets a goal written '>= 5x', '<= 1.05x' or '<= 1/8'."""
    if not goal:
        return None
    op, _, value = goal.partition(" ")
    value = value.rstrip("x")
    target = 1 / float(value[2:]) if value.startswith("1/") else float(value)
    return ratio >= target if op == ">=" else ratio <= target


def median_ci(values: Sequence[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """Bootstrap interval of the median (fixed seed: the same samples give the same interval)."""
    import random

    rng = random.Random(0)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return meds[int(tail * resamples)], meds[min(resamples - 1, int((1 - tail) * resamples))]


def make_row(key: str, what: str, ticketx: float, baseline: float, unit: str, ratio: float, goal: str = "",
             note: str = "", ratios: Sequence[float] | None = None, **extra: Any) -> Row:
    """A Row; with the per-repeat `ratios`, the 95% interval of their median and a noise-aware verdict."""
    ci = median_ci(ratios) if ratios is not None and len(ratios) >= 3 else None
    ok = _goal(ratio, goal)
    within_noise = None
    if ok is False and ci is not None:
        within_noise = bool(_goal(ci[0], goal) or _goal(ci[1], goal))
    return Row(key, what, ticketx, baseline, unit, ratio, goal, ok, note, ci, within_noise,
               len(ratios) if ratios is not None else 0, extra)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    *,
    repeats: int,
    inner: int = 1,
    warmup: int = 1,
    threads: dict[str, int | None] | None = None,
    budget: float = 0.0,
    max_repeats: int = 400,
) -> dict[str, list[float]]:
    """Seconds per call of each function, `repeats` samples each.

    A sample is `inner` calls; the calls of all functions alternate one by one (A B C C B A ...),
    so load that comes and goes on a shared machine lands on every side alike and the ratio of
    two functions' samples from the same repeat compares like with like. With a `budget` in
    seconds, repeats continue past `repeats` until it is spent (small differences need many
    samples on a noisy machine). `threads` gives a CPU thread count per function (None: unchanged).
    """
    threads = threads or {}
    for name, fn in fns.items():
        with cpu_threads(threads.get(name)):
            for _ in range(warmup):
                fn()
    _sync(device)
    keys = list(fns)
    times: dict[str, list[float]] = {k: [] for k in keys}
    start = time.perf_counter()
    r = 0
    while r < repeats or (time.perf_counter() - start < budget and r < max_repeats):
        r += 1
        spent = dict.fromkeys(keys, 0.0)
        for i in range(inner):
            for name in keys if i % 2 == 0 else keys[::-1]:
                with cpu_threads(threads.get(name)):
                    _sync(device)
                    t0 = time.perf_counter()
                    fns[name]()
                    _sync(device)
                    spent[name] += time.perf_counter() - t0
        for name in keys:
            times[name].append(spent[name] / inner)
    return times


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-repeat ratios num[i] / den[i] (the two were measured back to back)."""
    return [a / b for a, b in zip(num, den)]


med = statistics.median


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    """How much each row measures. Quick: under a minute on 2 CPU cores."""

    data_images: int
    data_batch: int
    data_repeats: int
    resnet_batch: int
    vgg_batch: int
    mask_repeats: int
    mask_inner: int
    speed_batch: int
    speed_repeats: int
    speed_inner: int
    ticket_repeats: int
    thread_repeats: int
    parallel: bool
    ticket_model: str = "resnet50"
    mask_budget: float = 0.0  # seconds of paired steps per model in the mask rows (more samples)

    @classmethod
    def for_run(cls, quick: bool, device: torch.device) -> "Sizes":
        if device.type == "cuda":  # the GPU needs big batches and many steps per timing
            # (the DataLoader + PIL baseline runs at a few thousand images/s whatever the GPU)
            if quick:
                return cls(4096, 512, 3, 256, 128, 5, 10, 256, 5, 10, 2, 0, False, mask_budget=4.0)
            return cls(8192, 512, 5, 512, 256, 9, 20, 512, 9, 20, 3, 0, True, mask_budget=15.0)
        if quick:
            return cls(1024, 128, 3, 16, 16, 9, 1, 16, 5, 1, 1, 3, False, mask_budget=6.0)
        return cls(4096, 128, 5, 64, 32, 9, 1, 64, 5, 1, 3, 5, True, mask_budget=20.0)


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


def synthetic_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-sized uint8 images [n, 3, 32, 32] and labels 0..9 (random pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


class ArrayImages(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's in-memory layout: HWC uint8 numpy, a PIL image per sample."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Any) -> None:
        self.data = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = [int(t) for t in y]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def torchvision_transform(mean: Sequence[float], std: Sequence[float], train: bool) -> Any:
    """The standard CIFAR pipeline: RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize."""
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def _train_spec(model_name: str, **over: Any) -> Any:
    from ticketx.spec import resolve_train

    return resolve_train(model_name, over)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def random_mask(model: nn.Module, density: float, seed: int = 0) -> M.Mask:
    """A mask keeping `density` of every prunable tensor at random (the cost does not depend on which)."""
    from ticketx.models import prunable_names

    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g) < density for n in prunable_names(model)}


@dataclass
class Setup:
    """A model ready to step the way `ticketx.train` steps it, with one fixed input batch."""

    step: Callable[[], Any]
    threads: int | None
    model: nn.Module


def ticketx_setup(name: str, batch: int, device: torch.device, *, mask: M.Mask | None = None,
                  precision: str = "fp32", channels_last: bool | None = None, seed: int = 0,
                  compile: bool = False) -> Setup:
    """The training path of `ticketx.train`: its layout, optimizer, mask enforcement, Stepper and threads."""
    from ticketx.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, 10, 3, 32)
    threads = training_threads(model, (3, 32, 32), batch) if device.type == "cpu" else None
    model.to(device)
    cl = _has_conv(model) if channels_last is None else channels_last
    if cl:
        model.to(memory_format=torch.channels_last)
    if mask is not None:
        M.apply(model, mask)
    return _stepping(name, model, batch, device, cl, threads, MaskEnforcer(model, mask), seed=seed,
                     precision=precision, compile=compile)


def _stepping(name: str, model: nn.Module, batch: int, device: torch.device, channels_last: bool,
              threads: int | None, enforce: Callable[[], None] | None, *, seed: int = 0,
              precision: str = "fp32", compile: bool = False) -> Setup:
    """`model` with its paper's optimizer and one fixed synthetic batch, stepped by ticketx's Stepper."""
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], _train_spec(name, batch_size=batch))
    stepper = Stepper(model, optimizer, enforce, device=device, precision=precision, compile=compile)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    model.train()
    return Setup(lambda: stepper(x, y), threads, model)


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


def bench_data(device: torch.device, sz: Sizes, workers: int = 0) -> list[Row]:
    """Training batches (crop + flip + normalise, on the device): Batches vs DataLoader + PIL."""
    from ticketx.data import Batches

    x, y = synthetic_images(sz.data_images)
    batches = Batches(x, y, batch_size=sz.data_batch, mean=_CIFAR_MEAN, std=_CIFAR_STD, train=True, crop_padding=4,
                      flip=True, device=device, channels_last=True)
    ds = ArrayImages(x, y, torchvision_transform(_CIFAR_MEAN, _CIFAR_STD, train=True))
    counter = [0]

    def ticketx_epoch() -> None:
        counter[0] += 1
        for xb, _ in batches.epoch(torch.Generator().manual_seed(counter[0])):
            pass
        _sync(device)

    rows = []
    for w in sorted({0, workers}):
        loader = torch.utils.data.DataLoader(ds, batch_size=sz.data_batch, shuffle=True, drop_last=True, num_workers=w,
                                             pin_memory=device.type == "cuda", persistent_workers=w > 0)

        def loader_epoch(loader: Any = loader) -> None:
            for xb, yb in loader:  # a training loop moves every batch to the device
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            _sync(device)

        t = interleave({"ticketx": ticketx_epoch, "torchvision": loader_epoch}, device, repeats=sz.data_repeats)
        n = len(batches) * sz.data_batch
        r = ratios(t["torchvision"], t["ticketx"])  # time ratio = throughput ratio
        how = "in the main process" if w == 0 else f"{w} worker processes, persistent"
        rows.append(make_row(
            "data" if w == 0 else f"data_workers{w}",
            f"training batches (crop+flip+normalise), DataLoader num_workers={w}",
            n / med(t["ticketx"]), n / med(t["torchvision"]), "img/s", med(r), ">= 5x",
            f"synthetic uint8 32x32x3, batch {sz.data_batch}; DataLoader + PIL {how}", r,
        ))
    return rows


def _prune_setup(name: str, batch: int, device: torch.device, mask: M.Mask, threads: int | None) -> Setup:
    """The same model, layout and optimizer, masked with torch.nn.utils.prune instead."""
    from torch.nn.utils import prune

    from ticketx.models import build_model

    torch.manual_seed(0)
    model = build_model(name, 10, 3, 32).to(device)
    cl = _has_conv(model)
    if cl:
        model.to(memory_format=torch.channels_last)
    modules = dict(model.named_modules())
    for pname, m in mask.items():
        mod_name, _, attr = pname.rpartition(".")
        prune.custom_from_mask(modules[mod_name], attr, m.to(device))
    return _stepping(name, model, batch, device, cl, threads, None)


def bench_mask(device: torch.device, sz: Sizes, with_prune: bool = True, with_mask: bool = True) -> list[Row]:
    """Masked vs unmasked step, and ticketx's masking vs torch.nn.utils.prune, per model."""
    rows = []
    for name, batch in (("resnet20", sz.resnet_batch), ("vgg16", sz.vgg_batch)):
        dense = ticketx_setup(name, batch, device)
        mask = random_mask(dense.model, 0.2)
        masked = ticketx_setup(name, batch, device, mask=mask)
        fns = {"dense": dense.step, "masked": masked.step}
        if with_prune:
            fns["prune"] = _prune_setup(name, batch, device, mask, masked.threads).step
        with cpu_threads(masked.threads):
            t = interleave(fns, device, repeats=sz.mask_repeats, inner=sz.mask_inner, warmup=2, budget=sz.mask_budget)
        threads = masked.threads or torch.get_num_threads()
        note = f"batch {batch}, density 0.2, {'%d CPU thread(s)' % threads if device.type == 'cpu' else device.type}"
        if with_mask:
            r = ratios(t["masked"], t["dense"])
            rows.append(make_row(f"mask_{name}", f"{name}: masked / unmasked training step", 1e3 * med(t["masked"]),
                                 1e3 * med(t["dense"]), "ms/step", med(r), "<= 1.05x", note, r))
        if with_prune:
            r = ratios(t["masked"], t["prune"])
            rows.append(make_row(f"prune_{name}", f"{name}: ticketx masked step / torch.nn.utils.prune", 1e3 * med(t["masked"]),
                                 1e3 * med(t["prune"]), "ms/step", med(r), "<= 1.0x", note + "; same layout and optimizer", r))
    return rows


class _CountingFile(io.RawIOBase):
    """A write-only file that keeps only its size: how many bytes torch.save writes."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        self.size += n
        return n


def saved_bytes(obj: Any) -> int:
    """Bytes torch.save writes for `obj`, without touching the disk (to within the few hundred
    bytes by which archive record names differ from a file's)."""
    f = _CountingFile()
    torch.save(obj, f)
    return f.size


def magnitude_rounds(weights: dict[str, torch.Tensor], rounds: int, rate: float = 0.2) -> list[M.Mask]:
    """Global magnitude pruning of fixed weights, `rate` of the remaining per round (nested masks)."""
    names = list(weights)
    flat = torch.cat([weights[n].detach().abs().reshape(-1).float() for n in names])
    sizes = [weights[n].numel() for n in names]
    out = []
    for r in range(1, rounds + 1):
        pruned = round(flat.numel() * (1 - (1 - rate) ** r))
        threshold = torch.kthvalue(flat, pruned).values
        keep = flat > threshold
        out.append({n: part.reshape(weights[n].shape).clone() for n, part in zip(names, torch.split(keep, sizes))})
    return out


def bench_ticket(sz: Sizes, rounds: int = 5, model_name: str = "resnet50") -> list[Row]:
    """Ticket file for resnet50 after 5 rounds vs the same masks saved with torch.save."""
    from ticketx import ticket as T
    from ticketx.models import build_model, prunable_names
    from ticketx.train import state_copy

    torch.manual_seed(0)
    model = build_model(model_name, 10, 3, 32)
    names = prunable_names(model)
    weights = {n: p for n, p in model.named_parameters() if n in names}
    per_round = magnitude_rounds(weights, rounds)
    rewind = state_copy(model)
    meta = {"model": model_name, "rounds": [{"round": r, "density": 1.0 if r == 0 else M.density(per_round[r - 1])}
                                            for r in range(rounds + 1)]}
    as_bool = {f"round_{r + 1}": m for r, m in enumerate(per_round)}
    with tempfile.TemporaryDirectory(prefix="ticketx-bench-") as tmp:
        ticket_path, bool_path = Path(tmp) / "ticket.pt", Path(tmp) / "masks_bool.pt"
        T.save(T.make(meta, per_round, rewind), ticket_path)
        torch.save(as_bool, bool_path)
        ticket_bytes, bool_bytes = ticket_path.stat().st_size, bool_path.stat().st_size
        rewind_bytes = saved_bytes(rewind)
        int32_bytes = saved_bytes({k: {n: t.to(torch.int32) for n, t in m.items()} for k, m in as_bool.items()})

        def load_ticket() -> None:  # what a transfer does: open (and check) the ticket, decode its last round
            t = T.load(ticket_path)
            t.mask(t.num_rounds)

        def load_bool() -> None:
            torch.load(bool_path, weights_only=True)

        # No warm-up: the files were just written, so both are in the page cache already.
        t = interleave({"ticket": load_ticket, "bool": load_bool}, torch.device("cpu"), repeats=sz.ticket_repeats, warmup=0)
    # The masks' share of the ticket: the file minus the same rewind weights saved alone, so
    # the ticket's header and metadata count against it.
    mask_bytes = ticket_bytes - rewind_bytes
    weights_n = sum(w.numel() for w in weights.values())
    note = (f"{model_name}, {weights_n / 1e6:.1f}M prunable weights, {rounds} rounds at 20%; whole ticket with fp32 "
            f"rewind weights {ticket_bytes / 2**20:.1f} MiB")
    lt = ratios(t["ticket"], t["bool"])
    return [
        make_row("ticket_vs_bool", f"ticket masks / torch.save bool masks ({rounds} rounds)", mask_bytes / 2**20,
                 bool_bytes / 2**20, "MiB", mask_bytes / bool_bytes, "<= 1/8", note),
        make_row("ticket_vs_int32", f"ticket masks / torch.save int32 masks ({rounds} rounds)", mask_bytes / 2**20,
                 int32_bytes / 2**20, "MiB", mask_bytes / int32_bytes, "<= 1/32", note),
        make_row("ticket_load", "load: ticket / torch.load of the bool masks", med(t["ticket"]), med(t["bool"]), "s", med(lt),
                 "", f"ticket.load (checks every round, loads the rewind weights) + the last round's mask; {model_name}", lt),
    ]


def plain_setup(name: str, batch: int, device: torch.device, seed: int = 0) -> Setup:
    """The textbook loop: NCHW fp32 eager, torch's default threads and optimizer, loss.item() every step."""
    from ticketx.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, 10, 3, 32).to(device)
    spec = _train_spec(name, batch_size=batch)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    model.train()

    def step() -> float:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return Setup(step, None, model)


def train_flops_per_image(model: nn.Module, device: torch.device) -> float:
    """Forward + backward FLOPs per 32x32 image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    fmt = torch.channels_last if _has_conv(model) else torch.contiguous_format
    x = torch.randn(2, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def device_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s, device name) for `precision` from PEAK_TFLOPS; None when unknown."""
    if device.type != "cuda":
        return None, cpu_name()
    name = torch.cuda.get_device_name(device)
    for fragment, (half, tf32, fp32) in PEAK_TFLOPS:
        if fragment.lower() in name.lower():
            if precision in ("bf16", "fp16"):
                return half * 1e12, name
            # cuDNN runs fp32 convolutions on TF32 tensor cores unless told not to.
            return (tf32 if torch.backends.cudnn.allow_tf32 else fp32) * 1e12, name
    return None, name


def bench_speed(device: torch.device, sz: Sizes, with_mfu: bool = True, with_compile: bool = False) -> list[Row]:
    """resnet20 training images/s: the textbook fp32 NCHW loop vs ticketx's default path, and bf16."""
    batch = sz.speed_batch
    plain = plain_setup("resnet20", batch, device)
    fp32 = ticketx_setup("resnet20", batch, device)
    bf16 = ticketx_setup("resnet20", batch, device, precision="bf16")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t = interleave({"plain": plain.step, "ticketx": fp32.step, "bf16": bf16.step}, device, repeats=sz.speed_repeats,
                   inner=sz.speed_inner, warmup=2, threads={"ticketx": fp32.threads, "bf16": bf16.threads})
    ips = {k: batch / med(v) for k, v in t.items()}
    threads = fp32.threads or torch.get_num_threads()
    layout = "channels_last" if _has_conv(fp32.model) else "NCHW"
    where = f"{threads} CPU thread(s)" if device.type == "cpu" else "cudnn.benchmark"
    r = ratios(t["plain"], t["ticketx"])
    rb = ratios(t["ticketx"], t["bf16"])
    rows = [
        make_row("speed_fp32", "resnet20 training: ticketx default / plain fp32 NCHW eager loop", ips["ticketx"], ips["plain"],
                 "img/s", med(r), ">= 1x", f"batch {batch}; ticketx: fp32, {layout}, {where}, no host sync; "
                 f"plain: NCHW, loss.item() every step, torch's {torch.get_num_threads()} thread(s)", r),
        make_row("speed_bf16", "resnet20 training: ticketx bf16 autocast / ticketx fp32", ips["bf16"], ips["ticketx"], "img/s",
                 med(rb), "", _bf16_note(device), rb),
    ]
    if with_mfu:
        flops = train_flops_per_image(fp32.model, device)
        for key, prec in (("ticketx", "fp32"), ("bf16", "bf16")):
            peak, name = device_peak(device, prec)
            achieved = ips[key] * flops
            mfu = achieved / peak if peak else float("nan")
            note = f"{flops / 1e9:.3f} GFLOP per training image (FlopCounterMode); {name}"
            note += f", peak {peak / 1e12:g} TFLOP/s" if peak else ", peak unknown"
            rows.append(make_row(f"mfu_{prec}", f"resnet20 {prec}: model FLOPs utilisation", achieved / 1e12, peak / 1e12 if peak else float("nan"),
                                 "TFLOP/s", mfu, "", note))
    if with_compile:
        rows += _bench_compile(device, sz)
    return rows


def _bench_compile(device: torch.device, sz: Sizes) -> list[Row]:
    """ticketx's step with the forward torch.compile'd (TICKETX_COMPILE=1) vs eager, resnet20 bf16."""
    batch = sz.speed_batch
    try:
        compiled = ticketx_setup("resnet20", batch, device, precision="bf16", compile=True)
        eager = ticketx_setup("resnet20", batch, device, precision="bf16")
        t0 = time.perf_counter()
        compiled.step()  # the compilation itself
        _sync(device)
        first = time.perf_counter() - t0
        t = interleave({"compiled": compiled.step, "eager": eager.step}, device, repeats=sz.speed_repeats,
                       inner=sz.speed_inner, warmup=2)
    except Exception as err:  # a missing compiler toolchain must not sink the whole bench
        return [make_row("compile", "resnet20 bf16: torch.compile / eager", float("nan"), float("nan"), "img/s",
                         float("nan"), "", f"torch.compile failed: {type(err).__name__}: {str(err)[:120]}")]
    r = ratios(t["eager"], t["compiled"])
    return [make_row("compile", "resnet20 bf16: ticketx --compile / eager (speedup)", batch / med(t["compiled"]),
                     batch / med(t["eager"]), "img/s", med(r), "", f"batch {batch}; first step (compiling) {first:.0f}s", r)]


def _bf16_note(device: torch.device) -> str:
    if device.type == "cpu":
        flags = cpu_flags()
        native = "avx512_bf16" in flags or "amx_bf16" in flags
        return "CPU " + ("with" if native else "without") + " native bf16 (avx512_bf16/amx): autocast " + \
            ("uses it" if native else "emulates it, so fp32 is the fast path here")
    return "bf16 autocast on tensor cores"


def bench_threads(device: torch.device, sz: Sizes) -> list[Row]:
    """Training steps at 1 thread vs torch's default count: small models lose to thread overhead."""
    default = torch.get_num_threads()
    if device.type != "cpu" or default <= 1:
        return []
    rows = []
    from ticketx.models import build_model

    for name, batch, shape, inner in (("lenet_300_100", 60, (1, 28, 28), 20), ("resnet20", sz.resnet_batch, (3, 32, 32), 1)):
        torch.manual_seed(0)
        model = build_model(name, 10, shape[0], shape[1])
        cl = _has_conv(model)
        if cl:
            model.to(memory_format=torch.channels_last)
        opt = make_optimizer(list(model.parameters()), _train_spec(name, batch_size=batch))
        stepper = Stepper(model, opt, None)
        x = torch.randn(batch, *shape)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, 10, (batch,))
        picked = training_threads(model, shape, batch)
        t = interleave({"one": lambda: stepper(x, y), "default": lambda: stepper(x, y)}, device, repeats=sz.thread_repeats,
                       inner=inner, warmup=2, threads={"one": 1, "default": default})
        r = ratios(t["default"], t["one"])
        rows.append(make_row(f"threads_{name}", f"{name} step: {default} threads / 1 thread (time)", 1e3 * med(t["one"]),
                             1e3 * med(t["default"]), "ms/step", med(r), "",
                             f"batch {batch}; ticketx picks {picked or default} thread(s) for this step", r))
    return rows


_WORKER = r"""
import json, sys, time, torch
from ticketx.bench import ticketx_setup
from ticketx.train import cpu_threads
name, batch, steps, device, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), torch.device(sys.argv[4]), sys.argv[5]
setup = ticketx_setup(name, batch, device)
with cpu_threads(int(threads) if threads != "auto" else setup.threads):
    for _ in range(3):
        setup.step()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for _ in range(steps):
        setup.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
"""


def _start_workers(arg_lists: list[list[str]]) -> list[subprocess.Popen]:
    """Start one worker process per argument list and wait until each has warmed up."""
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for args in arg_lists]
    for p in procs:
        line = p.stdout.readline() if p.stdout else ""
        if not line.startswith("ready"):
            _stop_workers(procs)
            raise RuntimeError(f"bench worker failed to start (exit {p.wait()})")
    return procs


def _release(procs: list[subprocess.Popen]) -> float:
    """Let warmed-up workers run at once; the wall time until the last one finishes."""
    t0 = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        json.loads(p.stdout.readline() if p.stdout else "")
    return time.perf_counter() - t0


def _stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        with contextlib.suppress(Exception):
            p.stdin.close()  # type: ignore[union-attr]
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def bench_parallel(device: torch.device, sz: Sizes, steps: int | None = None,
                   cases: Sequence[tuple[str, int, int]] | None = None) -> list[Row]:
    """Aggregate training throughput of 2 processes at once vs 1 (a study's seeds side by side).

    Three workers start and warm up together (imports are not timed); one runs alone, then two
    run at once. On CPU each of the two uses 1 thread, the lone one ticketx's usual count.
    """
    rows = []
    if cases is None:
        cases = (("lenet_300_100", 60, 300), ("resnet20", 32, 10)) if device.type == "cpu" else (("resnet20", 128, 200),)
    for name, batch, default_steps in cases:
        n = steps or default_steps
        args = [name, str(batch), str(n), str(device)]
        pair_threads = "1" if device.type == "cpu" else "auto"
        procs = _start_workers([args + ["auto"], args + [pair_threads], args + [pair_threads]])
        try:
            one = _release(procs[:1])
            two = _release(procs[1:])
        finally:
            _stop_workers(procs)
        rows.append(make_row(f"parallel_{name}", f"{name}: 2 runs at once / 1 run (throughput)", 2 * n * batch / two,
                             n * batch / one, "img/s", 2 * one / two, "",
                             f"separate processes, batch {batch}" + (", 1 thread each when 2 run" if device.type == "cpu" else "")))
    return rows


# ---------------------------------------------------------------------------------------------
# The whole bench
# ---------------------------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """Where the bench ran: device, CPU, threads and versions."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        info["torchvision"] = version("torchvision")
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError, AttributeError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def run(quick: bool = False, device: str = "auto", only: Sequence[str] | None = None, workers: int | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the bench rows (all, or `only`) and return {'machine', 'mode', 'rows', 'seconds'}."""
    dev = resolve_device(device)
    chosen = list(only) if only else list(ROWS)
    unknown = [r for r in chosen if r not in ROWS]
    if unknown:
        raise UsageError(f"unknown bench row(s) {', '.join(unknown)}: choose from {', '.join(ROWS)}")
    sz = Sizes.for_run(quick, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as ticketx.train does on CUDA
    if workers is None:
        workers = 0 if quick else min(4, os.cpu_count() or 1)
    log = log or (lambda msg: None)
    warning = busy_warning()
    if warning:
        log(f"[yellow]warning: {warning}[/]")
    t0 = time.perf_counter()
    rows: list[Row] = []
    steps: list[tuple[str, Callable[[], list[Row]]]] = [
        ("data", lambda: bench_data(dev, sz, workers)),
        ("mask", lambda: bench_mask(dev, sz, with_prune="prune" in chosen, with_mask="mask" in chosen)),
        ("ticket", lambda: bench_ticket(sz, model_name=sz.ticket_model)),
        # MFU needs a device peak: on CPU it is only measured in the full bench (FLOP counting costs ~2 s).
        ("speed", lambda: bench_speed(dev, sz, with_mfu="mfu" in chosen and (dev.type == "cuda" or not quick),
                                      with_compile=dev.type == "cuda" and not quick)),
        ("threads", lambda: bench_threads(dev, sz)),
        ("parallel", lambda: bench_parallel(dev, sz) if sz.parallel else []),
    ]
    for key, fn in steps:
        wanted = key in chosen or (key == "mask" and "prune" in chosen) or (key == "speed" and "mfu" in chosen)
        if not wanted:
            continue
        t = time.perf_counter()
        log(f"[dim]bench: {key} ...[/]")
        rows += fn()
        log(f"[dim]bench: {key} done in {time.perf_counter() - t:.1f}s[/]")
    return finite({"machine": machine(dev), "mode": "quick" if quick else "full", "rows": [asdict(r) for r in rows],
                   "seconds": round(time.perf_counter() - t0, 1), "warning": warning or busy_warning()})


def busy_warning() -> str:
    """A warning when other processes keep the CPUs busy (load average above half the CPUs)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return ""
    cpus = os.cpu_count() or 1
    if load <= 0.5 * cpus:
        return ""
    return (f"the CPUs are busy (load average {load:.1f} on {cpus} CPUs): timings are slow and noisy; ratios still "
            f"compare like with like, but rerun on a quiet machine for figures to publish")


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinity replaced by None, so that it is valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.3g}" if a >= 0.01 else f"{v:.2e}"


def _fmt_ratio(r: float, goal: str, key: str = "") -> str:
    if r is None or math.isnan(r):
        return "-"
    if key.startswith("mfu"):
        return f"{100 * r:.1f}%"
    if goal.endswith(("/8", "/32")) or (0 < r < 0.1 and not goal):
        return f"1/{1 / r:.1f}" if r > 0 else "0"
    return f"{r:.3f}x" if r < 10 else f"{r:.1f}x"


def render(result: dict[str, Any]) -> Any:
    """A Rich table of the rows: ratio, goal, PASS/FAIL, and the absolute figures beside them."""
    from rich.table import Table

    m = result["machine"]
    where = m.get("gpu") or m["cpu"]
    load = m.get("load_average")
    title = (f"ticketx bench ({result['mode']}) on {m['device']}: {where}, {m['cpu_count']} CPUs, torch "
             f"{m['torch']} ({m['torch_threads']} threads), {result['seconds']:.0f}s"
             + (f", load average {load[0]:.1f}" if load else ""))
    table = Table(title=title, title_justify="left")
    for col, just in (("measure", "left"), ("ratio", "right"), ("goal", "left"), ("result", "left"),
                      ("ticketx", "right"), ("baseline", "right"), ("unit", "left"), ("notes", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in result["rows"]:
        ok = row["ok"]
        verdict = "-" if ok is None else ("[green]PASS[/]" if ok else
                                          "[yellow]within noise[/]" if row.get("within_noise") else "[red]FAIL[/]")
        ratio = _fmt_ratio(row["ratio"], row["goal"], row["key"])
        if row.get("ci") and row["goal"] and row["ci"][0] is not None:
            lo, hi = row["ci"]
            ratio += f" [dim]({lo:.3f}-{hi:.3f})[/]"
        table.add_row(row["what"], ratio, row["goal"] or "-", verdict, _fmt(row["ticketx"]), _fmt(row["baseline"]),
                      row["unit"], row["note"])
    table.caption = ("ratio: median of per-repeat ratios (variants interleaved), 95% interval in brackets. "
                     "within noise: the median misses the goal but the goal lies inside that interval.")
    table.caption_justify = "left"
    return table


# ---------------------------------------------------------------------------------------------
# End to end: `ticketx find` vs the same search as a plain PyTorch loop
# ---------------------------------------------------------------------------------------------


def cifar10_archive() -> Path | None:
    """The real CIFAR-10 JPEG archive of the shared data folder, if present."""
    env = os.environ.get("TICKETX_CIFAR10_JPG")
    repo = Path(__file__).resolve().parents[1]
    for path in ([Path(env)] if env else []) + [repo.parent / "shared" / "data" / "cifar10-jpg.tar.gz",
                                                Path.cwd().parent / "shared" / "data" / "cifar10-jpg.tar.gz",
                                                Path("/work/shared/data/cifar10-jpg.tar.gz")]:
        if path.is_file():
            return path
    return None


def cifar10_subset(archive: Path, dest: Path, train_per_class: int, test_per_class: int) -> Path:
    """Extract a class-balanced subset of the JPEG archive into dest (once; reused afterwards)."""
    import tarfile
    from collections import Counter

    done = dest / ".complete"
    if done.exists():
        return dest
    quota = {"train": train_per_class, "test": test_per_class}
    taken: Counter = Counter()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:  # one streaming pass over the gzip, stopping at each class's quota
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[0] in quota and taken[parts[0], parts[1]] < quota[parts[0]]:
                taken[parts[0], parts[1]] += 1
                try:
                    tar.extract(member, dest, filter="data")
                except TypeError:  # Python without tarfile extraction filters
                    tar.extract(member, dest)
    done.write_text("ok")
    return dest


def synthetic_folder_data(n_train: int, n_test: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Learnable synthetic CIFAR-sized data: each class a colour and a stripe pattern, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        colour = torch.rand(10, 3, 1, 1, generator=g)[y] * 160
        rows = torch.arange(32).view(1, 1, 32, 1)
        stripes = ((rows // (1 + y.view(-1, 1, 1, 1) % 5)) % 2) * 60
        noise = torch.rand(n, 3, 32, 32, generator=g) * 90
        return (colour + stripes + noise).clamp(0, 255).to(torch.uint8), y

    return (*make(n_train), *make(n_test))


@dataclass
class E2EConfig:
    train_per_class: int = 200
    # 5000 test images: the binomial noise of one accuracy is then ~0.7 points (1.5 at 1000).
    test_per_class: int = 500
    epochs: int = 4
    rounds: int = 2
    batch_size: int = 128
    seed: int = 0  # the seed of one run (plain_imp); e2e() runs every seed of `seeds`
    workers: int = 0
    # Seed to seed, a 4-epoch resnet20 on 2000 images varies by ~2-3 accuracy points (measured:
    # 28.4-37.0% over 6 seeds of the plain loop), so the comparison needs several seeds.
    seeds: tuple[int, ...] = (0, 1, 2)


def same_within_noise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Is ticketx's accuracy the plain loop's, within seed noise?

    Seeds are the independent unit (a seed's rounds share their rewind weights), so each seed's
    search is summarised by its accuracy averaged over the rounds, and the two sides' means are
    compared against twice the standard error of their difference (Welch: each side's own
    seed-to-seed spread).
    """
    n = len(rounds[0]["ticketx_acc"])
    per_seed = {k: [statistics.mean(r[k][i] for r in rounds) for i in range(n)] for k in ("ticketx_acc", "plain_acc")}
    diff = statistics.mean(per_seed["ticketx_acc"]) - statistics.mean(per_seed["plain_acc"])
    if n < 2:
        return {"seeds": n, "mean_difference": diff, "noise": None, "same": None,
                "note": "one seed: no estimate of seed noise (run more seeds)"}
    se = math.sqrt(sum(statistics.variance(v) / n for v in per_seed.values()))
    same = abs(diff) <= 2 * se
    return {"seeds": n, "mean_difference": diff, "seed_sd": {k[:-4]: statistics.stdev(v) for k, v in per_seed.items()},
            "noise": 2 * se, "same": same,
            "note": f"mean over rounds: {100 * diff:+.2f} points, {'within' if same else 'beyond'} 2 standard errors "
                    f"({100 * 2 * se:.2f} points) of {n} seeds per side"}


def e2e(cfg: E2EConfig, device: str = "auto", log: Callable[[str], None] | None = None,
        cache: Path | None = None) -> dict[str, Any]:
    """Resnet20 ticket searches by `ticketx.find` and by a plain PyTorch loop, same hyperparameters, per seed.

    The data subset is extracted once into `cache` (default: the user cache folder + /bench).
    """
    import platformdirs

    from ticketx.data import load_data
    from ticketx.find import find
    from ticketx.spec import FindSpec, PruneSpec

    log = log or (lambda msg: None)
    dev = resolve_device(device)
    cache = cache or Path(platformdirs.user_cache_dir("ticketx")) / "bench"
    archive = cifar10_archive()
    if archive is not None:
        folder = cifar10_subset(archive, cache / f"cifar10-jpg-{cfg.train_per_class}-{cfg.test_per_class}",
                                cfg.train_per_class, cfg.test_per_class)
        source = f"real CIFAR-10 ({archive}), {cfg.train_per_class}/class train, {cfg.test_per_class}/class test"
    else:
        folder = cache / f"synthetic-{cfg.train_per_class}-{cfg.test_per_class}"
        _write_synthetic_folder(folder, cfg)
        source = ("SYNTHETIC data (the CIFAR-10 archive ../shared/data/cifar10-jpg.tar.gz was not found): "
                  f"{cfg.train_per_class}/class train, {cfg.test_per_class}/class test")
    log(f"[dim]e2e data: {source}[/]")
    data_text = f"imagefolder:{folder}"
    data = load_data(data_text, cache / "data", image_size=32)  # decoded once (cached) before any timing

    epochs = cfg.epochs
    milestone = f"{max(1, round(epochs * 0.75))}ep"  # one lr drop at 3/4 of training, as 120/160 in open_lth
    tspec = _train_spec("resnet20", batch_size=cfg.batch_size, length=f"{epochs}ep", milestones=[milestone],
                        eval_every=f"{epochs}ep")
    pspec = PruneSpec(rounds=cfg.rounds, rate=0.2, scope="global", rewind="1ep")

    per_seed = []
    for i, seed in enumerate(cfg.seeds):
        spec = FindSpec(data=data_text, model="resnet20", image_size=32, train=tspec, prune=pspec, seed=seed)

        def run_ticketx() -> tuple[float, list[dict[str, Any]]]:
            with tempfile.TemporaryDirectory(prefix="ticketx-e2e-") as tmp:
                t0 = time.perf_counter()
                ticket = find(spec, Path(tmp) / "ticket.pt", data_dir=cache / "data", device=str(dev))
                return time.perf_counter() - t0, ticket.rounds

        def run_plain() -> tuple[float, dict[str, list[float]]]:
            t0 = time.perf_counter()
            out = plain_imp(data, dataclasses.replace(cfg, seed=seed), dev, lr=tspec.lr, momentum=tspec.momentum,
                            weight_decay=tspec.weight_decay, milestone_epoch=int(milestone[:-2]))
            return time.perf_counter() - t0, out

        # Alternate which side goes first, so a change in background load falls on both.
        first, second = ("ticketx", "plain") if i % 2 == 0 else ("plain", "ticketx")
        done: dict[str, Any] = {}
        for side in (first, second):
            log(f"[dim]e2e seed {seed}: {'ticketx find' if side == 'ticketx' else 'plain PyTorch loop'} ...[/]")
            done[side] = run_ticketx() if side == "ticketx" else run_plain()
            log(f"[dim]e2e seed {seed}: {side} done in {done[side][0]:.0f}s[/]")
        per_seed.append(done)

    rounds = []
    for r in range(cfg.rounds + 1):
        tx = [d["ticketx"][1][r]["test_acc"] for d in per_seed]
        pl = [d["plain"][1]["acc"][r] for d in per_seed]
        rounds.append({"round": r, "density": per_seed[0]["ticketx"][1][r]["density"],
                       "plain_density": per_seed[0]["plain"][1]["density"][r], "ticketx_acc": tx, "plain_acc": pl,
                       "ticketx_mean": statistics.mean(tx), "plain_mean": statistics.mean(pl)})
    t_tx = [d["ticketx"][0] for d in per_seed]
    t_pl = [d["plain"][0] for d in per_seed]
    out = {
        "data": source, "device": str(dev), "machine": machine(dev), "config": asdict(cfg),
        "train": tspec.model_dump(), "prune": pspec.model_dump(),
        "ticketx_seconds": t_tx, "plain_seconds": t_pl, "speedup": sum(t_pl) / sum(t_tx),
        "rounds": rounds, "accuracy": same_within_noise(rounds),
    }
    return finite(out)


def _write_synthetic_folder(folder: Path, cfg: E2EConfig) -> None:
    from PIL import Image

    if (folder / ".complete").exists():
        return
    n_train, n_test = 10 * cfg.train_per_class, 10 * cfg.test_per_class
    xtr, ytr, xte, yte = synthetic_folder_data(n_train, n_test)
    for split, xs, ys in (("train", xtr, ytr), ("test", xte, yte)):
        for i, (x, y) in enumerate(zip(xs, ys)):
            d = folder / split / f"class{int(y)}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x.permute(1, 2, 0).numpy()).save(d / f"{i:05d}.png")
    (folder / ".complete").write_text("ok")


def plain_imp(data: Any, cfg: E2EConfig, device: torch.device, *, lr: float, momentum: float, weight_decay: float,
              milestone_epoch: int) -> dict[str, list[float]]:
    """IMP with rewinding to epoch 1, written the usual way: torchvision DataLoader + PIL
    transforms, a per-epoch lr schedule, torch.nn.utils.prune.global_unstructured (20% of the
    remaining weights per round, over every conv and linear weight), loss.item() every step."""
    from torch.nn.utils import prune

    from ticketx.models import build_model, prunable_names

    torch.manual_seed(cfg.seed)
    train_ds = ArrayImages(data.train_x, data.train_y, torchvision_transform(data.mean, data.std, train=True))
    test_ds = ArrayImages(data.test_x, data.test_y, torchvision_transform(data.mean, data.std, train=False))
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                               num_workers=cfg.workers, pin_memory=device.type == "cuda",
                                               persistent_workers=cfg.workers > 0)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=256, num_workers=cfg.workers)
    model = build_model("resnet20", data.num_classes, 3, 32).to(device)
    modules = dict(model.named_modules())
    targets = [(modules[n.rpartition(".")[0]], "weight") for n in prunable_names(model)]

    def run_epochs(first: int, snapshot: bool) -> dict[str, torch.Tensor] | None:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        rewind = None
        for epoch in range(first, cfg.epochs):
            for g in opt.param_groups:
                g["lr"] = lr * (0.1 if epoch >= milestone_epoch else 1.0)
            model.train()
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss.item()
            if snapshot and epoch == 0:
                rewind = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return rewind

    def accuracy() -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
                total += len(y)
        return correct / total

    def density() -> float:
        kept = sum(int(m.weight_mask.sum()) if hasattr(m, "weight_mask") else m.weight.numel() for m, _ in targets)
        return kept / sum(m.weight.numel() for m, _ in targets)

    rewind = run_epochs(0, snapshot=True)
    assert rewind is not None
    accs, dens = [accuracy()], [1.0]
    for _ in range(cfg.rounds):
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.2)
        with torch.no_grad():  # rewind every weight (pruned ones are now 'X.weight_orig') and BN state to epoch 1
            state = model.state_dict()
            for k, v in rewind.items():
                state[k if k in state else k + "_orig"].copy_(v)
        run_epochs(1, snapshot=False)
        accs.append(accuracy())
        dens.append(density())
    return {"acc": accs, "density": dens}


def render_e2e(res: dict[str, Any]) -> Any:
    from rich.table import Table

    cfg = res["config"]
    title = (f"end to end: resnet20 ticket search, {cfg['rounds']} rounds x {cfg['epochs']} epochs, seeds "
             f"{','.join(map(str, cfg['seeds']))}, on {res['device']}; data: {res['data']}")
    table = Table(title=title, title_justify="left")
    for col in ("round", "% weights remaining", "ticketx acc % (mean)", "plain acc % (mean)", "difference",
                "ticketx per seed", "plain per seed"):
        table.add_column(col, justify="right")
    for r in res["rounds"]:
        table.add_row(str(r["round"]), f"{100 * r['density']:.2f}", f"{100 * r['ticketx_mean']:.2f}",
                      f"{100 * r['plain_mean']:.2f}", f"{100 * (r['ticketx_mean'] - r['plain_mean']):+.2f}",
                      " ".join(f"{100 * a:.1f}" for a in r["ticketx_acc"]), " ".join(f"{100 * a:.1f}" for a in r["plain_acc"]))
    acc = res["accuracy"]
    verdict = {True: "[green]same accuracy within seed noise[/]", False: "[red]accuracy differs beyond seed noise[/]",
               None: "[yellow]seed noise not estimated[/]"}[acc["same"]]
    table.caption = (f"time: ticketx find {sum(res['ticketx_seconds']):.0f}s, plain PyTorch loop + DataLoader "
                     f"(num_workers={cfg['workers']}) {sum(res['plain_seconds']):.0f}s: ticketx "
                     f"[bold]{res['speedup']:.2f}x[/] as fast; {verdict} ({acc['note']})")
    table.caption_justify = "left"
    return table


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m ticketx.bench [OPTIONS]` is `ticketx bench [OPTIONS]`."""
    from ticketx import cli

    sys.argv = ["ticketx", "bench", *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
