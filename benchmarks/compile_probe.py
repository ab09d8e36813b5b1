"""One `compile` row measurement in a fresh process: `python -m benchmarks.compile_probe NAME BATCH DEVICE REPEATS`.

A fresh process is what `ticketx find` is: torch.compile's in-memory caches start empty and only
its on-disk cache ($TORCHINDUCTOR_CACHE_DIR) carries over, so a first probe on an empty folder
measures a cold compile and a second probe on the same folder a warm (cached) one. It builds
ticketx's step (`benchmarks.setups.ticketx_setup`, compile on: `ticketx.train.compile_plan`'s mode),
times the first compiled step (the compilation included), then, with REPEATS > 0, times compiled
and eager steps interleaved, and prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Sequence

import torch

from benchmarks.harness import interleave, med, sync
from benchmarks.setups import ticketx_setup
from ticketx.threads import cpu_threads

SHAPES = {"lenet_300_100": (1, 28, 28)}  # the MNIST MLP; the rest: 32x32 RGB


def main(argv: Sequence[str] | None = None) -> None:
    name, batch, device_name, repeats = argv if argv is not None else sys.argv[1:]
    device = torch.device(device_name)
    shape = SHAPES.get(name, (3, 32, 32))
    compiled = ticketx_setup(name, int(batch), device, shape=shape, compile="on")
    with cpu_threads(compiled.threads):
        t0 = time.perf_counter()
        compiled.step()
        sync(device)
        first = time.perf_counter() - t0
    out = {"first": first, "mode": compiled.compile_mode, "threads": compiled.threads or torch.get_num_threads()}
    if int(repeats) > 0:
        eager = ticketx_setup(name, int(batch), device, shape=shape)
        inner = 20 if name == "lenet_300_100" or device.type == "cuda" else 2
        t = interleave({"compiled": compiled.step, "eager": eager.step}, device, repeats=int(repeats), inner=inner,
                       warmup=2, threads={"compiled": compiled.threads, "eager": eager.threads})
        out.update(compiled=t["compiled"], eager=t["eager"])
    else:  # the compiled step alone, to take out of the first step's time
        with cpu_threads(compiled.threads):
            for _ in range(2):
                compiled.step()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(3):
                compiled.step()
            sync(device)
        out["compiled"] = [(time.perf_counter() - t0) / 3]
    out["compile_seconds"] = max(0.0, first - med(out["compiled"]))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
