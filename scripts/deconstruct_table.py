"""Zhou et al. 2019's supermask table at digits scale, from the tickets of studies/deconstruct.yaml.

    ticketx study run studies/deconstruct.yaml --out runs/deconstruct
    python scripts/deconstruct_table.py runs/deconstruct [--mask-length 20ep] [--json FILE]

For each IMP ticket of the study (one per search seed s, found from the initialisation θ_0 of
init seed s), at each of its rounds' whole-network densities, the digits 0-4 test accuracy of:
the dense θ_0 without training; the IMP mask ⊙ θ_0 without training ("mask ⊙ init", Zhou et al.'s
large-final mask); learned supermasks (edge-popup, Bernoulli) over the same θ_0, and edge-popup
over θ_0's signed constants, at every layer's density equal to the round's whole-network density;
the trained ticket (IMP, the round's own training) and the trained dense network. With the
target's column, the same networks with every weight frozen and only a new output layer trained
on digits 5-9. Mean [95% t interval] over the search seeds (n = the tickets).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from ticketx import supermask as S
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data
    from ticketx.stats import interval
    from ticketx.steps import to_iterations

    ap = argparse.ArgumentParser()
    ap.add_argument("study_out")
    ap.add_argument("--mask-length", default="20ep")
    ap.add_argument("--probe-length", default="20ep")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tickets = [ticketfile.load(p) for p in sorted(Path(args.study_out).glob("cells/search-*/ticket.pt"))]
    if not tickets:
        raise SystemExit(f"no tickets under {args.study_out}/cells: run the study first")
    src = load_data(tickets[0].meta["data"], image_size=tickets[0].meta["image_size"])
    tgt = load_data("digits[5-9]", image_size=src.image_size)
    ipe = max(1, len(src.train_y) // 60)
    steps, probe_steps = to_iterations(args.mask_length, ipe), to_iterations(args.probe_length, ipe)
    rounds = list(range(1, tickets[0].num_rounds + 1))
    densities = [tickets[0].rounds[r]["density"] for r in rounds]
    rows: dict[str, dict[str, list[list[float]]]] = {}

    def add(row: str, col: str, values: list[float]) -> None:
        rows.setdefault(row, {}).setdefault(col, []).append(values)

    for t in tickets:
        seed = int(t.meta["init_seed"])
        print(f"ticket seed {seed}", file=sys.stderr)
        add("dense θ_0, untrained", "source", [S.untrained_accuracy(t, 0, src)] * len(rounds))
        add("dense θ_0, untrained", "target", [S.probe(t, 0, tgt, steps=probe_steps, seed=seed)] * len(rounds))
        add("IMP mask ⊙ θ_0, untrained", "source", [S.untrained_accuracy(t, r, src) for r in rounds])
        add("IMP mask ⊙ θ_0, untrained", "target", [S.probe(t, r, tgt, steps=probe_steps, seed=seed) for r in rounds])
        for label, method, weights in (("edge-popup supermask ⊙ θ_0", "edge-popup", "init"),
                                       ("Bernoulli supermask ⊙ θ_0", "bernoulli", "init"),
                                       ("edge-popup supermask ⊙ signed constant", "edge-popup", "signed-constant")):
            sm = S.supermask_ticket(method, t.meta["model"], src, densities, weights=weights, seed=seed, steps=steps)
            add(label, "source", [sm.rounds[r]["test_acc"] for r in rounds])
            add(label, "target", [S.probe(sm, r, tgt, steps=probe_steps, seed=seed) for r in rounds])
        add("IMP ticket, trained", "source", [t.rounds[r]["test_acc"] for r in rounds])
        add("dense, trained", "source", [t.rounds[0]["test_acc"]] * len(rounds))
    out = {"densities": densities, "n_tickets": len(tickets), "rows": {}}
    print(f"| digits 0-4 test accuracy, % (n = {len(tickets)} seeds) | " + " | ".join(f"{100 * d:.2f}%" for d in densities) + " |")
    print("| --- |" + " --- |" * len(densities))
    for row, cols in rows.items():
        for col, runs in cols.items():
            ivs = [interval([run[i] for run in runs]) for i in range(len(densities))]
            out["rows"][f"{row} [{col}]"] = [iv.as_dict() for iv in ivs]
            name = row if col == "source" else f"{row}, new output layer trained on digits 5-9 (target test)"
            print(f"| {name} | " + " | ".join(f"{100 * iv.mean:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"
                                             if iv.low is not None else f"{100 * iv.mean:.1f}" for iv in ivs) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
