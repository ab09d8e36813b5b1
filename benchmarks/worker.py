"""One training process of the `parallel` row: `python -m benchmarks.worker NAME BATCH STEPS DEVICE THREADS`.

It builds ticketx's setup, warms up, prints 'ready', waits for a line on stdin (so several
workers can be released at once, imports untimed), runs STEPS steps and prints
{"seconds": ...} as JSON. THREADS is a CPU thread count or 'auto' (ticketx's own choice).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Sequence

import torch

from benchmarks.harness import sync
from benchmarks.setups import ticketx_setup
from ticketx.threads import cpu_threads


def main(argv: Sequence[str] | None = None) -> None:
    name, batch, steps, device_name, threads = argv if argv is not None else sys.argv[1:]
    device = torch.device(device_name)
    setup = ticketx_setup(name, int(batch), device)
    with cpu_threads(setup.threads if threads == "auto" else int(threads)):
        for _ in range(3):
            setup.step()
        sync(device)
        print("ready", flush=True)
        sys.stdin.readline()
        t0 = time.perf_counter()
        for _ in range(int(steps)):
            setup.step()
        sync(device)
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
