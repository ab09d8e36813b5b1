"""Transfer: retrain a ticket on a target data set, against the baselines (Morcos et al. 2019).

For a chosen round, the transferred network is the ticket's architecture with every layer set
to mask * rewind weights. When the target has a different number of classes, the output layer
is replaced by a freshly initialised one (seeded), pruned at random to the ticket's output-layer
density (or dense). Baselines, each at exactly the ticket's per-layer density:

- ``random-mask``: a random mask per layer, same rewind weights (the "random ticket");
- ``random-reinit``: the ticket's mask on freshly initialised weights (Frankle & Carbin 2019);
- ``dense``: the whole network from the same rewind weights, trained the same way;
- ``against``: a ticket found on the target itself, retrained at the same round.

Every network is trained on the target from step 0 for the full training length; accuracy is
the target's test accuracy at the end (nothing is selected on the test set). Each trained
network is one idempotent run under ``<out>/runs/<id>/``: rerunning skips finished runs and
resumes unfinished ones from their last epoch checkpoint.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketx import masks as M
from ticketx import pruning, store
from ticketx import ticket as T
from ticketx.data import ImageData, load_data, split_validation
from ticketx.errors import TicketxError, UsageError
from ticketx.models import build_model, head_name
from ticketx.spec import TrainSpec, TransferSpec
from ticketx.train import resolve_device, seed_for, set_deterministic, train
from ticketx.ui import Reporter

# Used when a transfer switches optimizer and gives no --lr: a ticket's SGD lr of 0.1 would
# make Adam diverge. 3e-4: Frankle & Carbin 2019 (Adam, Conv-4/6); 0.1: their SGD (VGG/ResNet).
DEFAULT_LR = {"sgd": 0.1, "adam": 3e-4}

# Salts that keep the seeds of independent random choices apart.
_HEAD, _REINIT, _RANDOM_MASK = 11, 13, 17


@dataclass
class Prepared:
    """A network ready to train on the target: model (weights set) and the mask to enforce."""

    model: nn.Module
    mask: M.Mask | None
    head_reset: bool


def head_module_prefix(head: str) -> str:
    return head.rsplit(".", 1)[0] + "."


def target_train_spec(ticket: T.Ticket, overrides: dict[str, Any]) -> TrainSpec:
    """The ticket's own training settings updated with the given overrides."""
    base = dict(ticket.meta["train"])
    opt = overrides.get("optimizer")
    if opt and opt != base.get("optimizer") and overrides.get("lr") is None:
        base["lr"] = DEFAULT_LR[opt]
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainSpec(**base)


def check_compatible(ticket: T.Ticket, model: str | None, image_size: int | None) -> None:
    """Reject a ticket that does not match the requested model or image size, listing what differs."""
    problems = []
    if model and model != ticket.meta["model"]:
        problems.append(f"model: ticket {ticket.meta['model']!r} vs requested {model!r}")
    if image_size and image_size != ticket.meta["image_size"]:
        problems.append(f"image size: ticket {ticket.meta['image_size']} vs requested {image_size}")
    if problems:
        raise UsageError("the ticket does not fit the request: " + "; ".join(problems),
                         "a ticket is tied to its architecture and input size; the target's images are resized to the ticket's")


def prepare(
    kind: str, ticket: T.Ticket, round_: int, num_classes: int, seed: int, *, head: str = "auto", head_dense: bool = False,
) -> Prepared:
    """Build the network for `kind` ('ticket' or a baseline) before any training step."""
    meta = ticket.meta
    reset = head == "reset" or num_classes != meta["num_classes"]
    init_seed = seed_for(meta["init_seed"], seed, _REINIT) if kind == "random-reinit" else seed_for(meta["init_seed"], seed, _HEAD)
    torch.manual_seed(init_seed)
    model = build_model(meta["model"], num_classes, meta["channels"], meta["image_size"])
    head_param = head_name(model)
    prefix = head_module_prefix(head_param)
    T.check_model(ticket, model, ignore=tuple(k for k in ticket.rewind if reset and k.startswith(prefix)))
    if kind != "random-reinit":
        # every layer from the rewind weights; a fresh (seeded) output layer when reset
        state = model.state_dict()
        for k, v in ticket.rewind.items():
            if not (reset and k.startswith(prefix)):
                state[k] = v.clone()
        model.load_state_dict(state)
    if kind == "dense":
        return Prepared(model, None, reset)
    mask = ticket.mask(round_)
    if reset:
        shape = tuple(dict(model.named_parameters())[head_param].shape)
        old = mask[head_param]
        if head_dense:
            mask[head_param] = torch.ones(shape, dtype=torch.bool)
        else:
            keep = int(round(float(old.sum()) / old.numel() * torch.Size(shape).numel()))
            gen = torch.Generator().manual_seed(seed_for(seed, _HEAD, round_))
            flat = torch.zeros(torch.Size(shape).numel(), dtype=torch.bool)
            flat[torch.randperm(flat.numel(), generator=gen)[:keep]] = True
            mask[head_param] = flat.reshape(shape)
    if kind == "random-mask":
        mask = pruning.random_like(mask, torch.Generator().manual_seed(seed_for(seed, _RANDOM_MASK, round_)))
    M.apply(model, mask)
    return Prepared(model, mask, reset)


