"""Transfer: retrain a ticket on a target data set, against the baselines (Morcos et al. 2019).

Takes a resolved `TransferPlan` (ticketx.spec.transfer: every check is done there) and trains,
for each chosen round and seed, the ticket and each baseline (ticketx.baselines), and the
target's own ticket when given. Every network is trained on the target from step 0 for the full
training length; accuracy is the target's test accuracy at the end (nothing is selected on the
test set). Each trained network is one idempotent run under ``<out>/runs/<id>/``: rerunning skips
finished runs and resumes unfinished ones from their last epoch checkpoint.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from ticketx import masks as M
from ticketx import store
from ticketx.baselines import BASELINES, TICKET, Arm, Baseline
from ticketx.data import ImageData, load_data, split_validation
from ticketx.spec.transfer import TransferPlan
from ticketx.ticket import Ticket
from ticketx.train import resolve_device, seed_for, set_deterministic, train
from ticketx.ui import Reporter


def transfer(
    plan: TransferPlan,
    out: str | Path,
    *,
    data_dir: Any = None,
    device: str = "auto",
    reporter: Reporter | None = None,
    runs_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run every (round, arm, seed) network not done yet; write and return `<out>/result.json`.

    `runs_dir` (default `<out>/runs`) may be shared by several transfers (a study does): runs are
    keyed by their configuration, so a network two transfers have in common is trained once.
    """
    reporter = reporter or Reporter()
    out = Path(out)
    spec, ticket = plan.spec, plan.ticket
    dev = resolve_device(device)
    set_deterministic(spec.deterministic)
    data = load_data(spec.target, data_dir, image_size=ticket.meta["image_size"], channels=ticket.meta["channels"])
    arms: list[tuple[str, Baseline]] = [("ticket", TICKET), *[(b, BASELINES[b]) for b in spec.baselines]]
    if plan.own is not None:
        arms.append(("own-ticket", TICKET))
    total = len(plan.rounds) * len(arms) * len(spec.seeds)
    runs: list[dict[str, Any]] = []
    for r in plan.rounds:
        for name, kind in arms:
            source, src_round = (plan.own, plan.own_rounds[r]) if name == "own-ticket" else (ticket, r)
            assert source is not None
            for seed in spec.seeds:
                record = run_one(
                    name=name, kind=kind, ticket=source, round_=src_round, data=data, plan=plan, seed=seed, out=out,
                    device=dev, reporter=reporter, index=len(runs) + 1, total=total,
                    runs_dir=Path(runs_dir) if runs_dir is not None else None,
                )
                runs.append({**record, "for_round": r})  # the ticket's round this network is compared at
    result = {
        "kind": "transfer",
        "ticket": str(plan.ticket_path),
        "ticket_fingerprint": ticket.meta.get("fingerprint"),
        "source": {"data": ticket.meta["data"], "model": ticket.meta["model"], "optimizer": ticket.meta["train"]["optimizer"],
                   "image_size": ticket.meta["image_size"], "channels": ticket.meta["channels"]},
        "target": data.name,
        "target_classes": list(data.classes),
        "own_ticket": spec.own_ticket,
        "config": {"transfer": spec.model_dump(), "train": plan.train.model_dump()},
        "runs": runs,
        "summary": summarise(runs),
        "versions": store.versions(),
        "device": str(dev),
    }
    store.write_json(out / "result.json", result)
    return result


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per round: density and mean/std accuracy of each arm over seeds."""
    rows = []
    for r in sorted({run["for_round"] for run in runs}):
        at = [run for run in runs if run["for_round"] == r]
        row: dict[str, Any] = {"round": r, "density": next(x["density"] for x in at if x["label"] == "ticket")}
        for label in dict.fromkeys(x["label"] for x in at):
            row[label] = _summary([x["test_acc"] for x in at if x["label"] == label])
        if "random-mask" in row:
            margins = [a["test_acc"] - b["test_acc"] for a in at if a["label"] == "ticket"
                       for b in at if b["label"] == "random-mask" and b["seed"] == a["seed"]]
            row["margin_over_random_mask"] = _summary(margins)
        rows.append(row)
    return rows


def run_one(
    *, name: str, kind: Baseline, ticket: Ticket, round_: int, data: ImageData, plan: TransferPlan, seed: int,
    out: Path, device: torch.device, reporter: Reporter, index: int = 1, total: int = 1, runs_dir: Path | None = None,
) -> dict[str, Any]:
    """Train one network on the target (or return its stored result)."""
    spec, tspec = plan.spec, plan.train
    key_obj = {
        "ticket": ticket.meta.get("fingerprint"), "round": round_, "kind": kind.name, "target": data.name, "seed": seed,
        "train": tspec.model_dump(), "head": spec.head, "head_dense": spec.head_dense, "deterministic": spec.deterministic,
    }
    key = store.fingerprint(key_obj)
    run_dir = (runs_dir or out / "runs") / f"{name}-r{round_:02d}-s{seed}-{key}"
    done = run_dir / "result.json"
    if done.exists():
        saved = store.read_json(done)
        if saved.get("key") == key:
            return saved
    prep = Arm(ticket, round_, data.num_classes, seed, head=spec.head, head_dense=spec.head_dense).build(kind)
    val = None
    if tspec.val_split > 0:  # held out of the target's train set; the test set chooses nothing
        data, val = split_validation(data, tspec.val_split, seed)
    density = M.density(prep.mask) if prep.mask is not None else 1.0
    result = train(
        prep.model, data, tspec, mask=prep.mask, device=device, data_seed=seed_for(seed, round_),
        checkpoint=run_dir / "checkpoint.pt", checkpoint_key=key, reporter=reporter, val=val,
        label=f"[{index}/{total}] {name} r{round_} s{seed}",
    )
    record = {
        "key": key, "label": name, "kind": kind.name, "round": round_, "seed": seed, "density": density,
        "layer_density": M.layer_densities(prep.mask) if prep.mask is not None else {},
        "head_reset": prep.head_reset, "test_acc": result.test_acc, "val_acc": result.val_acc,
        "seconds": result.seconds, "steps": result.steps, "history": result.history,
        "source_data": ticket.meta["data"], "source_optimizer": ticket.meta["train"]["optimizer"],
        "target": data.name, "optimizer": tspec.optimizer, "config": key_obj,
    }
    store.write_json(done, record)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return record
