"""The benchmark rows: ticketx's training path side by side with plain PyTorch, in one process.

Rows (goals from issue 5):
  data      training batches/s: Batches vs torchvision DataLoader + PIL transforms    >= 5x
  mask      masked vs unmasked training step (resnet20, vgg16; density 0.2)            <= 1.05x
  prune     ticketx masked step vs torch.nn.utils.prune on the same model              <= 1.0x
  ticket    resnet50, 5 rounds: ticket masks vs torch.save bool / int32 masks          <= 1/8, 1/32
  speed     resnet20 images/s: plain fp32 NCHW eager loop vs ticketx's default, bf16   >= 1x
  mfu       CUDA: images/s x training FLOPs per image / the device's peak
  precision (only when asked for, or in the full bench) accuracy: bf16 autocast vs fp32, whole trainings of
            lenet_300_100 on digits and on the e2e bench's real CIFAR-10 subset, paired by seed; on
            that subset also resnet20 (half the epochs) where bf16 is native (a GPU; avx512_bf16, AMX)
  compile   (only when asked for, or in the full bench) resnet20 and lenet_300_100 steps with --compile on
            vs eager, the cold and the cached compile seconds, and the steps it takes to earn them back
  threads   CPU: 1 thread vs torch's default count (the evidence for the thread policy)
  parallel  (full bench) 2 training processes at once vs 1 (`benchmarks.worker`)
  cohort    N networks in one cohort step (`ticketx.cohort`) vs N one-network steps, per model and N;
            lenet_300_100 on 8x8 digits, conv4 and resnet20 on 32x32; and 16 whole trainings
            with `--cohort auto` vs one at a time. Goal >= 1x where `auto` forms that cohort.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from benchmarks.harness import (Row, busy_warning, cpu_flags, device_peak, finite, interleave, machine, make_row, med,
                                ratios, sync)
from benchmarks.setups import (CIFAR_MEAN, CIFAR_STD, ArrayImages, cohort_setup, one_after_another, plain_setup,
                               prune_setup, random_mask, synthetic_images, ticketx_setup, torchvision_transform,
                               train_flops_per_image, train_spec)
from ticketx import masks as M
from ticketx import pruning
from ticketx import ticket as ticketfile
from ticketx.data import Batches
from ticketx.errors import UsageError
from ticketx.models import build_model, is_conv, prunable_names
from ticketx.threads import cpu_threads
from ticketx.runtime import resolve_device
from ticketx.train import state_copy

REPO = Path(__file__).resolve().parents[1]
ROWS = ("data", "mask", "prune", "ticket", "speed", "mfu", "threads", "parallel", "cohort", "compile", "precision")
# Rows the quick bench leaves out unless named in --only: they take minutes (compiling, whole trainings).
SLOW_ROWS = ("compile", "precision")


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
    # cohort rows: cohort sizes for the MLP and for the conv nets, the conv nets' batch (None: the
    # model's paper batch), repeats, steps per sample for the MLP, runs in the whole-training row
    cohort_mlp: tuple[int, ...] = (1, 2)
    cohort_conv: tuple[int, ...] = (1, 2)
    cohort_conv_batch: int | None = 2
    cohort_repeats: int = 2
    cohort_conv_repeats: int = 2
    cohort_inner: int = 1
    cohort_runs: int = 3
    compile_repeats: int = 2  # compile rows: interleaved repeats of compiled vs eager steps (after compiling)
    precision_seeds: int = 5  # precision rows: trainings per precision and model (paired by seed)
    precision_epochs: int = 20

    @classmethod
    def for_run(cls, quick: bool, device: torch.device) -> "Sizes":
        if device.type == "cuda":  # the GPU needs big batches and many steps per timing
            # (the DataLoader + PIL baseline runs at a few thousand images/s whatever the GPU)
            gpu = dict(cohort_mlp=(1, 4, 16, 64), cohort_conv=(1, 4, 16, 64), cohort_conv_batch=None, cohort_inner=10,
                       cohort_runs=16, compile_repeats=5)
            if quick:
                return cls(4096, 512, 3, 256, 128, 5, 10, 256, 5, 10, 2, 0, False, mask_budget=4.0, cohort_repeats=3,
                           cohort_conv_repeats=3, **gpu)
            return cls(8192, 512, 5, 512, 256, 9, 20, 512, 9, 20, 3, 0, True, mask_budget=15.0, cohort_repeats=7,
                       cohort_conv_repeats=7, **gpu)
        # CPU: conv nets at batch 32 (N=16 cohorts of the paper batches take minutes per sample here;
        # N=64 at batch 32 holds ~3-5 GB of activations)
        if quick:
            return cls(1024, 128, 3, 16, 16, 9, 1, 16, 5, 1, 1, 3, False, mask_budget=6.0, cohort_mlp=(1, 2, 4, 16),
                       cohort_conv=(1, 4), cohort_conv_batch=16, cohort_repeats=5, cohort_conv_repeats=3, cohort_inner=10,
                       cohort_runs=16, compile_repeats=5)
        return cls(4096, 128, 5, 64, 32, 9, 1, 64, 5, 1, 3, 5, True, mask_budget=20.0, cohort_mlp=(1, 2, 4, 16, 64),
                   cohort_conv=(1, 4, 16, 64), cohort_conv_batch=32, cohort_repeats=7, cohort_conv_repeats=3, cohort_inner=20,
                   cohort_runs=16, compile_repeats=9)


def bench_data(device: torch.device, sz: Sizes, workers: int = 0) -> list[Row]:
    """Training batches (crop + flip + normalise, on the device): Batches vs DataLoader + PIL."""
    x, y = synthetic_images(sz.data_images)
    batches = Batches(x, y, batch_size=sz.data_batch, mean=CIFAR_MEAN, std=CIFAR_STD, train=True, crop_padding=4,
                      flip=True, device=device, channels_last=True)
    ds = ArrayImages(x, y, torchvision_transform(CIFAR_MEAN, CIFAR_STD, train=True))
    counter = [0]

    def ticketx_epoch() -> None:
        counter[0] += 1
        for xb, _ in batches.epoch(torch.Generator().manual_seed(counter[0])):
            pass
        sync(device)

    rows = []
    for w in sorted({0, workers}):
        loader = torch.utils.data.DataLoader(ds, batch_size=sz.data_batch, shuffle=True, drop_last=True, num_workers=w,
                                             pin_memory=device.type == "cuda", persistent_workers=w > 0)

        def loader_epoch(loader: Any = loader) -> None:
            for xb, yb in loader:  # a training loop moves every batch to the device
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            sync(device)

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


def bench_mask(device: torch.device, sz: Sizes, with_prune: bool = True, with_mask: bool = True) -> list[Row]:
    """Masked vs unmasked step, and ticketx's masking vs torch.nn.utils.prune, per model."""
    rows = []
    for name, batch in (("resnet20", sz.resnet_batch), ("vgg16", sz.vgg_batch)):
        dense = ticketx_setup(name, batch, device)
        mask = random_mask(dense.model, 0.2)
        masked = ticketx_setup(name, batch, device, mask=mask)
        fns = {"dense": dense.step, "masked": masked.step}
        if with_prune:
            fns["prune"] = prune_setup(name, batch, device, mask, masked.threads).step
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
    """Nested masks of `rounds` rounds of global magnitude pruning of fixed weights (`ticketx.pruning.magnitude`)."""
    mask = M.ones_like(weights)
    out = []
    for _ in range(rounds):
        mask = pruning.magnitude(weights, mask, rate, scope="global")
        out.append(mask)
    return out


