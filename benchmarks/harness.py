"""What every benchmark row shares: interleaved timing, ratios with intervals, the machine, the table.

Every row times its variants interleaved in the same process on the same device: each repeat
runs all variants back to back, alternating their order, and a ratio is the median of the
per-repeat ratios, so background load that comes and goes hits both sides alike. Absolute
figures are medians.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ticketx import store
from ticketx.threads import cpu_threads

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


def meets_goal(ratio: float, goal: str) -> bool | None:
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
    ok = meets_goal(ratio, goal)
    within_noise = None
    if ok is False and ci is not None:
        within_noise = bool(meets_goal(ci[0], goal) or meets_goal(ci[1], goal))
    return Row(key, what, ticketx, baseline, unit, ratio, goal, ok, note, ci, within_noise,
               len(ratios) if ratios is not None else 0, extra)


def sync(device: torch.device) -> None:
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
    sync(device)
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
                    sync(device)
                    t0 = time.perf_counter()
                    fns[name]()
                    sync(device)
                    spent[name] += time.perf_counter() - t0
        for name in keys:
            times[name].append(spent[name] / inner)
    return times


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-repeat ratios num[i] / den[i] (the two were measured back to back)."""
    return [a / b for a, b in zip(num, den)]


med = statistics.median


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
        **store.versions(),  # the same versions every ticket and study records
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError, AttributeError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info



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


def fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.3g}" if a >= 0.01 else f"{v:.2e}"


def fmt_ratio(r: float, goal: str, key: str = "") -> str:
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
        ratio = fmt_ratio(row["ratio"], row["goal"], row["key"])
        if row.get("ci") and row["goal"] and row["ci"][0] is not None:
            lo, hi = row["ci"]
            ratio += f" [dim]({lo:.3f}-{hi:.3f})[/]"
        table.add_row(row["what"], ratio, row["goal"] or "-", verdict, fmt(row["ticketx"]), fmt(row["baseline"]),
                      row["unit"], row["note"])
    table.caption = ("ratio: median of per-repeat ratios (variants interleaved), 95% interval in brackets. "
                     "within noise: the median misses the goal but the goal lies inside that interval.")
    table.caption_justify = "left"
    return table
