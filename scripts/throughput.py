"""Training throughput (images/s) of ticketx's own trainer, to turn a study's images-to-train into hours.

    python scripts/throughput.py [--models resnet18,resnet20] [--widths 1] [--steps 200] [--batch 128]
                                 [--device cpu] [--threads 1]

Trains each model (at each width) on synthetic 32x32 RGB images (10 classes; the speed of a step
does not depend on what the pixels show) for `--steps` steps through `ticketx.train.train`, the
trainer every search and transfer uses (tensor-resident batches with crop and flip, fp32, the
default memory layout), with evaluation off until the end, and prints the trainer's own
images/s (its clock starts after the first step, so start-up is left out). One line per model
and width, then JSON on stdout with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,resnet20")
    ap.add_argument("--widths", default="1")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("TICKETX_THREADS", str(args.threads))
    sys.path.insert(0, str(ROOT))
    import torch

    from ticketx.data.images import ImageData
    from ticketx.models import build_model
    from ticketx.runtime import resolve_device
    from ticketx.settings.train import TrainSpec
    from ticketx.train import Recipe, Run, train

    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    n = args.batch * 20  # 20 steps per epoch: several epochs in a run, so epoch boundaries are included
    data = ImageData("synthetic32", [str(c) for c in range(10)],
                     torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g),
                     torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (args.batch,), generator=g),
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), True, 4)
    spec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=args.batch, length=f"{args.steps}it",
                     eval_every=f"{args.steps}it", weight_decay=5e-4)
    out = []
    for name in args.models.split(","):
        for w in [float(x) for x in args.widths.split(",")]:
            torch.manual_seed(0)
            model = build_model(name, 10, 3, 32, width=w)
            params = sum(p.numel() for p in model.parameters())
            t0 = time.perf_counter()
            res = train([Run.of(model, label=f"{name} x{w:g}")], Recipe.of(data, spec, dev))[0]
            wall = time.perf_counter() - t0
            row = {"model": name, "width": w, "params": params, "steps": res.steps, "batch": args.batch,
                   "images_per_second": res.images_per_second, "wall_s": wall, "device": str(dev),
                   "threads": args.threads, "torch": torch.__version__}
            print(f"{name} x{w:g} ({params / 1e6:.2f} M parameters): {res.images_per_second:.1f} img/s "
                  f"({res.steps} steps of {args.batch}, {wall:.0f} s wall)", file=sys.stderr)
            out.append(row)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