def bench_ticket(sz: Sizes, rounds: int = 5, model_name: str = "resnet50") -> list[Row]:
    """The ticket file (`ticketx.ticket`) of `model_name` after `rounds` rounds vs the same masks saved with torch.save."""
    torch.manual_seed(0)
    model = build_model(model_name, 10, 3, 32)
    names = prunable_names(model)
    weights = {n: p for n, p in model.named_parameters() if n in names}
    per_round = magnitude_rounds(weights, rounds)  # ticketx.pruning.magnitude, global scope, 20% per round
    rewind = state_copy(model)
    meta = {"model": model_name, "rounds": [{"round": r, "density": 1.0 if r == 0 else M.density(per_round[r - 1])}
                                            for r in range(rounds + 1)]}
    as_bool = {f"round_{r + 1}": m for r, m in enumerate(per_round)}
    with tempfile.TemporaryDirectory(prefix="ticketx-bench-") as tmp:
        ticket_path, bool_path = Path(tmp) / "ticket.pt", Path(tmp) / "masks_bool.pt"
        ticketfile.save(ticketfile.make(meta, per_round, rewind), ticket_path)
        torch.save(as_bool, bool_path)
        ticket_bytes, bool_bytes = ticket_path.stat().st_size, bool_path.stat().st_size
        rewind_bytes = saved_bytes(rewind)
        int32_bytes = saved_bytes({k: {n: t.to(torch.int32) for n, t in m.items()} for k, m in as_bool.items()})

        def load_ticket() -> None:  # what a transfer does: open (and check) the ticket, decode its last round
            t = ticketfile.load(ticket_path)
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


