"""A study expanded into cells: one search cell per ticket to find, one transfer cell per
(ticket, target, transfer optimizer, round or density, seed), and with `stability:` one stability
cell per (source ticket, round). Typed, keyed by their configuration.

Identical configurations collapse into one cell, and a network two cells have in common (the
target's own ticket, retrained next to every source's ticket) is counted once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ticketx.settings.search import SearchSpec
from ticketx.settings.study import Study, check_lengths, own_init_seed, prune_spec, train_spec
from ticketx.settings.train import PruneSpec, TrainSpec
from ticketx.settings.transfer import TransferSpec


@dataclass
class Cell:
    """One unit of a study; `key` is the fingerprint of `config`, `id` its folder under <out>/cells/."""

    kind: ClassVar[str] = ""
    key: str
    id: str
    title: str  # for humans
    short: str  # for the progress bar
    config: dict[str, Any]  # the full resolved configuration (what `key` is computed from)
    info: dict[str, Any]  # model, data sets, optimizers, seeds, round/density: for results
    networks: int  # networks this cell trains when nothing is done yet (shared ones once)


@dataclass
class SearchCell(Cell):
    """Find one ticket (ticketx.search)."""

    kind: ClassVar[str] = "search"
    find: SearchSpec = None  # type: ignore[assignment]


@dataclass
class TransferCell(Cell):
    """Retrain one round of one ticket on one target with one seed, with its baselines and the own ticket."""

    kind: ClassVar[str] = "transfer"
    transfer: TransferSpec = None  # type: ignore[assignment]
    source: str = ""  # search cell id of the ticket
    own_ticket: Optional[str] = None  # search cell id of the target's own ticket
    shared: list[str] = field(default_factory=list)  # run keys other cells may also train


@dataclass
class StabilityCell(Cell):
    """Linear mode connectivity of one round of one source ticket (ticketx.stability) on its own data set."""

    kind: ClassVar[str] = "stability"
    train: TrainSpec = None  # type: ignore[assignment]  # the ticket's own recipe (its search's)
    round: int = 0
    seeds: tuple[int, int] = (0, 1)
    points: int = 11
    source: str = ""  # search cell id of the ticket


def slug(text: str) -> str:
    """'digits[0-4]' -> 'digits0-4'; 'timm:resnet18' -> 'timm-resnet18' (readable folder names)."""
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("[", "").replace("]", "")).strip("-")
    return s[:40] or "x"


def _search_cell(study: Study, model: str, data: str, train: TrainSpec, prune: PruneSpec, seed: int, role: str,
                 init_seed: Optional[int] = None) -> SearchCell:
    from ticketx import store

    spec = SearchSpec(data=data, model=model, image_size=study.spec.image_size, channels=study.channels, train=train,
                    prune=prune, seed=seed, init_seed=init_seed, deterministic=study.spec.deterministic)
    config = {"kind": "search", "find": spec.science()}
    key = store.fingerprint(config)
    crit = "" if prune.criterion == "magnitude" else f"-{slug(prune.criterion)}"
    return SearchCell(
        key=key, id=f"search-{slug(model)}-{slug(data)}-{train.optimizer}{crit}-s{seed}-{key}",
        title=f"search {model} on {data} ({train.optimizer}, seed {seed})",
        short=f"search {data} {train.optimizer} s{seed}", config=config,
        info={"model": model, "data": data, "optimizer": train.optimizer, "seed": seed, "role": role,
              "rounds": prune.rounds, "init_seed": spec.seeds[0], "criterion": prune.criterion},
        networks=prune.rounds + 1, find=spec,
    )


def _points(study: Study, model: str, prune: PruneSpec) -> list[tuple[str, Any]]:
    """What to transfer: [('round', r), ...] or [('density', d), ...] (default: every pruned round)."""
    tr = study.spec.transfer
    if tr.densities is not None:
        return [("density", d) for d in tr.densities]
    if tr.rounds is None or tr.rounds == "all":
        return [("round", r) for r in range(1, prune.rounds + 1)]
    too_far = [r for r in tr.rounds if r > prune.rounds]
    if too_far:
        raise study.error(("transfer", "rounds"),
                          f"round {too_far[0]} is past the last round of the search ({prune.rounds} rounds for {model})")
    return [("round", r) for r in tr.rounds]


def expand(study: Study) -> list[Cell]:
    """Every cell of the study, searches first, each once (identical configurations collapse)."""
    from ticketx.baselines import BASELINES

    spec = study.spec
    tr = spec.transfer
    searches: dict[str, SearchCell] = {}
    transfers: dict[str, TransferCell] = {}
    own_runs: set[str] = set()
    stabs: dict[str, StabilityCell] = {}
    for model, prune in ((m, p.model_copy(update={"criterion": c})) for m in spec.model
                         for p in [prune_spec(study, m)] for c in (spec.search.criteria or [p.criterion])):
        points = _points(study, model, prune)
        tickets: list[SearchCell] = []  # the source tickets, in study order
        for src, data in zip(spec.sources, study.sources):
            for opt in (list(src.optimizer) if src.optimizer else [None]):
                strain = train_spec(study, model, "search", opt)
                check_lengths(study, model, strain, prune)
                for seed in src.seeds or spec.search.seeds:
                    cell = _search_cell(study, model, data, strain, prune, seed, "source")
                    if cell.key not in searches:
                        searches[cell.key] = cell
                        tickets.append(cell)
        for cell in tickets:
            seed = cell.info["seed"]
            for target in study.targets:
                for topt in dict.fromkeys(cell.info["optimizer"] if o == "same" else o for o in tr.optimizer):
                    ttrain = train_spec(study, model, "transfer", topt)
                    own: Optional[SearchCell] = None
                    if tr.own_ticket:
                        own = _search_cell(study, model, target, train_spec(study, model, "search", topt), prune, seed, "own",
                                           init_seed=own_init_seed(seed, tr.own_ticket_init))
                        searches.setdefault(own.key, own)
                        if own.key in {t.key for t in tickets}:
                            # The own ticket is also a source: the cell that transfers it to its own
                            # data set trains it; every other cell would train the very same network.
                            own = None
                    for pi, (what, value) in enumerate(points):
                        # A baseline that does not depend on the round (dense: same rewind weights,
                        # no mask) is trained once per ticket, target and seed.
                        baselines = [b for b in tr.baselines if BASELINES[b].per_round or pi == 0]
                        for tseed in tr.seeds:
                            c = _transfer_cell(study, model, cell, own, target, ttrain, what, value, tseed, baselines)
                            if c.key in transfers:
                                continue
                            for run in c.shared:  # the own ticket's networks are shared by every source
                                if run in own_runs:
                                    c.networks -= 1
                                own_runs.add(run)
                            transfers[c.key] = c
        if spec.stability is not None:
            for cell in tickets:
                for r in _stability_rounds(study, model, prune):
                    c = _stability_cell(study, cell, r)
                    stabs.setdefault(c.key, c)
    cells: list[Cell] = [*sorted(searches.values(), key=lambda c: c.info["role"] == "own"), *transfers.values(),
                         *stabs.values()]
    if not transfers:
        raise study.error(("targets",), "no cells: the study expands to no transfer")
    return cells


def _stability_rounds(study: Study, model: str, prune: PruneSpec) -> list[int]:
    """The rounds `stability.rounds` names ('all': 0..last, the dense network included)."""
    st = study.spec.stability
    assert st is not None
    if st.rounds == "all":
        return list(range(prune.rounds + 1))
    too_far = [r for r in st.rounds if r > prune.rounds]
    if too_far:
        raise study.error(("stability", "rounds"),
                          f"round {too_far[0]} is past the last round of the search ({prune.rounds} rounds for {model})")
    return list(st.rounds)


def _stability_cell(study: Study, source: SearchCell, round_: int) -> StabilityCell:
    from ticketx import store

    st = study.spec.stability
    assert st is not None
    train = source.find.train  # the ticket's own recipe, as `ticketx stability` uses by default
    seeds = (st.seeds[0], st.seeds[1])
    # Keyed by what the two copies and the path depend on: the ticket (its search's key), the
    # round, the seeds, the path's resolution, the recipe. Not part of any transfer cell's key.
    config = {"kind": "stability", "source": source.key, "round": round_, "seeds": list(seeds), "points": st.points,
              "train": train.model_dump(), "deterministic": study.spec.deterministic}
    key = store.fingerprint(config)
    src = source.info
    return StabilityCell(
        key=key,
        id=f"stability-{slug(src['model'])}-{slug(src['data'])}-{src['optimizer']}-s{src['seed']}-r{round_}-{key}",
        title=f"stability {src['data']} ({src['optimizer']}, seed {src['seed']}), round {round_}",
        short=f"stability {src['data']} {src['optimizer']} r{round_}", config=config,
        info={"model": src["model"], "source": src["data"], "search_optimizer": src["optimizer"],
              "search_seed": src["seed"], "criterion": src["criterion"], "rewind": source.find.prune.rewind, "round": round_,
              "seeds": list(seeds), "points": st.points},
        networks=2, train=train, round=round_, seeds=seeds, points=st.points, source=source.id,
    )


def _transfer_cell(study: Study, model: str, source: SearchCell, own: Optional[SearchCell], target: str,
                   train: TrainSpec, what: str, value: Any, seed: int, baselines: list[str]) -> TransferCell:
    from ticketx import store

    tr = study.spec.transfer
    spec = TransferSpec(
        target=target, rounds=[value] if what == "round" else None, density=value if what == "density" else None,
        train=train, baselines=baselines, seeds=[seed], head=tr.head, head_dense=tr.head_dense,
        deterministic=study.spec.deterministic,
    )
    config = {
        "kind": "transfer", "source": source.key, "own_ticket": own.key if own else None, "target": target,
        "image_size": study.spec.image_size, "channels": study.channels, what: value, "seed": seed,
        "train": train.model_dump(), "baselines": baselines, "head": tr.head, "head_dense": tr.head_dense,
        "deterministic": study.spec.deterministic, "own_ticket_init": tr.own_ticket_init if own else None,
    }
    key = store.fingerprint(config)
    point = f"r{value}" if what == "round" else f"d{value:g}"
    src = source.info
    return TransferCell(
        key=key,
        id=f"transfer-{slug(model)}-{slug(src['data'])}-{src['optimizer']}-s{src['seed']}-to-{slug(target)}-{train.optimizer}-{point}-s{seed}-{key}",  # noqa: E501
        title=f"transfer {src['data']} ({src['optimizer']}) -> {target} ({train.optimizer}), {what} {value:g}, seed {seed}",
        short=f"{src['data']}->{target} {train.optimizer} {point} s{seed}",
        config=config,
        info={"model": model, "source": src["data"], "search_optimizer": src["optimizer"], "search_seed": src["seed"],
              "target": target, "transfer_optimizer": train.optimizer, "seed": seed, what: value,
              "criterion": src["criterion"],
              "own_ticket_init": tr.own_ticket_init if own else None},
        networks=1 + len(baselines) + (1 if own else 0),
        transfer=spec, source=source.id, own_ticket=own.id if own else None,
        shared=[f"{own.key}|{what}{value}|{seed}|{store.fingerprint(config['train'])}"] if own else [],
    )


def count(cells: list[Cell]) -> dict[str, int]:
    """Cells by kind and networks to train (a network shared by cells counted once).

    'stability' appears only in a study with a `stability:` block (the counts of studies without
    one, recorded in study.json and printed by `study validate`, stay as they were)."""
    out = {"search": 0, "transfer": 0, "networks": 0}
    for c in cells:
        out[c.kind] = out.get(c.kind, 0) + 1
        out["networks"] += c.networks
    return out
