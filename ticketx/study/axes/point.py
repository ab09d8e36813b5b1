"""The point axis (`transfer.rounds: all | [1, 3]` or `transfer.densities: [0.2, 0.05]`, and
`transfer.weights: [5000, 1500]`): which rounds of each ticket are transferred (default: every
pruned round). The x axis of every plot.

A weights point names a number of remaining prunable weights: each ticket is transferred at its
pruned round whose count is nearest (log scale), so tickets of different widths are compared at
equal size as well as at equal density (Frankle & Carbin 2019 plot against weights remaining).
It combines with rounds or densities; its cells carry the asked count (`at_weights`), each
network its actual count (`weights`) and density, and its comparisons are summarised apart
from the round points'."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import AfterValidator, BeforeValidator
from typing import Annotated

from ticketx.settings.base import comma_list, round_list
from ticketx.study.axes.base import Axis, Draft, axis
from ticketx.ticket import nearest_count


def _densities(v: Optional[list[float]]) -> Optional[list[float]]:
    if v is None:
        return v
    if not v:
        raise ValueError("no cells: give at least one density")
    bad = [d for d in v if not 0 < d <= 1]
    if bad:
        raise ValueError(f"a density is the fraction of weights kept, in (0, 1]; got {bad[0]}")
    return sorted(set(v), reverse=True)




Rounds = Annotated[Any, BeforeValidator(round_list)]
Densities = Annotated[Optional[list[float]], BeforeValidator(comma_list), AfterValidator(_densities)]


def _weights(v: Optional[list[Any]]) -> Optional[list[int]]:
    if v is None:
        return v
    if not v:
        raise ValueError("no cells: give at least one number of remaining weights")
    v = [int(w) if isinstance(w, str) and w.strip().isdigit() else w for w in v]  # '5000,1500' as one string
    bad = [w for w in v if isinstance(w, bool) or not isinstance(w, int) or w < 1]
    if bad:
        raise ValueError(f"a weights point is a whole number of remaining weights, at least 1; got {bad[0]!r}")
    return sorted(set(v), reverse=True)


Weights = Annotated[Optional[list[Any]], BeforeValidator(comma_list), AfterValidator(_weights)]


def round_weights(study: Any, find: Any) -> Optional[list[float]]:
    """The prunable weights every round 0..rounds of the search `find` keeps (its own output layer), before
    anything trains: what a ticket's `kept(r)` will be (exact-k pruning; `round_densities`). Falls back to
    None when the model cannot be built here."""
    from ticketx.pruning import groups as pruning_groups
    from ticketx.pruning import num_to_prune

    prune = find.prune
    shapes = model_sizes(study, find, find.data)
    if shapes is None:
        return None
    sizes, names, head, kinds = shapes
    groups = pruning_groups(names, prune.scope, head, prune.head_rate, prune.rate, set(prune.keep_dense or ()),
                            prune.rates, kinds)
    remaining = [sum(sizes[n] for n in g) for g, _ in groups]
    fixed = sum(sizes.values()) - sum(remaining)  # kept dense: never pruned
    out = [float(sum(sizes.values()))]
    for _ in range(prune.rounds):
        remaining = [left - num_to_prune(left, rate) for left, (_, rate) in zip(remaining, groups)]
        out.append(float(fixed + sum(remaining)))
    return out


def model_sizes(study: Any, find: Any, data: Optional[str]) -> Optional[tuple[dict[str, int], list[str], str, dict[str, str]]]:
    """(prunable tensor sizes, their names, the output layer's name, their layer kinds) of the search's model
    built for `data`."""
    import torch

    from ticketx.data import DATASETS, parse_data
    from ticketx.models import build_model, head_name, model_info, prunable_names
    from ticketx.pruning import kind_of

    try:
        d = parse_data(data)
        info = model_info(find.model)
        classes = len(d.classes) if d.classes is not None else DATASETS[d.base].num_classes
        channels = study.channels or (DATASETS[d.base].channels if d.base in DATASETS else info.channels)
        with torch.device("meta"):
            net = build_model(find.model, classes, channels, study.spec.image_size or info.image_size, width=find.width)
        names = prunable_names(net)
        params = dict(net.named_parameters())
        return ({n: params[n].numel() for n in names}, names, head_name(net), {n: kind_of(params[n].shape) for n in names})
    except Exception:  # noqa: BLE001 - reported when the model is built for real
        return None


_KEPT: dict[tuple[Any, ...], Optional[list[float]]] = {}


def _kept(study: Any, find: Any) -> Optional[list[float]]:
    """`round_weights`, built once per kind of ticket (model, data, width, prune settings)."""
    key = (study.spec.image_size, study.channels, find.model, find.data, find.width, repr(find.prune))
    if key not in _KEPT:
        _KEPT.clear() if len(_KEPT) > 256 else None
        _KEPT[key] = round_weights(study, find)
    return _KEPT[key]


def point_round(study: Any, find: Any, point: tuple[str, Any]) -> Optional[int]:
    """The round of the search `find`'s ticket a point transfers, known before anything trains: a round
    point's own, a weights point's nearest (from the shapes); None for a density point or a model that
    cannot be built here."""
    what, v = point
    if what == "round":
        return int(v)
    if what == "weights":
        kept = _kept(study, find)
        return nearest_count([int(k) for k in kept], v) if kept else None
    return None


def within(study: Any, find: Any, weights: int, ratio: float) -> bool:
    """Whether the search `find`'s ticket has a pruned round within `ratio` (either way) of `weights`
    remaining weights (from the shapes; True when the model cannot be built here: the run picks the nearest)."""
    kept = _kept(study, find)
    if not kept:
        return True
    got = kept[nearest_count([int(k) for k in kept], weights)]
    return max(got / weights, weights / max(got, 1)) <= ratio


def points(study: Any, model: str, prune: Any, find: Any = None) -> list[tuple[str, Any]]:
    """What to transfer: [('round', r), ...] or [('density', d), ...] (default: every pruned round; with
    `weights` alone, none), then [('weights', n), ...]."""
    tr = study.spec.transfer
    counts = [("weights", n) for n in tr.weights or []]
    if counts and prune.rounds < 1:
        raise study.error(("transfer", "weights"), f"a weights point picks a pruned round; the search of {model} has none")
    if counts and tr.weights_within is not None and find is not None:
        counts = [(w, n) for w, n in counts if within(study, find, n, tr.weights_within)]
    if tr.densities is not None:
        return [("density", d) for d in tr.densities] + counts
    if tr.rounds is None and counts:
        return counts
    if tr.rounds is None or tr.rounds == "all":
        return [("round", r) for r in range(1, prune.rounds + 1)] + counts
    too_far = [r for r in tr.rounds if r > prune.rounds]
    if too_far:
        raise study.error(("transfer", "rounds"),
                          f"round {too_far[0]} is past the last round of the search ({prune.rounds} rounds for {model})")
    return [("round", r) for r in tr.rounds] + counts


@axis
class Point(Axis):
    name = "point"
    phase = "transfer"
    role = "x"  # the x axis of every plot: rounds or densities
    columns = ("at_weights",)  # a weights point's asked count ('' at a round or density point)
    header = "at weights"
    # weights_within: a weights point is transferred only for tickets with a pruned round within this
    # factor of the count (1.5: 1,000-1,500 for 1,200); unset, every ticket at its nearest round
    fields = {"transfer": {"rounds": (Rounds, None), "densities": (Densities, None), "weights": (Weights, None),
                           "weights_within": (Optional[float], None)}}

    def check(self, study: Any) -> None:
        tr = study.spec.transfer
        if tr.rounds is not None and tr.densities is not None:
            raise study.error(("transfer", "densities"), "give either rounds or densities, not both")
        if tr.weights_within is not None and tr.weights is None:
            raise study.error(("transfer", "weights_within"), "weights_within goes with transfer.weights")
        if tr.weights_within is not None and not tr.weights_within >= 1:
            raise study.error(("transfer", "weights_within"), f"a factor of at least 1 (1.5: within 1.5x either way); got {tr.weights_within:g}")

    def values(self, draft: Draft) -> list[Any]:
        return points(draft.study, draft.values["model"], draft.source.find.prune, draft.source.find)

    def apply(self, value: Any, draft: Draft) -> None:
        what, v = value
        draft.spec.update(rounds=[v] if what == "round" else None, density=v if what == "density" else None,
                          weights=v if what == "weights" else None)
        draft.config[what] = v
        if what == "weights":
            draft.info["at_weights"] = v
            draft.ids.append((self.name, f"w{v}"))
            draft.titles.append(f"{v} weights")
            return
        draft.info[what] = v
        draft.ids.append((self.name, f"r{v}" if what == "round" else f"d{v:g}"))
        draft.titles.append(f"{what} {v:g}")

    def row(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"at_weights": info.get("at_weights", "")}  # results rows carry each network's own round and density


def transferred_round(draft: Draft) -> Optional[tuple[str, int, dict[str, Any]]]:
    """(the kind of point, the ticket round a transfer draft's point transfers, the draft's other axis
    values), known before anything trains; None where the round is not (a density point, a model that
    cannot be built here)."""
    point = draft.values.get(Point.name)
    r = None if point is None else point_round(draft.study, draft.source.find, point)
    if r is None:
        return None
    return point[0], r, {k: v for k, v in draft.values.items() if k != Point.name}