def bench_speed(device: torch.device, sz: Sizes, with_mfu: bool = True) -> list[Row]:
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
    layout = "channels_last" if is_conv(fp32.model) else "NCHW"
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
    return rows


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic is native on `device`: a GPU, or a CPU with avx512_bf16 or AMX."""
    if device.type != "cpu":
        return True
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _bf16_note(device: torch.device) -> str:
    if device.type == "cpu":
        native = native_bf16(device)
        return "CPU " + ("with" if native else "without") + " native bf16 (avx512_bf16/amx): autocast " + \
            ("uses it" if native else "emulates it, so fp32 is the fast path here")
    return "bf16 autocast on tensor cores"


def bench_threads(device: torch.device, sz: Sizes) -> list[Row]:
    """Training steps at 1 thread vs torch's default count: small models lose to thread overhead."""
    default = torch.get_num_threads()
    if device.type != "cpu" or default <= 1:
        return []
    rows = []
    for name, batch, shape, inner in (("lenet_300_100", 60, (1, 28, 28), 20), ("resnet20", sz.resnet_batch, (3, 32, 32), 1)):
        s = ticketx_setup(name, batch, device, shape=shape)
        t = interleave({"one": s.step, "default": s.step}, device, repeats=sz.thread_repeats, inner=inner, warmup=2,
                       threads={"one": 1, "default": default})
        r = ratios(t["default"], t["one"])
        rows.append(make_row(f"threads_{name}", f"{name} step: {default} threads / 1 thread (time)", 1e3 * med(t["one"]),
                             1e3 * med(t["default"]), "ms/step", med(r), "",
                             f"batch {batch}; ticketx picks {s.threads or default} thread(s) for this step", r))
    return rows


