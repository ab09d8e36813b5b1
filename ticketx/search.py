"""The ticket search (`ticketx find`): iterative pruning with rewinding.

Round 0 trains the dense network from its initialisation and records the weights at the rewind
point. Each later round prunes a fraction of the remaining weights, scored by the search's
criterion (`ticketx.criteria`: |final weight| by default, Frankle & Carbin 2019; Zhou et al.
2019's others) from the previous round's trained weights, resets the survivors to the rewind
weights, and retrains from the rewind step to the end of training (late resetting: Frankle et
al. 2020, Morcos et al. 2019).

`prune.retrain` chooses what a round retrains from (Renda, Frankle & Carbin, ICLR 2020, "Comparing
rewinding and fine-tuning in neural network pruning"): `rewind` (the lottery ticket: the rewind
weights, the lr schedule from the rewind step k), `lr-rewind` (the previous round's final weights,
the lr schedule replayed from step k) or `finetune` (the previous round's final weights at the
final lr). Every mode trains T - k steps per round with the same data order and a fresh optimizer
state, and the ticket's rewind weights are always θ_k of round 0: a transfer starts from the mask
on θ_k, not from a round's trained subnetwork.

Each round also records, for every weight it prunes, whether that weight moved toward zero in
the training that pruned it (|w_final| < |w_rewind|); the ticket stores the bits (extras
'toward_zero', one bool per weight in all) for Zhou et al. 2019's mask-0 action.

Every round is a run (`ticketx.runs`) in a work folder next to the ticket (`<out>.work/`): a
round with its `result.pt` is never trained again, a round in progress resumes from its last
epoch checkpoint, so rerunning the same command continues where a crash stopped it. The ticket
is written atomically at the end and the work folder removed.

`find_many` runs searches that differ only in their seeds in lockstep: round r of every one in
one call to the trainer (a cohort, `ticketx.cohort`, with `cohort` above 1), then each prunes its
own mask. Each search keeps its own runs, work folder and ticket; `find` is `find_many` of one.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ticketx import deconstruct as D
from ticketx import masks as M
from ticketx import criteria, distributed, store
from ticketx import ticket as ticketfile
from ticketx.baselines import TOWARD_ZERO
from ticketx.data import ImageData, load_data
from ticketx.errors import TicketxError, UsageError
from ticketx.models import build_model, head_name, model_info, prunable_names
from ticketx.settings import SearchSpec, TrainSpec, rewind_problem
from ticketx.steps import to_iterations
from ticketx import runtime
from ticketx.runtime import resolve_device, set_deterministic
from ticketx.runs import ensure
from ticketx.train import Recipe, Run, Start, Steps, state_copy, track
from ticketx.ui import Reporter


def prepare_data(data: str, model: str, image_size: int | None, channels: int | None, data_dir: Any) -> ImageData:
    """Load a data set adapted to the model's input size (data-side shape adaptation)."""
    info = model_info(model)
    return load_data(data, data_dir, image_size=image_size or info.image_size, channels=channels)


