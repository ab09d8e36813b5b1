"""A study expanded into cells: one search cell per ticket to find, one transfer cell per ticket and
point of the transfer axes, and with `stability:` one stability cell per (source ticket, round).
Typed, keyed by their configuration.

The grid is the product of the study axes (`ticketx.study.axes`), in their order: every value of
the search axes gives a ticket (a search cell), and every value of the transfer axes a transfer
of it. Identical configurations collapse into one cell, and a network two cells have in common
(the target's own ticket, retrained next to every source's ticket) is counted once. Nothing here
names an axis: each says where its value goes.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Optional

from ticketx import store
from ticketx.baselines import BASELINES
from ticketx.errors import UsageError
from ticketx.settings.base import env_limit
from ticketx.settings.search import SearchSpec
from ticketx.settings.study import Study
from ticketx.settings.train import TrainSpec
from ticketx.settings.transfer import TransferSpec
from ticketx.study.axes import Axis, Draft, search_axes, transfer_axes, with_role


@dataclass(slots=True)  # no __dict__ per cell: a grid of 100k cells holds 100k of them
class Cell:
    """One unit of a study; `key` is the fingerprint of `config`, `id` its folder under <out>/cells/."""

    kind: ClassVar[str] = ""
    key: str
    id: str
    title: str  # for humans
    short: str  # for the progress bar
    config: dict[str, Any]  # the full resolved configuration (what `key` is computed from)
    info: dict[str, Any]  # the axes' values (results columns) and facts for reports
    networks: int  # networks this cell trains when nothing is done yet (shared ones once)


@dataclass(slots=True)
class SearchCell(Cell):
    """Find one ticket (ticketx.search)."""

    kind: ClassVar[str] = "search"
    find: SearchSpec = None  # type: ignore[assignment]
    draft: Optional[Draft] = field(default=None, repr=False, compare=False)  # how it was built (not recorded)


@dataclass(slots=True)
class TransferCell(Cell):
    """Retrain one round of one ticket on one target with one seed, with its baselines and the own ticket."""

    kind: ClassVar[str] = "transfer"
    transfer: TransferSpec = None  # type: ignore[assignment]
    source: str = ""  # search cell id of the ticket
    own_ticket: Optional[str] = None  # search cell id of the target's own ticket
    shared: list[str] = field(default_factory=list)  # run keys other cells may also train


@dataclass(slots=True)
class StabilityCell(Cell):
    """Linear mode connectivity of one round of one source ticket (ticketx.stability) on its own data set."""

    kind: ClassVar[str] = "stability"
    train: TrainSpec = None  # type: ignore[assignment]  # the ticket's own recipe (its search's)
    round: int = 0
    seeds: tuple[int, int] = (0, 1)
    points: int = 11
    source: str = ""  # search cell id of the ticket


# The most cells a study may have. Expansion takes about 0.15 ms and 3 KB per cell (README, "Large
# and untrusted study files"): a million cells is minutes and gigabytes, and a grid past it is
# more likely a mistake (or a hostile file) than a study. TICKETX_MAX_CELLS overrides it.
MAX_CELLS = 1_000_000
MAX_CELLS_ENV = "TICKETX_MAX_CELLS"
# Replication axes (search seeds, transfer seeds) repeat one shape of grid: counted by their
# first value times their number of values, so a seed list of any length costs one walk.
REPLICATES = ("ticket", "retrain")


def max_cells() -> int:
    """The largest grid expanded (TICKETX_MAX_CELLS, default MAX_CELLS)."""
    return env_limit(MAX_CELLS_ENV, MAX_CELLS)


def _count(axes: list[Axis], draft: Draft, leaf: Any, walk: "_Walk") -> int:
    """The leaves of the product of `axes` from `draft` (`leaf(draft)` each), without building them.

    A replication axis's values all give the same shape (a seed changes no other axis's values),
    so its first value stands for all of them. Past `walk.budget` values applied, the walk stops as
    soon as the count passes `walk.limit` (and marks itself cut: the count is then a lower bound).
    """
    if not axes:
        return leaf(draft)
    first, rest = axes[0], axes[1:]
    values = first.values(draft)
    repeat = len(values) if first.role in REPLICATES else 1
    total = 0
    for i, value in enumerate(values[:1] if repeat > 1 else values):
        d = draft.copy()
        d.values[first.name] = value
        d.first[first.name] = i == 0
        first.apply(value, d)
        walk.applied += 1
        total += repeat * _count(rest, d, leaf, walk)
        if total > walk.limit and walk.applied > walk.budget:
            walk.cut = walk.cut or i + 1 < len(values) // repeat
            break
    return total


@dataclass
class _Walk:
    limit: int
    budget: int  # values applied before the count settles for "more than the limit"
    applied: int = 0
    cut: bool = False


def grid_size(study: Study, limit: Optional[int] = None, budget: int = 100_000) -> tuple[int, bool]:
    """(cells, exact): the source searches, transfers and stability cells of the study's grid, counted
    before any is built (identical ones not yet collapsed, the targets' own tickets not counted).

    Exact unless counting is itself long (a product of many long lists that are not seeds): then
    it stops once past `limit`, with `exact` False (the grid has at least that many). `budget`: the
    values applied before that (100k: about a second).
    """
    walk = _Walk(limit if limit is not None else 1 << 62, budget)

    def ticket(d: Draft) -> int:
        source = search_cell(d)
        base = Draft(study, "transfer", values=dict(d.values), first=dict(d.first), info=dict(d.info), source=source)
        n = 1 + _count(transfer_axes(), base, lambda _: 1, walk)
        if study.spec.stability is not None:
            n += len(_stability_rounds(study, source))
        return n

    n = _count(search_axes(), Draft(study, "source"), ticket, walk)
    return n, not walk.cut


def check_size(study: Study) -> None:
    """Refuse a grid of more than `max_cells()` cells, with its size, before building any cell."""
    limit = max_cells()
    n, exact = grid_size(study, limit)
    if n > limit:
        raise UsageError(f"{study.file}: the study's grid has {'' if exact else 'at least '}{n:,} cells, more than the "
                         f"limit of {limit:,}", f"split it into several studies, or raise the limit: {MAX_CELLS_ENV}={n}")


def product(axes: list[Axis], draft: Draft) -> Iterator[Draft]:
    """Every combination of the axes' values, each axis applied to a copy of `draft`, in axis order."""
    if not axes:
        yield draft
        return
    first, rest = axes[0], axes[1:]
    for i, value in enumerate(first.values(draft)):
        d = draft.copy()
        d.values[first.name] = value
        d.first[first.name] = i == 0
        first.apply(value, d)
        yield from product(rest, d)


def search_cell(draft: Draft) -> SearchCell:
    """The search cell of a draft that every search axis has been applied to."""
    study = draft.study
    spec = SearchSpec(image_size=study.spec.image_size, channels=study.channels, deterministic=study.spec.deterministic,
                      **draft.spec)
    config = {"kind": "search", "find": spec.science()}
    key = store.fingerprint(config)
    prune = spec.prune
    return SearchCell(
        key=key, id="-".join(["search", *(part for _, part in draft.ids), key]),
        title=" ".join(["search", *draft.titles]), short=" ".join(["search", *(p for _, p in draft.ids[1:])]),
        config=config,
        info={**draft.info, "role": draft.role, "rounds": prune.rounds, "init_seed": spec.seeds[0]},
        networks=prune.rounds + 1, find=spec, draft=draft,
    )


def own_search(source: SearchCell, transfer: Draft, known: Optional[dict[str, SearchCell]] = None) -> SearchCell:
    """The target's own ticket for a transfer: the source ticket's search with each search axis at the
    value its `own` gives (found on the target, with the transfer optimizer, ...).

    `known`: own tickets built so far, by their axis values: every seed and point of one target
    has the same own ticket, built once (building it per transfer cell was most of `expand`).
    """
    assert source.draft is not None
    values = [(a, a.own(source.draft.values[a.name], transfer)) for a in search_axes()]
    at = repr([v for _, v in values])
    if known is not None and at in known:
        return known[at]
    draft = Draft(transfer.study, "own")
    for a, value in values:
        draft.values[a.name] = value
        a.apply(value, draft)
    cell = search_cell(draft)
    if known is not None:
        known[at] = cell
    return cell


def expand(study: Study) -> list[Cell]:
    """Every cell of the study, searches first, each once (identical configurations collapse).

    A grid of more than `max_cells()` cells is refused first, counted without being built.
    """
    check_size(study)
    with _collector_paused():
        return _expand(study)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off for a while. Expansion makes ~20 long-lived objects per cell and
    no garbage cycles, and the collector re-examines every cell built so far, again and again:
    measured, a quarter of `expand`'s time at 100k cells (13.1 s -> 10.0 s)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _expand(study: Study) -> list[Cell]:
    tr = study.spec.transfer
    searches: dict[str, SearchCell] = {}
    tickets: list[SearchCell] = []  # the source tickets, in study order
    for d in product(search_axes(), Draft(study, "source")):
        cell = search_cell(d)
        if cell.key not in searches:
            searches[cell.key] = cell
            tickets.append(cell)
    sources = {t.key for t in tickets}
    transfers: dict[str, TransferCell] = {}
    own_runs: set[str] = set()
    at_round: dict[tuple[str, int], tuple[str, TransferCell]] = {}  # (ticket, transfer values but the point, round) -> (kind of point, cell)
    stabs: dict[str, StabilityCell] = {}
    points = with_role("x", "transfer")
    owns: dict[str, SearchCell] = {}
    for ticket in tickets:
        assert ticket.draft is not None
        base = Draft(study, "transfer", values=dict(ticket.draft.values), first=dict(ticket.draft.first),
                     info=dict(ticket.draft.info), source=ticket)
        for td in product(transfer_axes(), base):
            own: Optional[SearchCell] = None
            if tr.own_ticket:
                own = own_search(ticket, td, owns)
                own = searches.setdefault(own.key, own)
                if own.key in sources:
                    # The own ticket is also a source: the cell that transfers it to its own
                    # data set trains it; every other cell would train the very same network.
                    own = None
            # A baseline that does not depend on the round (dense: same rewind weights, no mask)
            # is trained once per ticket, target and seed: in the cells of the first point.
            first = all(td.first[a.name] for a in points)
            baselines = [b for b in tr.baselines if BASELINES[b].per_round or first]
            c = transfer_cell(td, ticket, own, baselines)
            if c.key in transfers:
                continue
            for run in c.shared:  # the own ticket's networks are shared by every source
                if run in own_runs:
                    c.networks -= 1
                own_runs.add(run)
            _count_once(ticket, td, c, at_round)
            transfers[c.key] = c
        if study.spec.stability is not None:
            for r in _stability_rounds(study, ticket):
                c = _stability_cell(study, ticket, r)
                stabs.setdefault(c.key, c)
    cells: list[Cell] = [*sorted(searches.values(), key=lambda c: c.info["role"] == "own"), *transfers.values(),
                         *stabs.values()]
    if not transfers:
        raise study.error(("transfer",), "no cells: the study expands to no transfer")
    return cells


def _count_once(ticket: SearchCell, td: Draft, cell: TransferCell,
                at_round: dict[tuple[str, int], tuple[str, TransferCell]]) -> None:
    """A weights point whose ticket round (known from the shapes) is also a round point of the same
    ticket, seed and transfer values trains the round point's networks (the same run keys: the runner
    trains them once and both cells read them), so only one of the two cells counts them: the round
    point's, whose networks include the dense baseline's where it is the first point."""
    from ticketx.study.axes.point import transferred_round

    at_point = transferred_round(td)
    if at_point is None:
        return
    kind, r, others = at_point
    at = (store.fingerprint([ticket.key, others]), r)
    held = at_round.get(at)
    if held is None:
        at_round[at] = (kind, cell)
    elif kind == "weights":
        cell.networks = 0
    elif held[0] == "weights":  # a weights point came first: the round point counts the networks
        held[1].networks = 0
        at_round[at] = (kind, cell)


def is_own_of_itself(source: SearchCell, transfer: Draft) -> bool:
    """Whether the source ticket is, by every search axis, the target's own ticket (found on the target
    with the transfer optimizer): its 'ticket' networks are then the target's own ticket's."""
    assert source.draft is not None
    return all(a.same(a.own(source.draft.values[a.name], transfer), source.draft.values[a.name])
               for a in search_axes())


def _transfer_ids(source: SearchCell) -> list[str]:
    """The parts of a search's folder name that also name the cells built on its ticket."""
    assert source.draft is not None
    names = {a.name: a for a in search_axes()}
    return [part for name, part in source.draft.ids if names[name].in_transfer_id]


def transfer_cell(draft: Draft, source: SearchCell, own: Optional[SearchCell], baselines: list[str]) -> TransferCell:
    """The transfer cell of a draft that every transfer axis has been applied to."""
    study = draft.study
    tr = study.spec.transfer
    spec = TransferSpec(baselines=baselines, head=tr.head, head_dense=tr.head_dense, mask0=tr.mask0,
                        deterministic=study.spec.deterministic, **draft.spec)
    config = {
        "kind": "transfer", "source": source.key, "own_ticket": own.key if own else None,
        "image_size": study.spec.image_size, "channels": study.channels, **draft.config, "baselines": baselines,
        "head": tr.head, "head_dense": tr.head_dense, "deterministic": study.spec.deterministic,
        "own_ticket_init": tr.own_ticket_init if own else None,
    }
    if tr.mask0 != "zero":  # the keys of before for the lottery ticket's zeros
        config["mask0"] = tr.mask0
    key = store.fingerprint(config)
    assert source.draft is not None
    ids = [*_transfer_ids(source), *(part for _, part in draft.ids)]
    # The network the own ticket trains in this cell, which the cells of every source share.
    transfer_values = store.fingerprint(draft.config | ({"mask0": tr.mask0} if tr.mask0 != "zero" else {}))
    return TransferCell(
        key=key, id="-".join(["transfer", *ids, key]),
        title=" ".join(["transfer", *source.draft.titles[1:], *draft.titles]),
        short=" ".join(ids[1:]), config=config,
        info={**draft.info, "own_ticket_init": tr.own_ticket_init if own else None,
              "own_of_itself": is_own_of_itself(source, draft)},
        networks=1 + len(baselines) + (1 if own else 0),
        transfer=spec, source=source.id, own_ticket=own.id if own else None,
        shared=[f"{own.key}|{transfer_values}"] if own else [],
    )


def _stability_rounds(study: Study, source: SearchCell) -> list[int]:
    """The rounds `stability.rounds` names ('all': 0..last, the dense network included)."""
    st = study.spec.stability
    assert st is not None
    last = source.find.prune.rounds
    if st.rounds == "all":
        return list(range(last + 1))
    too_far = [r for r in st.rounds if r > last]
    if too_far:
        raise study.error(("stability", "rounds"),
                          f"round {too_far[0]} is past the last round of the search ({last} rounds for {source.find.model})")
    return list(st.rounds)


def _stability_cell(study: Study, source: SearchCell, round_: int) -> StabilityCell:
    st = study.spec.stability
    assert st is not None and source.draft is not None
    train = source.find.train  # the ticket's own recipe, as `ticketx stability` uses by default
    seeds = (st.seeds[0], st.seeds[1])
    # Keyed by what the two copies and the path depend on: the ticket (its search's key), the
    # round, the seeds, the path's resolution, the recipe. Not part of any transfer cell's key.
    config = {"kind": "stability", "source": source.key, "round": round_, "seeds": list(seeds), "points": st.points,
              "train": train.model_dump(), "deterministic": study.spec.deterministic}
    key = store.fingerprint(config)
    ids = _transfer_ids(source)
    return StabilityCell(
        key=key, id="-".join(["stability", *ids, f"r{round_}", key]),
        title=" ".join(["stability", *source.draft.titles[1:], f"round {round_}"]),
        short=" ".join(["stability", *ids[1:], f"r{round_}"]), config=config,
        info={**source.draft.info, "rewind": source.find.prune.rewind, "round": round_, "seeds": list(seeds),
              "points": st.points},
        networks=2, train=train, round=round_, seeds=seeds, points=st.points, source=source.id,
    )


@functools.lru_cache(maxsize=1024)  # one per data set and recipe, not one per cell (a grid has up to millions)
def training_steps(data: str, batch_size: int, length: str, val_split: float = 0.0) -> Optional[tuple[int, int, int]]:
    """(steps, batch, steps per epoch) of one network's training, as the trainer counts them (`train.Steps`:
    whole batches), from the data set's registered training-split size; a class subset is taken as its
    share of the classes (the registered sets are balanced to within a few per cent). None: the size is
    not known before loading (an image folder)."""
    from ticketx.data import DATASETS, parse_data
    from ticketx.steps import to_iterations

    try:
        d = parse_data(data)
    except Exception:  # noqa: BLE001 - reported when the data set is loaded for real
        return None
    info = DATASETS.get(d.base)
    if info is None or not info.train_images:
        return None
    n = info.train_images * (len(d.classes) / info.num_classes if d.classes is not None else 1.0)
    n = max(1, int(round(n * (1 - val_split))))
    batch = min(batch_size, n)
    ipe = max(1, n // batch)
    return max(1, to_iterations(length, ipe)), batch, ipe


def images_to_train(cells: list[Cell]) -> dict[str, Any]:
    """What a study costs before it runs: the images its networks train on (steps x batch; a search's
    rounds after the first retrain from the rewind point), in all and by kind, and the data sets whose
    size is only known once loaded. Evaluation passes (the test set every `eval_every`) and stability
    cells' two copies and paths are extra."""
    from ticketx.steps import to_iterations

    out: dict[str, Any] = {"images": 0, "by_kind": {}, "unknown": []}
    for c in cells:
        images: Optional[int] = None
        if isinstance(c, SearchCell):
            t, data = c.find.train, c.find.data
            steps = training_steps(data, t.batch_size, t.length, t.val_split)
            if steps is not None:
                total, batch, ipe = steps
                rewind = to_iterations(c.find.prune.rewind, ipe)
                images = batch * (total + c.find.prune.rounds * max(0, total - rewind))
        elif isinstance(c, TransferCell):
            t, data = c.transfer.train, c.transfer.target
            steps = None if t is None else training_steps(data, t.batch_size, t.length, t.val_split)
            if steps is not None:
                images = steps[0] * steps[1] * c.networks
        else:
            continue
        if images is None:
            if data not in out["unknown"]:
                out["unknown"].append(data)
            continue
        out["images"] += images
        out["by_kind"][c.kind] = out["by_kind"].get(c.kind, 0) + images
    return out


def count(cells: list[Cell]) -> dict[str, int]:
    """Cells by kind and networks to train (a network shared by cells counted once).

    'stability' appears only in a study with a `stability:` block (the counts of studies without
    one, recorded in study.json and printed by `study validate`, stay as they were)."""
    out = {"search": 0, "transfer": 0, "networks": 0}
    for c in cells:
        out[c.kind] = out.get(c.kind, 0) + 1
        out["networks"] += c.networks
    return out
