"""Zhou et al. 2019's supermask table at digits scale, from the tickets of studies/deconstruct.yaml.

    ticketx study run studies/deconstruct.yaml --out runs/deconstruct
    python scripts/deconstruct_table.py runs/deconstruct [--mask-length 20ep] [--json FILE]
        [--profiles uniform,imp] [--supermasks edge-popup:init,bernoulli:init,edge-popup:signed-constant]
        [--rounds 2,3,4] [--probe-length 0]

For each IMP ticket of the study (one per search seed s, found from the initialisation θ_0 of
init seed s), at each of its rounds' whole-network densities, the digits 0-4 test accuracy of:
the dense θ_0 without training; the IMP mask ⊙ θ_0 without training ("mask ⊙ init", Zhou et al.'s
large-final mask); learned supermasks (by default edge-popup and Bernoulli over the same θ_0, and
edge-popup over θ_0's signed constants), for each layer profile of `--profiles`: `uniform` (every
layer at the round's whole-network density) or `imp` (every layer at the ticket's own count at
that round: ticketx.supermask.profile_counts); the trained ticket (IMP, the round's own training)
and the trained dense network. With the target's column (unless --probe-length 0), the same
networks with every weight frozen and only a new output layer trained on digits 5-9. Mean [95% t
interval] over the search seeds (n = the tickets). `--rounds`: only these rounds of the tickets
(the supermasks are learned at their densities only, in sequence).
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
    ap.add_argument("--profiles", default="uniform", help="comma list of uniform, imp")
    ap.add_argument("--supermasks", default="edge-popup:init,bernoulli:init,edge-popup:signed-constant",
                    help="comma list of METHOD:WEIGHTS")
    ap.add_argument("--rounds", help="comma list of the tickets' rounds (default: every one)")
    args = ap.parse_args()
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if any(p not in S.PROFILES for p in profiles):
        raise SystemExit(f"--profiles: each of {', '.join(S.PROFILES)}, got {args.profiles!r}")
    supermasks = [tuple(x.strip().split(":", 1)) for x in args.supermasks.split(",") if x.strip()]
    for m in supermasks:
        if len(m) != 2 or m[0] not in S.METHODS.names() or m[1] not in S.WEIGHTS:
            raise SystemExit(f"--supermasks: METHOD:WEIGHTS with a method of {', '.join(S.METHODS.names())} and "
                             f"weights of {', '.join(S.WEIGHTS)}, got {':'.join(m)!r}")
    probing = to_iterations(args.probe_length, 1) > 0
    torch.set_num_threads(1)
    tickets = [ticketfile.load(p) for p in sorted(Path(args.study_out).glob("cells/search-*/ticket.pt"))]
    if not tickets:
        raise SystemExit(f"no tickets under {args.study_out}/cells: run the study first")
    src = load_data(tickets[0].meta["data"], image_size=tickets[0].meta["image_size"])
    tgt = load_data("digits[5-9]", image_size=src.image_size)
    ipe = max(1, len(src.train_y) // 60)
    steps, probe_steps = to_iterations(args.mask_length, ipe), to_iterations(args.probe_length, ipe)
    rounds = list(range(1, tickets[0].num_rounds + 1))
    if args.rounds:
        rounds = sorted({int(r) for r in args.rounds.split(",")})
        if any(not 1 <= r <= tickets[0].num_rounds for r in rounds):
            raise SystemExit(f"--rounds: rounds 1..{tickets[0].num_rounds} of the tickets, got {args.rounds!r}")
    densities = [tickets[0].rounds[r]["density"] for r in rounds]
    labels = {("edge-popup", "init"): "edge-popup supermask ⊙ θ_0", ("bernoulli", "init"): "Bernoulli supermask ⊙ θ_0",
              ("edge-popup", "signed-constant"): "edge-popup supermask ⊙ signed constant",
              ("bernoulli", "signed-constant"): "Bernoulli supermask ⊙ signed constant"}
    print(f"{len(tickets)} tickets, rounds {rounds}, profiles {profiles}, supermasks {supermasks}", file=sys.stderr)
    rows: dict[str, dict[str, list[list[float]]]] = {}

    def add(row: str, col: str, values: list[float]) -> None:
        rows.setdefault(row, {}).setdefault(col, []).append(values)

    for t in tickets:
        seed = int(t.meta["init_seed"])
        print(f"ticket seed {seed}", file=sys.stderr)
        add("dense θ_0, untrained", "source", [S.untrained_accuracy(t, 0, src)] * len(rounds))
        if probing:
            add("dense θ_0, untrained", "target", [S.probe(t, 0, tgt, steps=probe_steps, seed=seed)] * len(rounds))
        add("IMP mask ⊙ θ_0, untrained", "source", [S.untrained_accuracy(t, r, src) for r in rounds])
        if probing:
            add("IMP mask ⊙ θ_0, untrained", "target", [S.probe(t, r, tgt, steps=probe_steps, seed=seed) for r in rounds])
        dens = [t.rounds[r]["density"] for r in rounds]
        for profile in profiles:
            for method, weights in supermasks:
                label = labels[(method, weights)] + ("" if profiles == ["uniform"] else f", {profile} profile")
                # the imp profile: this ticket's own per-layer counts at each of its rounds
                sm = S.supermask_ticket(method, t.meta["model"], src, dens, weights=weights, seed=seed, steps=steps,
                                        profile="ticket" if profile == "imp" else "uniform",
                                        profile_ticket=t if profile == "imp" else None)
                n = range(1, len(rounds) + 1)
                add(label, "source", [sm.rounds[i]["test_acc"] for i in n])
                if probing:
                    add(label, "target", [S.probe(sm, i, tgt, steps=probe_steps, seed=seed) for i in n])
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
