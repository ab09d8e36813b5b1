"""`python -m benchmarks`: run the rows (or --e2e) and print the table; --json adds every figure on stdout."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Sequence

from benchmarks.rows import ROWS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute on 2 CPU cores")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--json", dest="as_json", action="store_true", help="print every figure as JSON on stdout")
    p.add_argument("--only", help=f"comma-separated rows: {','.join(ROWS)}")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes for the baseline (an extra row when > 0) [default: 0 quick, min(4, CPUs) full]")
    p.add_argument("--e2e", action="store_true",
                   help="instead: a resnet20 `ticketx find` vs the same search as a plain PyTorch loop + DataLoader (minutes)")
    p.add_argument("--e2e-images", type=int, default=200, help="--e2e: training images per class (CIFAR-10 subset)")
    p.add_argument("--e2e-epochs", type=int, default=4, help="--e2e: epochs per training (>= 2)")
    p.add_argument("--e2e-rounds", type=int, default=2, help="--e2e: pruning rounds after the dense one")
    p.add_argument("--e2e-seeds", default="0,1,2", help="--e2e: comma-separated seeds; each runs both searches")
    p.add_argument("--e2e-compile", action="store_true",
                   help="--e2e: also `ticketx find --compile on` per seed (its compile cache starts empty)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", args.e2e_seeds):
        p.error(f"--e2e-seeds expects integers like '0,1', got {args.e2e_seeds!r}")
    if args.e2e_epochs < 2 or args.e2e_images < 10 or args.e2e_rounds < 1 or (args.workers or 0) < 0:
        p.error("--e2e-epochs >= 2, --e2e-images >= 10, --e2e-rounds >= 1 and --workers >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; errors are one red line (exit 2 for bad options, 1 otherwise)."""
    from rich.markup import escape

    from ticketx.errors import TicketxError
    from ticketx.ui import console

    args = parse_args(argv)
    try:
        if args.e2e:
            from benchmarks.e2e import E2EConfig, e2e, render_e2e

            seeds = tuple(int(x) for x in args.e2e_seeds.split(","))
            cfg = E2EConfig(train_per_class=args.e2e_images, epochs=args.e2e_epochs, rounds=args.e2e_rounds,
                            workers=args.workers or 0, seeds=seeds, compiled=args.e2e_compile)
            res = e2e(cfg, device=args.device, log=console.print)
            console.print(render_e2e(res))
        else:
            from benchmarks.harness import render
            from benchmarks.rows import run

            rows = [r.strip() for r in args.only.split(",") if r.strip()] if args.only else None
            res = run(quick=args.quick, device=args.device, only=rows, workers=args.workers, log=console.print)
            console.print(render(res))
    except TicketxError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        return err.exit_code
    if args.as_json:
        print(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
