"""The point axis (`transfer.rounds: all | [1, 3]` or `transfer.densities: [0.2, 0.05]`): which
rounds of each ticket are transferred (default: every pruned round). The x axis of every plot."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import AfterValidator, BeforeValidator
from typing import Annotated

from ticketx.settings.base import comma_list, round_list
from ticketx.study.axes.base import Axis, Draft, axis


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


def points(study: Any, model: str, prune: Any) -> list[tuple[str, Any]]:
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


@axis
class Point(Axis):
    name = "point"
    phase = "transfer"
    role = "x"  # the x axis of every plot: rounds or densities
    fields = {"transfer": {"rounds": (Rounds, None), "densities": (Densities, None)}}

    def check(self, study: Any) -> None:
        tr = study.spec.transfer
        if tr.rounds is not None and tr.densities is not None:
            raise study.error(("transfer", "densities"), "give either rounds or densities, not both")

    def values(self, draft: Draft) -> list[Any]:
        return points(draft.study, draft.values["model"], draft.source.find.prune)

    def apply(self, value: Any, draft: Draft) -> None:
        what, v = value
        draft.spec.update(rounds=[v] if what == "round" else None, density=v if what == "density" else None)
        draft.config[what] = v
        draft.info[what] = v
        draft.ids.append((self.name, f"r{v}" if what == "round" else f"d{v:g}"))
        draft.titles.append(f"{what} {v:g}")

    def row(self, info: dict[str, Any]) -> dict[str, Any]:
        return {}  # results rows carry each network's own round and density