def _start_workers(arg_lists: list[list[str]]) -> list[subprocess.Popen]:
    """Start one worker process per argument list and wait until each has warmed up."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.worker", *args], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO) for args in arg_lists]
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


def bench_cohort(device: torch.device, sz: Sizes) -> list[Row]:
    """N networks as one cohort step vs N one-network steps, per model and N; then whole trainings."""
    from ticketx import cohort

    rows = []
    cases = [("lenet_300_100", (1, 8, 8), None, sz.cohort_mlp, sz.cohort_inner, sz.cohort_repeats),  # the quickstart's MLP
             ("conv4", (3, 32, 32), sz.cohort_conv_batch, sz.cohort_conv, 1, sz.cohort_conv_repeats),
             ("resnet20", (3, 32, 32), sz.cohort_conv_batch, sz.cohort_conv, 1, sz.cohort_conv_repeats)]
    for name, shape, batch, sizes, inner, repeats in cases:
        batch = batch or train_spec(name).batch_size
        for n in sizes:
            try:
                alone = one_after_another(name, n, batch, device, density=0.2, shape=shape)
                together = cohort_setup(name, n, batch, device, density=0.2, shape=shape)
                t = interleave({"alone": alone.step, "cohort": together.step}, device, repeats=repeats,
                               inner=inner, warmup=1, threads={"alone": alone.threads, "cohort": together.threads})
            except torch.OutOfMemoryError:
                rows.append(make_row(f"cohort_{name}_n{n}", f"{name}: cohort of {n}", float("nan"), float("nan"),
                                     "networks/s", float("nan"), "", "out of device memory"))
                continue
            finally:
                alone = together = None  # type: ignore[assignment]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            r = ratios(t["alone"], t["cohort"])
            auto = cohort.size("auto", device, build_model(name, 10, shape[0], shape[-1]))
            picked = n == 1 or (auto >= n and n >= cohort.AUTO_MIN.get(device.type, 2))
            goal = ">= 1x" if picked and n > 1 else ""
            per = (1e3 * med(t["cohort"]) / n, 1e3 * med(t["alone"]) / n)
            note = (f"batch {batch}, density 0.2, a batch per network; per network-step {per[0]:.3g} ms vs {per[1]:.3g} ms "
                    f"alone; auto: {'cohort' if picked and n > 1 else 'alone'}")
            if n == 1:
                note = f"batch {batch}: vmap of 1 network vs the one-network step ({per[0]:.3g} vs {per[1]:.3g} ms); " \
                       "never used: a cohort of 1 trains on the one-network path"
            if device.type == "cuda" and len(shape) == 3 and shape[0] == 3:
                flops = train_flops_per_image(build_model(name, 10, 3, 32).to(device), device)
                peak, _ = device_peak(device, "fp32")
                if peak:
                    note += f"; MFU {100 * n * batch / med(t['cohort']) * flops / peak:.1f}% (alone " \
                            f"{100 * n * batch / med(t['alone']) * flops / peak:.1f}%)"
            rows.append(make_row(f"cohort_{name}_n{n}", f"{name}: {n} networks, one cohort step / one at a time",
                                 n / med(t["cohort"]), n / med(t["alone"]), "net-steps/s", med(r), goal, note, r,
                                 per_network_ms=per[0], per_network_ms_alone=per[1], auto=picked))
    rows.append(_bench_cohort_training(device, sz))
    return rows


def _bench_cohort_training(device: torch.device, sz: Sizes) -> Row:
    """`cohort_runs` whole lenet_300_100 trainings on digits (ticketx.train.train): --cohort auto vs one at a time."""
    from ticketx import train as trainer
    from ticketx.data import load_data

    data = load_data("digits[0-4]", image_size=8)
    spec = train_spec("lenet_300_100", length="2ep", eval_every="1ep", lr=3e-3)
    n = sz.cohort_runs

    def runs() -> list[trainer.Run]:
        out = []
        for i in range(n):
            torch.manual_seed(i)
            model = build_model("lenet_300_100", data.num_classes, 1, 8)
            # two data seeds, as the arms of two transfer seeds; every network its own mask
            out.append(trainer.Run.of(model, random_mask(model, 0.25, seed=i), data_seed=i % 2))
        return out

    fns = {setting: (lambda setting=setting: trainer.train(runs(), trainer.Recipe.of(data, spec, device, cohort=setting)))
           for setting in (1, "auto")}
    t = interleave(fns, device, repeats=sz.cohort_repeats, warmup=1)
    r = ratios(t[1], t["auto"])
    steps = trainer.Recipe.of(data, spec, device).steps.total
    return make_row("cohort_train", f"{n} lenet_300_100 trainings (digits 8x8): --cohort auto / one at a time",
                    n / med(t["auto"]), n / med(t[1]), "networks/s", med(r), ">= 1x",
                    f"whole ticketx.train.train calls: {steps} steps and 2 evaluations each, density 0.25, 2 data seeds", r)


def run(quick: bool = False, device: str = "auto", only: Sequence[str] | None = None, workers: int | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the bench rows (all, or `only`) and return {'machine', 'mode', 'rows', 'seconds'}."""
    dev = resolve_device(device)
    chosen = list(only) if only else [r for r in ROWS if not (quick and r in SLOW_ROWS)]
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
        ("speed", lambda: bench_speed(dev, sz, with_mfu="mfu" in chosen and (dev.type == "cuda" or not quick))),
        ("threads", lambda: bench_threads(dev, sz)),
        ("parallel", lambda: bench_parallel(dev, sz) if sz.parallel else []),
        ("cohort", lambda: bench_cohort(dev, sz)),
        ("compile", lambda: bench_compile(dev, sz)),
        ("precision", lambda: bench_precision(dev, sz)),
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


