"""Transfer: retrain a ticket on a target data set, against the baselines (Morcos et al. 2019).

Takes a resolved `TransferPlan` (ticketx.settings.transfer: every check is done there) and trains,
for each chosen round and seed, the ticket and each baseline (ticketx.baselines), and the
target's own ticket when given. Every network is trained on the target from step 0 for the full
training length; accuracy is the target's test accuracy at the end (nothing is selected on the
test set). Each trained network is one idempotent run under ``<out>/runs/<id>/``: rerunning skips
finished runs and resumes unfinished ones from their last epoch checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketx import masks as M
from ticketx import distributed, store
from ticketx.baselines import BASELINES, TICKET, Arm, Baseline
from ticketx.data import ImageData, load_data
from ticketx.settings.transfer import TransferPlan, check_head, head_rule
from ticketx.stats import MATCH_TOLERANCE, interval, judge, replicated, resolution
from ticketx.ticket import Ticket, width_of
from ticketx import runtime
from ticketx.runtime import resolve_device, set_deterministic
from ticketx.runs import ensure
from ticketx.train import Recipe, Run, Start
from ticketx.ui import Reporter


def transfer(
    plan: TransferPlan,
    out: str | Path,
    *,
    data_dir: Any = None,
    device: str = "auto",
    reporter: Reporter | None = None,
    runs_dir: str | Path | None = None,
    cohort: int | str = 1,
) -> dict[str, Any]:
    """Run every (round, arm, seed) network not done yet; write and return `<out>/result.json`.

    `runs_dir` (default `<out>/runs`) may be shared by several transfers (a study does): runs are
    keyed by their configuration, so a network two transfers have in common is trained once.
    `cohort`: networks trained together in one step (ticketx.cohort; 1: one at a time, 'auto').
    It changes speed and float rounding, not what is trained: run keys do not depend on it.
    """
    reporter = reporter or Reporter()
    job = prepare(plan, out, data_dir=data_dir, device=device, runs_dir=runs_dir, cohort=cohort)
    return job.finish(ensure(job.runs, job.recipe, reporter))


@dataclass
class TransferJob:
    """A transfer set up: its recipe and runs (every network of it, in the order they go to the trainer),
    and `finish`, which turns their outcomes into `<out>/result.json`. Transfers whose recipes are
    equal (`runs.recipe_key`) can hand their runs to the trainer together (a study's cohorts of cells)."""

    plan: TransferPlan
    out: Path
    data: ImageData
    recipe: Recipe
    runs: list[Run]
    order: list[tuple[str, Baseline, int, int]]  # (arm, baseline, round, seed) of each run
    at: dict[tuple[str, int, int], int]  # (arm, ticket round, seed) -> the round of its network
    arms: list[tuple[str, Baseline]]
    heads: dict[str, str]
    device: torch.device

    def finish(self, outcomes_in: list[Any]) -> dict[str, Any]:
        """Write and return `<out>/result.json` from the runs' outcomes (in the order of `runs`)."""
        plan, spec, ticket, arms, at, data = self.plan, self.plan.spec, self.plan.ticket, self.arms, self.at, self.data
        outcomes: dict[tuple[str, int, int], dict[str, Any]] = {}
        for (name, _, r, seed), outcome in zip(self.order, outcomes_in):
            outcomes[name, r, seed] = outcome.record
        runs_out = [{**outcomes[name, at[name, r, seed], seed], "for_round": r}  # the ticket's round it is compared at
                    for r in plan.rounds for name, _ in arms for seed in spec.seeds]
        result = {
            "kind": "transfer",
            "ticket": str(plan.ticket_path),
            "ticket_fingerprint": ticket.meta.get("fingerprint"),
            "source": {"data": ticket.meta["data"], "model": ticket.meta["model"], "optimizer": ticket.meta["train"]["optimizer"],
                       "image_size": ticket.meta["image_size"], "channels": ticket.meta["channels"],
                       "found_by": ticket.meta.get("found_by", "imp"), "retrain": ticket.meta["prune"].get("retrain", "rewind"),
                       "width": width_of(ticket.meta), "label_noise": ticket.meta.get("label_noise")},
            "ticket_start": ticket_start(ticket),  # what the ticket's arm starts from, in words
            "mask0": spec.mask0,
            "target": data.name,
            "target_classes": list(data.classes),
            "own_ticket": spec.own_ticket,
            "head": spec.head,  # the rule; `heads`: what it gave each ticket's arms ('keep' or 'new')
            "heads": self.heads,
            "test_images": int(len(data.test_y)),
            "resolution": resolution(len(data.test_y)),  # points of accuracy per test image
            "config": {"transfer": spec.model_dump(), "train": plan.train.model_dump()},
            "runs": runs_out,
            **with_ticket_weights(summarise(runs_out), ticket),  # summary (per round), family, tolerance
            "overlap": own_overlap(plan),
            "versions": store.versions(),
            "device": distributed.describe(self.device),
        }
        store.write_json(self.out / "result.json", result)
        distributed.barrier()  # DDP: every rank returns once rank 0 has written the result
        return result


def prepare(plan: TransferPlan, out: str | Path, *, data_dir: Any = None, device: str = "auto",
            runs_dir: str | Path | None = None, cohort: int | str = 1, data: ImageData | None = None) -> TransferJob:
    """Set up a transfer (see `transfer`) without training anything. `data`: the target data set when the
    caller has loaded it (transfers handed to the trainer together share one)."""
    out = Path(out)
    spec, ticket = plan.spec, plan.ticket
    dev = resolve_device(device)
    set_deterministic(spec.deterministic)
    if data is None:
        data = load_data(spec.target, data_dir, image_size=ticket.meta["image_size"], channels=ticket.meta["channels"])
    check_head(spec, ticket, list(data.classes))
    heads = {"ticket": head_rule(spec.head, ticket, data.name, list(data.classes))}
    if plan.own is not None:
        heads["own-ticket"] = head_rule(spec.head, plan.own, data.name, list(data.classes))
    arms: list[tuple[str, Baseline]] = [("ticket", TICKET), *[(b, BASELINES[b]) for b in spec.baselines]]
    if plan.own is not None:
        arms.append(("own-ticket", TICKET))
    recipe = Recipe.of(data, plan.train, dev, cohort=cohort)
    runs_root = Path(runs_dir) if runs_dir is not None else out / "runs"
    # Which network each (arm, ticket round, seed) is: a round-independent arm (dense: the rewind
    # weights, no mask) is trained once per seed, at the first round and with its data order, and
    # paired with every round.
    at = {(name, r, seed): (r if baseline.per_round else plan.rounds[0])
          for r in plan.rounds for name, baseline in arms for seed in spec.seeds}
    todo = list(dict.fromkeys((name, a, seed) for (name, _, seed), a in at.items()))
    # Every network of the cell in one call to the trainer, by round, then seed, then arm (the arms
    # compared at a round and seed share one data order): a cohort trainer gets all of them at once.
    order = [(name, baseline, r, seed) for r in plan.rounds for seed in spec.seeds for name, baseline in arms
             if (name, r, seed) in todo]
    index = {k: i for i, k in enumerate(todo)}
    runs = [arm_run(name=name, baseline=baseline, plan=plan, data=data, round_=r, seed=seed, runs_root=runs_root,
                    index=index[name, r, seed] + 1, total=len(todo)) for name, baseline, r, seed in order]
    return TransferJob(plan, out, data, recipe, runs, order, at, arms, heads, dev)


# Part of every run's key: results of an older pairing / seeding / output-layer protocol are never
# reused. 3: the output layer is decided per arm ('auto'); random re-initialisation gets the same
# new output layer as the other arms; head_dense makes every arm's output layer dense.
PROTOCOL = 3


def ticket_start(ticket: Ticket) -> str:
    """What a transfer of `ticket` starts from, in words (its label in result.json and the table).

    Renda et al. 2020's retraining modes (lr-rewind, finetune) yield trained subnetworks, not
    initialisations; a ticket stores its mask with the rewind weights θ_k of round 0, so their
    transfer tests the mask that retraining found, started from θ_k, not the trained subnetwork.
    """
    meta = ticket.meta
    found, retrain = meta.get("found_by"), meta["prune"].get("retrain", "rewind")
    if found == "supermask":
        return (f"the supermask's frozen weights ({meta['prune'].get('weights')}; {meta['prune'].get('method')}), "
                "now trained: the mask was learned without training any weight")
    if found == "prune-at-init":
        return "the initial weights (prune-at-init ticket)"
    if retrain != "rewind":
        return (f"a mask found with {retrain} retraining (Renda et al. 2020) on the rewind weights θ_k "
                f"(step {meta['rewind_step']}), not its trained subnetworks")
    return f"the rewind weights θ_k (step {meta['rewind_step']})"


REFERENCES = ("dense", "own-ticket")  # arms the ticket should match; every other arm is a control it should beat


def summarise(runs: list[dict[str, Any]], tolerance: float = MATCH_TOLERANCE) -> dict[str, Any]:
    """Per round of the ticket: each arm's accuracy, and the ticket's paired margin over each arm.

    Pairs are (ticket, arm) networks of the same seed. One transfer retrains *one* ticket, so
    its margins are about that ticket (`stats.replicated` with one ticket: scope 'ticket', the t
    interval over its retrains); claims about tickets from a source need several search seeds
    (a study). The verdicts of all rounds and arms are one family (Benjamini-Hochberg,
    ticketx.stats): each `margin` is the adjusted interval its verdict reads, `margin_95` the
    unadjusted one.
    """
    from ticketx.baselines import label

    rows, items, where = [], [], []
    for r in sorted({run["for_round"] for run in runs}):
        at = [run for run in runs if run["for_round"] == r]
        by = {name: {x["seed"]: x for x in at if x["label"] == name} for name in dict.fromkeys(x["label"] for x in at)}
        ticket = by.pop("ticket")
        row: dict[str, Any] = {"round": r, "density": next(iter(ticket.values()))["density"],
                               "ticket": interval([x["test_acc"] for x in ticket.values()]).as_dict(), "arms": {}}
        for name, arm in by.items():
            seeds = sorted(set(ticket) & set(arm))
            est = replicated({"ticket": [ticket[k]["test_acc"] - arm[k]["test_acc"] for k in seeds]})
            row["arms"][name] = {"label": label(name), "density": next(iter(arm.values()))["density"],
                                 "paper": BASELINES[name].paper if name in BASELINES else "",
                                 "accuracy": interval([x["test_acc"] for x in arm.values()]).as_dict(),
                                 "head": next(iter(arm.values())).get("head", "")}
            items.append((label(name), est, name in REFERENCES))
            where.append((row, name))
        rows.append(row)
    fam, judged = judge(items, tolerance)
    for (row, name), j in zip(where, judged):
        row["arms"][name].update({
            "margin": j["interval"].as_dict(), "margin_95": j["interval_95"].as_dict(), "estimate": j["estimate"].as_dict(),
            "p": j["p"], "p_equivalence": j["p_equivalence"], "verdict": j["verdict"]})
    return {"summary": rows, "family": {"tests": fam.m, "discoveries": fam.discoveries, "q": fam.q, "level": fam.level,
                                     "method": "Benjamini-Hochberg; FCR-adjusted intervals (Benjamini & Yekutieli 2005)"},
            "tolerance": tolerance}


def with_ticket_weights(summary: dict[str, Any], ticket: Ticket) -> dict[str, Any]:
    """Each summary row with `ticket_weights`: the prunable weights the ticket's mask keeps at that round, on
    its source (output layer included): the count a weights point (`--weights`) is matched against. The
    networks on the target keep their own counts (`weights` of each run: a new or dense output layer differs)."""
    for row in summary["summary"]:
        row["ticket_weights"] = ticket.kept(row["round"])
    return summary


def own_overlap(plan: TransferPlan) -> list[dict[str, Any]]:
    """Per round: how many of the ticket's kept weights the own ticket also keeps, vs chance.

    Compared at the matched density, over the layers both tickets share with equal shapes (the
    output layers differ when the class counts do).
    """
    from ticketx.compare import overlap

    if plan.own is None:
        return []
    out = []
    for r, own_round in plan.own_rounds.items():
        a, b = plan.ticket.mask(r), plan.own.mask(own_round)
        common = [n for n in a if n in b and a[n].shape == b[n].shape]
        res = overlap({n: a[n] for n in common}, {n: b[n] for n in common})
        out.append({"round": r, "own_round": own_round, **res})
    return out


def prunable_count(model: Any) -> int:
    """Every prunable weight of `model` (what a dense network keeps)."""
    from ticketx.models import prunable_names

    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in prunable_names(model))


