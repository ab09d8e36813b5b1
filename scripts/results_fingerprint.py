"""Fingerprints of ticketx's results, to show that a refactor changes no number.

    python scripts/results_fingerprint.py [--quickstart] [--out FILE.json]

Runs, through the command line (so it works across internal renames), on the embedded digits:
- a deterministic `find` for lenet_300_100 and conv2 (digits 0-4, 2 rounds x 2 epochs), and
  hashes the contents of each ticket: every round's mask and the rewind weights (the file itself
  embeds its creation time, so its bytes always differ);
- a deterministic `transfer` of each to digits 5-9 (seeds 0, 1, every round), and lists every
  network's test accuracy;
- with --quickstart, `ticketx study run studies/quickstart.yaml` and the hash of results.csv's
  science columns (everything but the versions column).

Run it before and after a change and compare the JSON it prints (or writes with --out).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def ticketx(*args: str) -> None:
    env = {**os.environ, "TICKETX_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "ticketx", *args], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ticket_hash(path: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from ticketx import ticket as ticketfile

    t = ticketfile.load(path)
    h = hashlib.sha256()
    for r in range(t.num_rounds + 1):
        for name, m in sorted(t.mask(r).items()):
            h.update(name.encode())
            h.update(m.to(torch.uint8).numpy().tobytes())
    for name, v in sorted(t.rewind.items()):
        h.update(name.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quickstart", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("lenet_300_100", "conv2"):
            out = Path(tmp) / f"{model}.pt"
            ticketx("find", "--data", "digits[0-4]", "--model", model, "--image-size", "8" if model == "lenet_300_100" else "16",
                    "--rounds", "2", "--epochs", "2", "--prune-rate", "0.5", "--lr", "0.002", "--batch-size", "64",
                    "--deterministic", "--device", "cpu", "--out", str(out))
            report[f"{model}/ticket"] = ticket_hash(out)
            folder = Path(tmp) / f"{model}-transfer"
            ticketx("transfer", str(out), "--to", "digits[5-9]", "--rounds", "all", "--seeds", "0,1", "--deterministic",
                    "--device", "cpu", "--out", str(folder))
            result = json.loads((folder / "result.json").read_text())
            accs = sorted((r["label"], r["for_round"], r["seed"], r["test_acc"]) for r in result["runs"])
            report[f"{model}/transfer"] = [f"{a}/r{r}/s{s}={acc!r}" for a, r, s, acc in accs]
        if args.quickstart:
            folder = Path(tmp) / "quickstart"
            ticketx("study", "run", "studies/quickstart.yaml", "--out", str(folder), "--no-report")
            ticketx("study", "report", str(folder))
            with open(folder / "results.csv") as fh:
                rows = [{k: v for k, v in row.items() if k != "versions"} for row in csv.DictReader(fh)]
            lines = sorted(json.dumps(row, sort_keys=True) for row in rows)
            report["quickstart/results.csv"] = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
            report["quickstart/rows"] = len(rows)
            report["quickstart/test_acc"] = hashlib.sha256(
                "\n".join(sorted(f"{r['run_id']}={r['test_acc']}" for r in rows)).encode()).hexdigest()[:16]
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
