"""Wall time of a whole study with and without cohorts, interleaved: `cohort: 1` against `cohort: auto`.

    python scripts/study_cohort_ab.py                              # studies/quickstart.yaml, 3 pairs
    python scripts/study_cohort_ab.py --study studies/ci.yaml --pairs 5 --cohort 16

Each repeat runs `ticketx study run S.yaml --set cohort=1` and then `--set cohort=auto` (the order
alternates from pair to pair, so a drift in the machine's load falls on both sides), each as its
own process (interpreter and imports included) into a fresh folder, with TICKETX_THREADS=1. It
prints every time, the medians, their ratio (one network at a time / cohorts: above 1, cohorts
are faster) and the ratio of each pair, and whether every run's results.csv and summary.csv
equal the first `cohort: 1` run's, byte for byte (the versions column aside: it is the same code).

Not a test: the numbers depend on the machine; the README quotes one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(study: Path, out: Path, cohort: str) -> float:
    """Seconds of `ticketx study run` with `cohort: <cohort>` into `out` (a fresh folder)."""
    env = {**os.environ, "TICKETX_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # --set cohort= is not science: the folder is the one given, the cells' keys are the same
    cmd = [sys.executable, "-m", "ticketx", "study", "run", str(study), "--out", str(out), "--set", f"cohort={cohort}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1, 3):  # 1 / 3: a claim failed or was inconclusive, the study ran
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def science(path: Path) -> bytes:
    """A CSV's bytes without its versions column (the code's version string, the same on both sides)."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(path.read_text())))
    drop = rows[0].index("versions") if rows and "versions" in rows[0] else None
    return "\n".join(",".join(c for i, c in enumerate(r) if i != drop) for r in rows).encode()


def differences(a: Path, b: Path) -> tuple[int, int, float]:
    """(rows, rows whose test_acc differ, the largest |difference| in points) between two results.csv."""
    import csv

    with open(a, newline="") as fa, open(b, newline="") as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    diffs = [abs(float(x["test_acc"]) - float(y["test_acc"])) for x, y in zip(ra, rb) if x["test_acc"] != y["test_acc"]]
    return len(ra), len(diffs), 100 * max(diffs, default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "quickstart.yaml"))
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--cohort", default="auto", help="the cohort side's setting (default auto)")
    ap.add_argument("--keep", help="run into this folder and keep it (default: a temporary folder)")
    args = ap.parse_args()
    study = Path(args.study).resolve()
    times: dict[str, list[float]] = {"1": [], args.cohort: []}
    with (tempfile.TemporaryDirectory(prefix="ticketx-cohort-ab-") if args.keep is None else _kept(args.keep)) as tmp:
        for pair in range(args.pairs):
            for side in (["1", args.cohort] if pair % 2 == 0 else [args.cohort, "1"]):
                seconds = run(study, Path(tmp) / f"{pair}-{side}", side)
                times[side].append(seconds)
                print(f"pair {pair + 1}: cohort {side:>4}: {seconds:7.1f} s", flush=True)
        csvs = lambda out: [science(out / n) for n in ("results.csv", "summary.csv")]  # noqa: E731
        reference = csvs(Path(tmp) / "0-1")
        same = [csvs(Path(tmp) / f"{pair}-{side}") == reference for pair in range(args.pairs) for side in times]
        diff = [differences(Path(tmp) / "0-1" / "results.csv", Path(tmp) / f"{pair}-{side}" / "results.csv")
                for pair in range(args.pairs) for side in times if side != "1"]
    one, many = statistics.median(times["1"]), statistics.median(times[args.cohort])
    pairs = [a / b for a, b in zip(times["1"], times[args.cohort])]
    print(f"median: cohort 1 {one:.1f} s, cohort {args.cohort} {many:.1f} s; ratio (1 / {args.cohort}) {one / many:.2f}x "
          f"(pairs: {', '.join(f'{p:.2f}x' for p in pairs)})")
    print(f"results.csv and summary.csv identical to the first cohort-1 run: {all(same)} ({sum(same)}/{len(same)} runs)")
    for rows, changed, most in diff:
        print(f"cohort {args.cohort} vs the first cohort-1 run: {changed} of {rows} networks' test accuracy differ, "
              f"by at most {most:.2f} points")
    print(f"machine: {os.cpu_count()} CPUs; load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


class _kept:
    """A folder to run into that is kept afterwards (`--keep`)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        return str(self.path)

    def __exit__(self, *exc: object) -> None:
        pass


if __name__ == "__main__":
    main()
