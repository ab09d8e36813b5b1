"""Claims resolved against what a study produces: which cells (and rounds) each `expect:` item covers.

A claim is checked with the rest of the file, before anything trains: the arm must be one the
study trains, every filter (`sources:`, `targets:`, any axis's `claim_key`) must name values the
study has, and `rounds` / `min_density` / `max_density` must select at least one comparison.
Densities are the ones the tables print (whole network, with the target's output layer),
computed from the tensor shapes before anything trains (`round_densities`). Judging the claims
on results is `ticketx.study.expect`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Optional

from ticketx.errors import did_you_mean
from ticketx.settings.search import SearchSpec
from ticketx.settings.study import Study
from ticketx.settings.yamlfile import Path_, line_of
from ticketx.study.axes import AXES, Axis
from ticketx.study.axes.point import model_sizes, round_weights
from ticketx.ticket import nearest_count
from ticketx.study.cells import SearchCell, TransferCell


@dataclass(frozen=True)
class Claim:
    """A validated claim: its kind, arm and threshold, and the comparisons it covers.

    `covers`: (cell id, round) pairs; the round is None for a transfer cell at a density point
    (its round is the one the ticket has closest to that density). `densities`: the densities of
    the covered comparisons (for messages); `filters`: claim key -> the values it selects.
    """

    name: str
    kind: str
    arm: Optional[str]  # beats / matches: the baseline or 'own-ticket'
    threshold: float  # beats: margin; matches: tolerance; search_accuracy: the least accuracy
    filters: dict[str, tuple[str, ...]]
    covers: frozenset[tuple[str, Optional[int]]]
    densities: tuple[float, ...]
    where: str  # 'file:line' of the claim, for reports

    @property
    def rounds(self) -> list[int]:
        return sorted({r for _, r in self.covers if r is not None})


def round_densities(study: Study, find: SearchSpec, target: Optional[str] = None) -> list[float]:
    """The whole-network density of every round 0..rounds, before anything trains: of the search `find`,
    or (with `target`) of its transfer there, whose output layer is rebuilt for the target's classes
    (dense with transfer.head_dense, else at the ticket's output-layer density).

    Exact-k pruning removes round(rate x remaining) weights per group whatever the weights are,
    so the counts follow from the tensor shapes alone (the model built on the meta device); a
    global group's share of the output layer is taken as the group's. Falls back to the body's
    (1 - rate)^r when the model cannot be built here (an image folder's classes are only known
    once it is scanned).
    """
    from ticketx.pruning import groups as pruning_groups
    from ticketx.pruning import num_to_prune

    prune = find.prune
    nominal = [(1 - prune.rate) ** r for r in range(prune.rounds + 1)]
    shapes = model_sizes(study, find, find.data)
    out_head = model_sizes(study, find, target) if target is not None else shapes
    if shapes is None or out_head is None:
        return nominal
    sizes, names, head, kinds = shapes
    new_head = out_head[0][head]
    groups = pruning_groups(names, prune.scope, head, prune.head_rate, prune.rate, set(prune.keep_dense or ()),
                            prune.rates, kinds)
    remaining = [sum(sizes[n] for n in g) for g, _ in groups]
    grouped = {n for g, _ in groups for n in g}
    fixed = sum(v for n, v in sizes.items() if n not in grouped and n != head)  # kept dense: never pruned
    total = sum(sizes.values()) - sizes[head] + new_head
    out = [1.0]
    for _ in range(prune.rounds):
        remaining = [left - num_to_prune(left, rate) for left, (_, rate) in zip(remaining, groups)]
        kept = fixed
        for (g, _), start, left in zip(groups, [sum(sizes[n] for n in g) for g, _ in groups], remaining):
            frac = left / start if start else 1.0
            body = sum(sizes[n] for n in g if n != head)
            kept += frac * body
            if head in g:
                kept += new_head if (target is not None and study.spec.transfer.head_dense) else round(frac * new_head)
        if head not in grouped:
            kept += new_head
        out.append(kept / total)
    return out


def _pick(study: Study, path: Path_, axis: Axis, names: list[Any], produced: list[str]) -> tuple[str, ...]:
    """Canonical values of `names`, each one the study produces (else a 'did you mean' error)."""
    out = []
    for j, name in enumerate(names):
        canon = axis.canonical(name)
        if canon not in produced:
            close = difflib.get_close_matches(canon, produced, n=1, cutoff=0.5)
            what = axis.name
            raise study.error(path + (j,), f"{name!r} is not a {what} of this study"
                              + (f"; did you mean {close[0]!r}?" if close else "") + f" (the study's {axis.claim_key}: {', '.join(produced)})")
        out.append(canon)
    return tuple(dict.fromkeys(out))


def _points(study: Study, cell: Any, searches: dict[str, SearchCell], search: bool,
            known: dict[tuple[str, Optional[str]], list[float]]) -> list[tuple[tuple[str, Any], float, Optional[int]]]:
    """A cell's comparisons: ((what, value), density, round or None), before anything trains.

    `known`: the densities computed so far, by (search cell id, target): building the model once
    per ticket and target, not once per cell (a cell per seed of 10k seeds built 10k models: 100 s).
    """
    if search:
        dens = known.get((cell.id, None)) or known.setdefault((cell.id, None), round_densities(study, cell.find))
        return [(("round", r), dens[r], r) for r in range(cell.find.prune.rounds + 1)]
    point = ("round", cell.info["round"]) if "round" in cell.info else ("density", cell.info["density"]) \
        if "density" in cell.info else ("weights", cell.transfer.weights)
    if point[0] == "density":
        return [(point, point[1], None)]
    at = (cell.source, cell.transfer.target)
    dens = known.get(at) or known.setdefault(at, round_densities(study, searches[cell.source].find, cell.transfer.target))
    if point[0] == "weights":  # the round the ticket will have nearest that count, from the shapes
        find = searches[cell.source].find
        kept = known.get((cell.source, "weights")) or known.setdefault((cell.source, "weights"),
                                                                         round_weights(study, find) or [])
        r = nearest_count([int(k) for k in kept], point[1]) if kept else find.prune.rounds
        return [(point, dens[r], None)]  # judged at the round the ticket picked (its result.json)
    return [(point, dens[point[1]], point[1])]


def resolve_claims(study: Study) -> list[Claim]:
    """Each `expect:` item checked against the expanded cells: the arms, values, rounds and densities it
    refers to must be ones the study produces (an error before anything trains)."""
    from ticketx.baselines import BASELINES
    from ticketx.stats import MATCH_TOLERANCE

    spec = study.spec
    claims: list[Claim] = []
    seen: dict[str, int] = {}
    arms = [*spec.transfer.baselines, *(["own-ticket"] if spec.transfer.own_ticket else [])]
    searches = {c.id: c for c in study.cells if isinstance(c, SearchCell)}
    transfers = [c for c in study.cells if isinstance(c, TransferCell)]
    sources = [c for c in searches.values() if c.info["role"] == "source"]
    keyed = [a for a in AXES.values() if a.claim_key]
    known: dict[tuple[str, Optional[str]], list[float]] = {}
    for i, c in enumerate(spec.expect):
        at = ("expect", i)
        if c.name in seen:
            raise study.error(at + ("name",), f"claim name {c.name!r} is used twice (also expect[{seen[c.name]}]); names identify claims in reports")
        seen[c.name] = i
        kind = c.kind
        search = kind == "search_accuracy"
        arm = getattr(c, kind) if kind in ("beats", "matches") else None
        if arm is not None and arm not in arms:
            if arm in BASELINES or arm == "own-ticket":
                why = "transfer.own_ticket is false" if arm == "own-ticket" else "it is not in transfer.baselines"
                raise study.error(at + (kind,), f"the study does not train {arm!r} ({why}; it trains: {', '.join(arms)})")
            raise study.error(at + (kind,), did_you_mean(arm, arms, "arm").replace("choose from", "the study trains"))
        candidates: list[Any] = sources if search else transfers
        filters: dict[str, tuple[str, ...]] = {}
        for a in keyed:
            given = getattr(c, a.claim_key)
            if given is None:
                continue
            if search and a.phase == "transfer":
                raise study.error(at + (a.claim_key,), f"a search has no {a.name}: select searches with "
                                  + ", ".join(b.claim_key for b in keyed if b.phase == "search") + " and rounds")
            produced = list(dict.fromkeys(str(x.info[a.columns[0]]) for x in candidates))
            filters[a.claim_key] = _pick(study, at + (a.claim_key,), a, given, produced)
            candidates = [x for x in candidates if a.selects(filters[a.claim_key], x.info)]
        if not candidates:
            raise study.error(at, "no comparison of the study matches all of the claim's filters ("
                              + ", ".join(f"{k}: {', '.join(v)}" for k, v in filters.items()) + ")")
        points = {x.id: _points(study, x, searches, search, known) for x in candidates}
        if search:
            wanted = c.rounds if c.rounds is not None else ([0] if c.min_density is None and c.max_density is None else None)
        else:
            wanted = c.rounds
        weights = None if search else c.weights
        if search and c.weights is not None:
            raise study.error(at + ("weights",), "a search has no weights points: select its rounds")
        if weights is not None:
            have_w = sorted({p[1] for ps in points.values() for p, _, _ in ps if p[0] == "weights"})
            missing = [w for w in weights if w not in have_w]
            if missing:
                raise study.error(at + ("weights",), f"{missing[0]} weights is not a point the study transfers at "
                                  f"(transfer.weights: {', '.join(map(str, have_w)) or 'none'})")
        if wanted is not None:
            if any(p[0] == "density" for ps in points.values() for p, _, _ in ps):
                raise study.error(at + ("rounds",), "the study transfers at densities (transfer.densities): select with min_density / max_density")
            have = sorted({p[1] for ps in points.values() for p, _, _ in ps if p[0] == "round"})
            missing = [r for r in wanted if r not in have]
            if missing:
                raise study.error(at + ("rounds",), f"round {missing[0]} is not one the study "
                                  f"{'searches' if search else 'transfers'} (rounds: {', '.join(map(str, have))})")
        if wanted is not None or weights is not None:  # either kind of point, as the claim names them
            points = {k: [x for x in ps if (wanted is not None and x[0][0] == "round" and x[0][1] in wanted)
                          or (weights is not None and x[0][0] == "weights" and x[0][1] in weights)]
                      for k, ps in points.items()}
        lo, hi = c.min_density, c.max_density
        picked = {k: [x for x in ps if (lo is None or x[1] >= lo * (1 - 1e-9)) and (hi is None or x[1] <= hi * (1 + 1e-9))]
                  for k, ps in points.items()}
        covers = frozenset((k, r) for k, ps in picked.items() for _, _, r in ps)
        if not covers:
            bounds = " and ".join(x for x in (f">= {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else "") if x)
            first = next(iter(candidates), None)
            listed = ", ".join(dict.fromkeys(f"{p[0]} {p[1]:g}: {d:.4g}" for ps in points.values() for p, d, _ in ps))
            model = first.find.model if isinstance(first, SearchCell) else searches[first.source].find.model if first else "?"
            raise study.error(at + ("max_density" if hi is not None else "min_density",),
                              f"no density of the study is {bounds} for {model} ({listed})")
        threshold = (c.by if kind == "beats" else (c.within if c.within is not None else MATCH_TOLERANCE)
                     if kind == "matches" else float(c.search_accuracy))  # type: ignore[arg-type]
        densities = tuple(sorted({d for ps in picked.values() for _, d, _ in ps}, reverse=True))
        claims.append(Claim(c.name, kind, arm, threshold, filters, covers, densities, f"{study.file}:{line_of(study.lines, at)}"))
    return claims

