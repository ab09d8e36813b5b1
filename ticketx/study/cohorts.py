"""Cohorts of cells: which cells of a study one worker claims and trains together (`cohort:` above 1).

With `cohort: 1` (the default) every cell is its own group and trains exactly as before. Above
1, cells whose networks can share one call to the trainer are grouped, by the study file alone
(and, for `auto`, the device kind), never by worker timing, so a rerun forms the same groups:

- search cells that differ only in their seeds (`ticketx.search.lockstep_key`: the same source,
  model, optimizer, prune settings, width, noise, ...) run in lockstep, round r of every search
  in one cohort (`ticketx.search.find_many`); a group holds up to the cohort size of searches
  (one network each per round);
- transfer cells of one ticket, one own ticket and the same values of every transfer axis
  except the replication and point ones (transfer seeds, rounds or densities), so they share a
  recipe and wait on the same searches; a group holds up to the cohort size in networks (a cell's
  arms counted), in expansion order. A cell with more networks than that is a group of its own;
- stability cells of one ticket (its rounds; the same recipe, the ticket's own): up to the cohort
  size in networks (two copies per pair of seeds).

Groups are consecutive in expansion order among the cells of one key: as few as filling each to
the cohort size gives, evened out (`balanced`: 14/16/4 networks become 12/12/10). The
size of `auto` is `ticketx.cohort.AUTO` for the device kind and the model's kind (a fixed table).
"""

from __future__ import annotations

from ticketx.settings.study import Study
from ticketx.study.axes import transfer_axes
from ticketx.study.cells import Cell, SearchCell, StabilityCell, TransferCell

# Roles of the axes whose values a group of transfer cells may span: repeated measures and the point.
SPANNED = ("retrain", "x")


def network_kind(model: str) -> str:
    """'conv' or 'mlp' (`ticketx.cohort.network_kind`) of registered model `model`, built on the meta device."""
    import torch

    from ticketx.cohort import network_kind as kind
    from ticketx.models import build_model, model_info

    with torch.device("meta"):  # shapes only: no memory, no random numbers drawn
        return kind(build_model(model, 10, model_info(model).channels))


def size(setting: int | str, device_type: str, model: str) -> int:
    """Networks one group may train at once under `cohort:` `setting` (an int, or 'auto': `ticketx.cohort.AUTO`)."""
    from ticketx.cohort import AUTO

    if setting != "auto":
        return int(setting)
    return AUTO.get((device_type, network_kind(model)), 1)


def batch_key(cell: Cell) -> str | None:
    """The key cells must share to be grouped (None: the cell is never grouped)."""
    from ticketx import store
    from ticketx.search import lockstep_key

    if isinstance(cell, SearchCell):
        if cell.find.supermask is not None:  # learned by ticketx.supermask, one network at a time
            return None
        return "search:" + lockstep_key(cell.find)
    if isinstance(cell, TransferCell):
        values = {c: cell.info.get(c) for a in transfer_axes() if a.role not in SPANNED for c in a.columns}
        return "transfer:" + store.fingerprint([cell.source, cell.own_ticket, values])
    if isinstance(cell, StabilityCell):
        return "stability:" + store.fingerprint([cell.source, cell.train.model_dump()])
    return None


def _model(cell: Cell, by_id: dict[str, Cell]) -> str:
    """The registered model a cell trains (a transfer cell: its ticket's)."""
    if isinstance(cell, SearchCell):
        return cell.find.model
    assert isinstance(cell, (TransferCell, StabilityCell))
    source = by_id[cell.source]
    assert isinstance(source, SearchCell)
    return source.find.model


def _width(cell: Cell) -> int:
    """Networks a cell trains at once: a search one per round, a stability cell its copies, a transfer
    cell all of its arms."""
    if isinstance(cell, SearchCell):
        return 1
    if isinstance(cell, StabilityCell):
        return len(cell.seeds)
    return max(1, cell.networks)


def _next_fit(widths: list[int], limit: int) -> list[list[int]]:
    """Consecutive chunks of positions in `widths`: a chunk closes when the next one would pass `limit`
    (a position wider than `limit` is a chunk of its own)."""
    chunks: list[list[int]] = []
    used = 0
    for i, w in enumerate(widths):
        if not chunks or used + w > limit:
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += w
    return chunks


def balanced(widths: list[int], limit: int) -> list[list[int]]:
    """As few consecutive chunks as filling each up to `limit` gives, with the largest chunk as small as
    possible: networks 14/16/4 under 16 become 12/12/10, so no group is left a small remainder (a small
    cohort amortises less per step) and workers get equal shares. Deterministic: widths and limit only."""
    fewest = len(_next_fit(widths, limit))
    hi = max(limit, 1)
    lo = min(hi, max(1, -(-sum(widths) // fewest)))  # cells wider than the limit can lift the mean past it
    while lo < hi:  # the chunk count of next fit never grows with the limit: bisect for the smallest that keeps it
        mid = (lo + hi) // 2
        if len(_next_fit(widths, mid)) <= fewest:
            hi = mid
        else:
            lo = mid + 1
    return _next_fit(widths, lo)


def groups(study: Study, device_type: str) -> dict[str, tuple[str, ...]]:
    """Each cell's group (the ids of its cells, in study order; one id: trained alone)."""
    cells = study.cells
    setting = study.spec.cohort
    if setting == 1:
        return {c.id: (c.id,) for c in cells}
    by_id = {c.id: c for c in cells}
    sizes: dict[str, int] = {}
    out: dict[str, tuple[str, ...]] = {}
    by_key: dict[str, list[Cell]] = {}
    for c in cells:
        key = batch_key(c)
        if key is None:
            out[c.id] = (c.id,)
        else:
            by_key.setdefault(key, []).append(c)
    for members in by_key.values():
        model = _model(members[0], by_id)  # one key, one model
        limit = sizes.setdefault(model, size(setting, device_type, model))
        for chunk in balanced([_width(c) for c in members], limit):
            ids = tuple(members[i].id for i in chunk)
            for cid in ids:
                out[cid] = ids
    return out