def choose_rounds(ticket: T.Ticket, spec: TransferSpec) -> list[int]:
    if spec.all_rounds:
        return list(range(ticket.num_rounds + 1))
    if spec.rounds:
        bad = [r for r in spec.rounds if not 0 <= r <= ticket.num_rounds]
        if bad:
            raise UsageError(f"round {bad[0]} is not in the ticket (rounds 0..{ticket.num_rounds})")
        return sorted(set(spec.rounds))
    if spec.density is not None:
        return [ticket.round_for_density(spec.density)]
    return [ticket.num_rounds]


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def transfer(
    ticket_path: str | Path,
    spec: TransferSpec,
    out: str | Path,
    *,
    data_dir: Any = None,
    device: str = "auto",
    reporter: Reporter | None = None,
    model: str | None = None,
    image_size: int | None = None,
    runs_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run every (round, kind, seed) network not done yet; write and return `<out>/result.json`.

    `runs_dir` (default `<out>/runs`) may be shared by several transfers (a study does): runs are
    keyed by their configuration, so a network two transfers have in common is trained once.
    """
    reporter = reporter or Reporter()
    out = Path(out)
    ticket = T.load(ticket_path)
    check_compatible(ticket, model, image_size)
    own = T.load(spec.against) if spec.against else None
    if own is not None and (own.meta["model"] != ticket.meta["model"] or own.meta["image_size"] != ticket.meta["image_size"]):
        raise UsageError(f"--against ticket is a {own.meta['model']} at {own.meta['image_size']} px; "
                         f"the ticket is a {ticket.meta['model']} at {ticket.meta['image_size']} px")
    tspec = spec.train or TrainSpec(**ticket.meta["train"])
    rounds = choose_rounds(ticket, spec)  # checked before any data is loaded
    dev = resolve_device(device)
    set_deterministic(spec.deterministic)
    data = load_data(spec.target, data_dir, image_size=ticket.meta["image_size"], channels=ticket.meta["channels"])
    if own is not None and own.meta["num_classes"] != data.num_classes:
        raise UsageError(f"--against ticket has {own.meta['num_classes']} classes; the target {data.name} has {data.num_classes}")
    kinds = ["ticket", *spec.baselines] + (["against"] if own is not None else [])
    runs: list[dict[str, Any]] = []
    total = len(rounds) * len(kinds) * len(spec.seeds)
    for r in rounds:
        for kind in kinds:
            for seed in spec.seeds:
                source = own if kind == "against" else ticket
                src_round = r if kind != "against" else min(r, own.num_rounds)
                runs.append(run_one(
                    kind="ticket" if kind == "against" else kind, label=kind, ticket=source, round_=src_round,
                    data=data, tspec=tspec, seed=seed, spec=spec, out=out, device=dev, reporter=reporter,
                    index=len(runs) + 1, total=total, runs_dir=Path(runs_dir) if runs_dir is not None else None,
                ))
    result = {
        "kind": "transfer",
        "ticket": str(ticket_path),
        "ticket_fingerprint": ticket.meta.get("fingerprint"),
        "source": {"data": ticket.meta["data"], "model": ticket.meta["model"], "optimizer": ticket.meta["train"]["optimizer"],
                   "image_size": ticket.meta["image_size"], "channels": ticket.meta["channels"]},
        "target": data.name,
        "target_classes": list(data.classes),
        "against": spec.against,
        "config": {"transfer": spec.model_dump(), "train": tspec.model_dump()},
        "runs": runs,
        "summary": summarise(runs),
        "versions": store.versions(),
        "device": str(dev),
    }
    store.write_json(out / "result.json", result)
    return result


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per round: density and mean/std accuracy of each kind over seeds."""
    rows = []
    for r in sorted({run["round"] for run in runs}):
        at = [run for run in runs if run["round"] == r]
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
    *, kind: str, label: str, ticket: T.Ticket, round_: int, data: ImageData, tspec: TrainSpec, seed: int,
    spec: TransferSpec, out: Path, device: torch.device, reporter: Reporter, index: int = 1, total: int = 1,
    runs_dir: Path | None = None,
) -> dict[str, Any]:
    """Train one network on the target (or return its stored result)."""
    key_obj = {
        "ticket": ticket.meta.get("fingerprint"), "round": round_, "kind": kind, "target": data.name, "seed": seed,
        "train": tspec.model_dump(), "head": spec.head, "head_dense": spec.head_dense, "deterministic": spec.deterministic,
    }
    key = store.fingerprint(key_obj)
    run_dir = (runs_dir or out / "runs") / f"{label}-r{round_:02d}-s{seed}-{key}"
    done = run_dir / "result.json"
    if done.exists():
        saved = store.read_json(done)
        if saved.get("key") == key:
            return saved
    prep = prepare(kind, ticket, round_, data.num_classes, seed, head=spec.head, head_dense=spec.head_dense)
    val = None
    if tspec.val_split > 0:  # held out of the target's train set; the test set chooses nothing
        data, val = split_validation(data, tspec.val_split, seed)
    density = M.density(prep.mask) if prep.mask is not None else 1.0
    result = train(
        prep.model, data, tspec, mask=prep.mask, device=device, data_seed=seed_for(seed, round_),
        checkpoint=run_dir / "checkpoint.pt", checkpoint_key=key, reporter=reporter, val=val,
        label=f"[{index}/{total}] {label} r{round_} s{seed}",
    )
    record = {
        "key": key, "label": label, "kind": kind, "round": round_, "seed": seed, "density": density,
        "layer_density": M.layer_densities(prep.mask) if prep.mask is not None else {},
        "head_reset": prep.head_reset, "test_acc": result.test_acc, "val_acc": result.val_acc,
        "seconds": result.seconds, "steps": result.steps, "history": result.history,
        "source_data": ticket.meta["data"], "source_optimizer": ticket.meta["train"]["optimizer"],
        "target": data.name, "optimizer": tspec.optimizer, "config": key_obj,
    }
    store.write_json(done, record)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return record