def arm_run(*, name: str, baseline: Baseline, plan: TransferPlan, data: ImageData, round_: int, seed: int,
            runs_root: Path, index: int = 1, total: int = 1) -> Run:
    """One arm's network on the target, as a run: built (from the ticket or the own ticket) only when it trains.

    Every arm compared at the ticket's round `round_` trains with the same data order
    (seed, round_), so a paired difference removes the data order's share of the noise.
    """
    spec, tspec = plan.spec, plan.train
    own = name == "own-ticket"
    ticket = plan.own if own else plan.ticket
    assert ticket is not None
    src_round = plan.own_rounds[round_] if own else round_
    head = head_rule(spec.head, ticket, data.name, list(data.classes))
    key_obj = {
        "protocol": PROTOCOL, "ticket": ticket.meta.get("fingerprint"), "round": src_round, "kind": baseline.name,
        "target": data.name, "seed": seed, "pair_round": round_,
        "train": tspec.model_dump(), "head": head, "head_dense": spec.head_dense, "deterministic": spec.deterministic,
    }
    if spec.mask0 != "zero":  # what the pruned weights hold (Zhou et al. 2019); zero: the keys of before
        key_obj["mask0"] = spec.mask0
    key = store.fingerprint(key_obj)

    def start() -> Start:
        prep = Arm(ticket, src_round, data.num_classes, seed, head=head, head_dense=spec.head_dense,
                   mask0=spec.mask0).build(baseline)
        mask = prep.mask
        return Start(prep.model, mask, {
            "density": M.density(mask) if mask is not None else 1.0,
            # remaining weights over the masked tensors (the dense arm: every prunable weight)
            "weights": M.count(mask)[0] if mask is not None else prunable_count(prep.model),
            "layer_density": M.layer_densities(mask) if mask is not None else {}, "head_reset": prep.head_reset},
            frozen=prep.frozen)

    return Run(
        key=key, start=start, folder=runs_root / f"{name}-r{src_round:02d}-s{seed}-{key}",
        label=f"[{index}/{total}] {name} r{src_round} s{seed}", data_seed=runtime.transfer_data_seed(seed, round_),
        # One noisy target for every arm and round of a seed (tspec.noise_seed, when given, wins).
        split_seed=seed, noise_seed=seed, experiment="transfer", config=key_obj,
        info={"label": name, "kind": baseline.name, "round": src_round, "seed": seed,
              "head": ("kept" if head == "keep" else "new") + (" dense" if spec.head_dense else ""),
              "source_data": ticket.meta["data"], "source_optimizer": ticket.meta["train"]["optimizer"],
              "target": data.name, "optimizer": tspec.optimizer, "config": key_obj,
              **({"mask0": spec.mask0} if spec.mask0 != "zero" else {})},
    )