def noise_meta(train: TrainSpec, seed: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A ticket's `label_noise` entry: the noise its search trained with (fraction, mode, seed, how many
    labels flipped); nothing for a search on clean labels."""
    if not train.label_noise:
        return {}
    flipped = next((r["label_noise"] for r in records if isinstance(r.get("label_noise"), dict)), {})
    return {"label_noise": {"fraction": train.label_noise, "mode": train.noise_mode, "seed": seed,
                            **{k: flipped[k] for k in ("flipped", "examples") if k in flipped}}}


def work_dir_for(out: Path) -> Path:
    return out.parent / (out.name + ".work")


@dataclass
class Search:
    """One ticket search, set up: the data, the network at initialisation, the step plan, the work folder."""

    spec: SearchSpec
    key: str  # fingerprint of the settings that change the result
    work: Path
    device: torch.device
    reporter: Reporter
    data: ImageData
    recipe: Recipe
    model: torch.nn.Module
    names: list[str]  # prunable tensors
    head: str
    init_state: dict[str, torch.Tensor]
    rewind_step: int
    cohort: int | str = 1  # runs trained together (ticketx.cohort): several searches' rounds in lockstep

    @property
    def steps(self) -> Steps:
        return self.recipe.steps

    @property
    def retrain_recipe(self) -> Recipe:
        """The recipe of rounds >= 1: the search's, but at a constant final lr for `finetune` (Renda et al. 2020)."""
        if self.spec.prune.retrain != "finetune":
            return self.recipe
        final_lr = self.steps.schedule(self.steps.total - 1)
        spec = self.spec.train.model_copy(update={"lr": final_lr, "milestones": [], "warmup": "0"})
        return Recipe.of(self.data, spec, self.device, cohort=self.cohort)

    @property
    def state_names(self) -> list[str]:
        """The final tensors a round keeps: the prunable weights; every tensor when the next round starts from them."""
        return self.names if self.spec.prune.retrain == "rewind" else list(self.init_state)

    def round_mask(self, r: int, previous: M.Mask, final: dict[str, torch.Tensor], rewind: dict[str, torch.Tensor]) -> M.Mask:
        """Round r's mask: pruned from round r-1's mask by its trained weights (stored, so a rerun reuses it)."""
        spec = self.spec
        path = self.work / f"round_{r:02d}" / "mask.pt"
        if path.exists():
            return store.load_torch(path, "mask")
        init_seed, data_seed = spec.seeds
        # w_i of Zhou et al. 2019 is the rewind weights: every round restarts from them.
        mask = criteria.prune_round(
            spec.prune.criterion, {n: rewind[n] for n in self.names}, final, previous, spec.prune.rate,
            scope=spec.prune.scope, head=self.head, head_rate=spec.prune.head_rate, keep_dense=spec.prune.keep_dense,
            generator=runtime.prune_round(init_seed, data_seed, r), rates=spec.prune.rates,
        )
        store.save_torch(path, mask)
        return mask

    def round_run(self, r: int, mask: M.Mask, rewind: dict[str, torch.Tensor] | None,
                  previous: dict[str, torch.Tensor] | None = None) -> Run:
        """Round r as a run (trained by `runs.ensure`, or read when done; `round_outcome` reads its outcome).

        Round 0 trains the dense network from its initialisation and snapshots the rewind weights
        on the way; round r >= 1 restarts the survivors at the rewind step from the rewind weights
        (`retrain` rewind) or from `previous`, round r-1's final weights (lr-rewind, finetune).
        """
        mode = self.spec.prune.retrain
        start_state = self.init_state if r == 0 else rewind if mode == "rewind" else previous
        assert start_state is not None

        def start() -> Start:
            self.model.load_state_dict(start_state)
            return Start(self.model, mask if r > 0 else None)

        return Run(
            key=self.key, start=start, folder=self.work / f"round_{r:02d}", label=f"round {r}/{self.spec.prune.rounds}",
            start_step=0 if r == 0 else self.rewind_step, data_seed=self.spec.seeds[1], noise_seed=self.spec.noise_seed,
            snapshot_steps=(self.rewind_step,) if r == 0 else (), experiment="search", keep_weights=True,
            config=self.spec.science(),
            info={"round": r, "density": M.density(mask), "weights": M.count(mask)[0], "layer_density": M.layer_densities(mask),
                  "collapsed": M.collapsed(mask)},
        )

    def round_recipe(self, r: int) -> Recipe:
        """The recipe round r trains with (rounds >= 1: `retrain_recipe`)."""
        return self.recipe if r == 0 else self.retrain_recipe

    def round_outcome(self, r: int, outcome: Any, rewind: dict[str, torch.Tensor] | None
                      ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(record, trained weights of `state_names`, rewind weights) of round r from its run's outcome."""
        if r == 0:
            # Rounds written before results kept their snapshots have the rewind weights beside them.
            rewind = outcome.snapshots.get(self.rewind_step)
            if rewind is None:
                rewind = store.load_torch(self.work / "rewind.pt", "rewind weights")
        assert rewind is not None
        record = {k: v for k, v in outcome.record.items() if k != "key"}
        return record, outcome.weights, rewind

    def meta(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """What the ticket file says about itself (ticket.META_KEYS lists what readers rely on)."""
        spec, data = self.spec, self.data
        init_seed, data_seed = spec.seeds
        return {
            "kind": "ticket", "model": spec.model, "data": data.name, "classes": list(data.classes),
            "num_classes": data.num_classes, "image_size": data.image_size, "channels": data.channels,
            "width": spec.width, **noise_meta(spec.train, spec.noise_seed, records),
            "head": self.head, "train": spec.train.model_dump(), "prune": spec.prune.model_dump(), "seed": spec.seed,
            "init_seed": init_seed, "data_seed": data_seed, "deterministic": spec.deterministic,
            "rewind_step": self.rewind_step, "iterations_per_epoch": self.steps.iterations_per_epoch,
            "total_steps": self.steps.total, "rounds": records, "fingerprint": self.key, "spec": spec.model_dump(),
            "device": distributed.describe(self.device), "versions": store.versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }


def _already_done(out: Path, key: str, work: Path, force: bool, reporter: Reporter) -> ticketfile.Ticket | None:
    """The ticket at `out` if this very search wrote it; refuse to overwrite anything else."""
    spec_file = work / "spec.json"
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a ticket file name, e.g. {out / 'ticket.pt'}")
    if out.exists() and not force:
        try:
            existing = ticketfile.load(out)
        except TicketxError:
            existing = None
        if existing is not None and existing.meta.get("fingerprint") == key:
            # A run killed after writing the ticket but before removing its work folder.
            if spec_file.exists() and store.read_json(spec_file, dict).get("fingerprint") == key:
                store.remove_tree(work)
            reporter.log(f"[green]{out} is already done with these settings; nothing to train[/]")
            return existing
        raise UsageError(f"{out} already exists and was not made by this search", "pass --force to replace it, or choose another --out")
    if spec_file.exists() and store.read_json(spec_file).get("fingerprint") != key:
        raise UsageError(
            f"{work} holds an unfinished search with other settings",
            f"rerun that search to finish it, or delete {work} to start this one",
        )
    return None


def _setup(spec: SearchSpec, key: str, work: Path, device: torch.device, reporter: Reporter, data_dir: Any,
           data: ImageData | None = None, cohort: int | str = 1) -> Search:
    """Load the data (unless given) and build the network at its initialisation (seeded); check the rewind step."""
    if data is None:
        data = prepare_data(spec.data, spec.model, spec.image_size, spec.channels, data_dir)
    init_seed, _ = spec.seeds
    runtime.seed_weights(init_seed)
    model = build_model(spec.model, data.num_classes, data.channels, data.image_size, width=spec.width)
    recipe = Recipe.of(data, spec.train, device, cohort=cohort)
    problem = rewind_problem(spec.prune.rewind, spec.train.length, recipe.steps.iterations_per_epoch)
    if problem:
        raise UsageError(problem)
    return Search(spec, key, work, device, reporter, data, recipe, model, prunable_names(model), head_name(model),
                  state_copy(model), to_iterations(spec.prune.rewind, recipe.steps.iterations_per_epoch), cohort)


def lockstep_key(spec: SearchSpec) -> str:
    """What searches must share to run in lockstep (`find_many`): everything that changes the result
    but their seeds (the settings, hence the data, the network and every round's recipe)."""
    science = spec.science()
    for seed in ("init_seed", "data_seed"):
        science.pop(seed)
    return store.fingerprint(science)


@dataclass
class _Progress:
    """One search of `find_many` between rounds: its masks, records and the last round's weights."""

    spec: SearchSpec
    out: Path
    search: Search
    mask: M.Mask
    toward: dict[str, torch.Tensor]
    rounds: Any  # its tracker run (the search as a whole), or None
    masks: list[M.Mask] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    rewind: dict[str, torch.Tensor] | None = None
    final: dict[str, torch.Tensor] = field(default_factory=dict)  # the last round's final weights (state_names)


def find(
    spec: SearchSpec,
    out: str | Path,
    *,
    data_dir: Any = None,
    device: str = "auto",
    reporter: Reporter | None = None,
    force: bool = False,
) -> ticketfile.Ticket:
    """Run (or resume, or skip when already done) a ticket search and write the ticket to `out`."""
    return find_many([(spec, out)], data_dir=data_dir, device=device, reporter=reporter, force=force)[0]


def find_many(
    searches: Sequence[tuple[SearchSpec, str | Path]],
    *,
    data_dir: Any = None,
    device: str = "auto",
    reporter: Reporter | None = None,
    force: bool = False,
    cohort: int | str = 1,
) -> list[ticketfile.Ticket]:
    """`find` for several searches (spec, out) that differ only in their seeds (`lockstep_key`), in
    lockstep: round r of every search in one call to the trainer (one cohort with `cohort` > 1), then
    each search prunes its own mask, and so on; rounds stay sequential. The tickets, in order.

    Each search is exactly what it is alone (the same runs, keys, work folders, masks pruned from
    its own weights); in a cohort its weights follow the one-network trajectory to float tolerance,
    so a mask can differ from the one-at-a-time search only where two weights' scores tie at the
    pruning threshold to within that rounding. A search already done is read; one killed part-way
    resumes from its rounds' results and checkpoints, whatever it is grouped with this time.
    """
    reporter = reporter or Reporter()
    keys = {lockstep_key(spec) for spec, _ in searches}
    if len(keys) > 1:
        raise UsageError("searches run in lockstep must differ only in their seeds")
    tickets: dict[int, ticketfile.Ticket] = {}
    todo: list[tuple[int, SearchSpec, Path, str, Path]] = []
    for i, (spec, out) in enumerate(searches):
        out = Path(out)
        key = store.fingerprint(spec.science())
        work = work_dir_for(out)
        existing = _already_done(out, key, work, force, reporter)
        if existing is not None:
            tickets[i] = existing
        else:
            todo.append((i, spec, out, key, work))
    if not todo:
        return [tickets[i] for i in range(len(searches))]
    dev = resolve_device(device)
    for _, _, out, _, _ in todo:
        store.check_writable(out)
    set_deterministic(todo[0][1].deterministic)
    progress: list[_Progress] = []
    data: ImageData | None = None
    for _, spec, out, key, work in todo:
        search = _setup(spec, key, work, dev, reporter, data_dir, data, cohort)
        data = search.data  # the searches share their settings: one data set for all
        store.remove_stale_temps(out)  # left by a run killed while writing the ticket
        store.write_json(work / "spec.json", {"fingerprint": key, "spec": spec.model_dump(), "versions": store.versions()})
        mask = M.ones_like({n: p for n, p in search.model.named_parameters() if n in search.names})
        toward = {n: torch.zeros_like(m) for n, m in mask.items()}  # per weight: moved toward zero (Zhou et al. 2019)
        # the search as a whole in the tracker (if any): each round's density and accuracy, by round
        rounds = track(reporter, "rounds", spec.science(), folder=work / "rounds", key=key, kind="search")
        progress.append(_Progress(spec, out, search, mask, toward, rounds))
    last = todo[0][1].prune.rounds
    for r in range(last + 1):
        runs = []
        for p in progress:
            if r > 0:
                _prune(p, r, reporter)
            runs.append(p.search.round_run(r, p.mask, p.rewind, p.final))
        first = progress[0].search
        outcomes = ensure(runs, first.round_recipe(r), reporter, names=first.state_names)
        for p, outcome in zip(progress, outcomes):
            record, p.final, p.rewind = p.search.round_outcome(r, outcome, p.rewind)
            p.records.append(record)
            if p.rounds is not None:
                p.rounds.log(r, {"round/density": record["density"], "round/test_accuracy": record["test_acc"],
                                 "round/val_accuracy": record.get("val_acc"), "round/seconds": record["seconds"]})
                p.rounds.checkpoint()
            reporter.log(f"{p.spec.model} on {p.search.data.name}: round {r}/{p.spec.prune.rounds}: "
                         f"{100 * record['density']:.2f}% weights remaining, test acc {100 * record['test_acc']:.2f}% "
                         f"({record['seconds']:.1f}s)")
    for (i, _, _, _, work), p in zip(todo, progress):
        tickets[i] = _write_ticket(p, work)
    distributed.barrier()  # DDP: every rank returns once rank 0 has written the tickets
    return [tickets[i] for i in range(len(searches))]


def _prune(p: _Progress, r: int, reporter: Reporter) -> None:
    """Round r's mask of search `p`, from round r-1's trained weights; which weights moved toward zero."""
    assert p.rewind is not None
    search, previous, rewind, final = p.search, p.mask, p.rewind, p.final
    p.mask = mask = search.round_mask(r, previous, {n: final[n] for n in search.names}, rewind)
    p.masks.append(mask)
    for n in mask:  # the weights this round prunes: their movement in the training that pruned them
        pruned = previous[n] & ~mask[n]
        p.toward[n][pruned] = D.toward_zero(rewind[n], final[n])[pruned]
    for name in M.collapsed(mask):
        reporter.log(f"[yellow]warning: round {r}: layer {name} has no weights left (layer collapse)[/]")


def _write_ticket(p: _Progress, work: Path) -> ticketfile.Ticket:
    """The finished search's ticket, written atomically; its work folder removed."""
    rewind, final, mask, toward = p.rewind, p.final, p.mask, p.toward
    assert rewind is not None
    for n in mask:  # weights never pruned: their movement in the last round
        toward[n][mask[n]] = D.toward_zero(rewind[n], final[n])[mask[n]]
    if p.rounds is not None:
        p.rounds.finish()
    ticket = ticketfile.make(p.search.meta(p.records), p.masks, rewind, extras={TOWARD_ZERO: toward})
    ticketfile.save(ticket, p.out)
    store.remove_tree(work)
    return ticket