def _compile_probe(name: str, batch: int, device: torch.device, cache: str, repeats: int) -> dict[str, Any]:
    """`benchmarks.compile_probe` in a fresh process with its on-disk compile cache in `cache`."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TICKETX_COMPILE": "on"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compile_probe", name, str(batch), str(device), str(repeats)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"compile probe exited {proc.returncode}: {tail[:160]}")
    return json.loads(lines[-1])


def bench_compile(device: torch.device, sz: Sizes, cases: Sequence[tuple[str, int]] | None = None) -> list[Row]:
    """ticketx's step with --compile on vs eager (resnet20, lenet_300_100 at their paper batches), with the compile cost.

    Each model is compiled in two fresh processes sharing one new on-disk cache: the first
    compile is cold, the second warm (cached), as a first and a later `ticketx find` would see
    them. The first process then times compiled and eager steps interleaved. Break-even: the
    steps a run must take before the faster steps have paid for a cached compilation.
    """
    rows = []
    for name, batch in cases or (("resnet20", 128), ("lenet_300_100", 60)):
        try:
            with tempfile.TemporaryDirectory(prefix="ticketx-inductor-") as cache:
                cold = _compile_probe(name, batch, device, cache, sz.compile_repeats)
                warm = _compile_probe(name, batch, device, cache, 0)
        except (RuntimeError, subprocess.TimeoutExpired) as err:  # a missing C++ toolchain must not sink the bench
            rows.append(make_row(f"compile_{name}", f"{name} step: --compile on / eager", float("nan"), float("nan"),
                                 "ms/step", float("nan"), "", f"torch.compile failed: {str(err)[:160]}"))
            continue
        r = ratios(cold["eager"], cold["compiled"])  # > 1: the compiled step is faster
        step, eager = med(cold["compiled"]), med(cold["eager"])
        saved = eager - step
        even = warm["compile_seconds"] / saved if saved > 0 else float("inf")
        even_text = f"{even:,.0f} steps" if math.isfinite(even) else "never (not faster)"
        where = f"{cold['threads']} CPU thread(s)" if device.type == "cpu" else f"mode {cold['mode']}"
        note = (f"batch {batch}, {where}; compile {cold['compile_seconds']:.1f} s cold, {warm['compile_seconds']:.1f} s "
                f"cached; break-even after {even_text}")
        rows.append(make_row(f"compile_{name}", f"{name} step: --compile on / eager (speedup)", 1e3 * step, 1e3 * eager,
                             "ms/step", med(r), "", note, r, cold_compile_s=cold["compile_seconds"],
                             warm_compile_s=warm["compile_seconds"], break_even_steps=even if math.isfinite(even) else None,
                             mode=cold["mode"]))
    return rows


def _precision_cases(device: torch.device) -> list[tuple[str, str, int]]:
    """(model, data, image size): lenet_300_100 on digits 8x8, and on the real CIFAR-10 subset of the e2e
    bench when the archive is there (far from the ceiling: about 40% test accuracy, 1 image = 0.02 points);
    there also resnet20 (batch norm, convolutions) where bf16 is native (emulated, it is ~10x slower)."""
    from benchmarks.e2e import E2EConfig, cifar10_archive, cifar10_subset

    cases = [("lenet_300_100", "digits", 8)]
    archive = cifar10_archive()
    if archive is not None:
        import platformdirs

        cfg = E2EConfig()
        folder = cifar10_subset(archive, Path(platformdirs.user_cache_dir("ticketx")) / "bench" /
                                f"cifar10-jpg-{cfg.train_per_class}-{cfg.test_per_class}", cfg.train_per_class,
                                cfg.test_per_class)
        cases.append(("lenet_300_100", f"imagefolder:{folder}", 32))
        if native_bf16(device):
            cases.append(("resnet20", f"imagefolder:{folder}", 32))
    return cases


def bench_precision(device: torch.device, sz: Sizes, cases: Sequence[tuple[str, str, int]] | None = None) -> list[Row]:
    """Does bf16 autocast keep accuracy? Whole trainings, fp32 vs bf16, paired by seed.

    Each seed trains the same initial weights on the same data order in both precisions
    (`ticketx.train.train`, the model's paper recipe), so the paired difference measures what
    bf16 changes; it is compared against twice its standard error over seeds and against the
    test set's resolution (one image). `identical` counts the seeds whose two trainings ended
    with the same loss to the last bit (bf16 changing nothing would show here).
    """
    import statistics

    import platformdirs

    from ticketx import train as trainer
    from ticketx.data import load_data

    rows = []
    for name, data_text, size in cases if cases is not None else _precision_cases(device):
        data = load_data(data_text, Path(platformdirs.user_cache_dir("ticketx")) / "bench" / "data", image_size=size)
        label = "digits" if data_text == "digits" else "CIFAR-10 subset (2,000 train, 5,000 test)"
        # a conv net's training costs ~100x an MLP's on a CPU: half the epochs (at least 1)
        conv = is_conv(build_model(name, data.num_classes, data.train_x.shape[1], size))
        epochs = max(1, sz.precision_epochs // 2) if conv else sz.precision_epochs
        acc: dict[str, list[float]] = {"fp32": [], "bf16": []}
        loss: dict[str, list[float]] = {"fp32": [], "bf16": []}
        secs: dict[str, float] = {"fp32": 0.0, "bf16": 0.0}
        for seed in range(sz.precision_seeds):
            for precision in ("fp32", "bf16"):
                torch.manual_seed(seed)
                model = build_model(name, data.num_classes, data.train_x.shape[1], size)
                spec = train_spec(name, length=f"{epochs}ep", eval_every=f"{epochs}ep", precision=precision)
                t0 = time.perf_counter()
                res = trainer.train([trainer.Run.of(model, data_seed=seed)], trainer.Recipe.of(data, spec, device))[0]
                secs[precision] += time.perf_counter() - t0
                acc[precision].append(res.test_acc)
                loss[precision].append(res.history[-1]["loss"])
        diffs = [b - f for b, f in zip(acc["bf16"], acc["fp32"])]
        n = len(diffs)
        mean = statistics.mean(diffs)
        se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else float("nan")
        image = 1 / len(data.test_y)
        within = abs(mean) <= max(2 * se, image) if n > 1 else None
        identical = sum(a == b for a, b in zip(loss["fp32"], loss["bf16"]))
        note = (f"{n} seeds x {epochs} epochs, batch {train_spec(name).batch_size}; bf16 - fp32 "
                f"{100 * mean:+.2f} points (paired; 2 SE {100 * 2 * se:.2f}; 1 test image = {100 * image:.2f}): "
                + ("within seed noise" if within else "beyond seed noise" if within is False else "one seed")
                + f"; {identical} of {n} seeds ended with the same loss bit for bit"
                + f"; time bf16 / fp32 {secs['bf16'] / max(1e-9, secs['fp32']):.2f}x")
        rows.append(make_row(f"precision_{name}_{'digits' if data_text == 'digits' else 'cifar10'}",
                             f"{name} on {label} {size}x{size}: bf16 autocast / fp32 (test accuracy)",
                             100 * statistics.mean(acc["bf16"]), 100 * statistics.mean(acc["fp32"]), "% acc",
                             statistics.mean(acc["bf16"]) / statistics.mean(acc["fp32"]), "", note,
                             fp32=acc["fp32"], bf16=acc["bf16"], mean_difference=mean, two_se=2 * se,
                             within_noise_of_seeds=within, identical_losses=identical,
                             seconds_fp32=secs["fp32"], seconds_bf16=secs["bf16"]))
    return rows
