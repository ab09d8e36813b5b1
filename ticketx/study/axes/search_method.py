"""The search-method axis (`search.method: [imp, edge-popup, bernoulli]`): tickets found by iterative
magnitude pruning (`imp`, Frankle & Carbin 2019: the default, whose cells are those of before) or
supermasks learned over frozen weights (ticketx.supermask: `bernoulli`, Zhou, Lan, Liu & Yosinski
2019; `edge-popup`, Ramanujan et al. 2020), transferred with the usual arms.

A supermask ticket is learned at the densities of the cell's IMP schedule (`search.prune`: its
rounds, rates, head rate, scope), one round per IMP round, so IMP and supermask tickets of a study
are compared at the same densities. Its own settings are the `search.supermask` block:

    search:
      method: [imp, edge-popup]
      supermask:
        weights: [init, signed-constant]   # what the mask is learned over (a list multiplies the cells)
        profile: imp                       # per-layer counts: imp (the IMP ticket's) or uniform
        length: 20ep                       # score training per density
        lr: null                           # Adam on the scores (default: the method's)
        batch_size: 60

`profile: imp` (the default here) gives every layer exactly the count the layerwise IMP schedule
gives it at that round (so a supermask ticket and the IMP ticket of the same cell differ only in
which weights, never in how many per layer); `uniform` keeps every layer at the round's
whole-network density (Ramanujan et al.'s k% per layer; `ticketx supermask`'s default).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, Field

from ticketx.errors import UsageError
from ticketx.settings.base import Strict, as_list
from ticketx.settings.search import SupermaskSpec
from ticketx.settings.train import step_value
from ticketx.study.axes.base import Axis, Draft, axis

IMP = "imp"


def _known(v: Optional[list[str]]) -> Optional[list[str]]:
    from ticketx.supermask import METHODS

    if v is None:
        return v
    if not v:
        raise ValueError("no cells: give at least one search method (imp, edge-popup, bernoulli)")
    try:
        return [IMP if m == IMP else METHODS.check([m])[0] for m in dict.fromkeys(v)]
    except UsageError as err:
        raise ValueError(f"{err} (or imp: iterative magnitude pruning)") from None


Methods = Annotated[Optional[list[str]], BeforeValidator(as_list), AfterValidator(_known)]


def _distinct(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("no cells: give at least one value")
    return list(dict.fromkeys(v))


class SupermaskBlock(Strict):
    """`search.supermask`: how the supermask methods of `search.method` learn their masks."""

    weights: Annotated[list[Literal["init", "signed-constant"]], BeforeValidator(as_list),
                       AfterValidator(_distinct)] = Field(default_factory=lambda: ["init"])
    profile: Annotated[list[Literal["uniform", "imp"]], BeforeValidator(as_list),
                       AfterValidator(_distinct)] = Field(default_factory=lambda: ["imp"])
    length: Annotated[str, BeforeValidator(step_value)] = "20ep"
    lr: Optional[float] = Field(None, gt=0)
    batch_size: int = Field(60, ge=1, le=1 << 20)



@axis
class SearchMethod(Axis):
    name = "search_method"
    phase = "search"
    columns = ("search_method", "supermask_weights", "supermask_profile")
    header = "found by"
    claim_key = "search_methods"
    fields = {"search": {"method": (Methods, None), "supermask": (Optional[SupermaskBlock], None)}}

    def check(self, study: Any) -> None:
        spec = study.spec
        methods = spec.search.method or [IMP]
        masks = [m for m in methods if m != IMP]
        if spec.search.supermask is not None and not masks:
            raise study.error(("search", "supermask"), "no supermask method in search.method (edge-popup, bernoulli): "
                                                       "these settings would change nothing")
        if not masks:
            return
        block = spec.search.supermask or SupermaskBlock()
        if "imp" in block.profile and spec.search.prune.scope == "global":
            where = ("search", "supermask", "profile") if spec.search.supermask is not None else ("search", "method")
            raise study.error(where, "the imp profile gives each layer the layerwise IMP schedule's count, and "
                                     "search.prune.scope is global; use profile: uniform")
        if spec.transfer.mask0 == "zhou":
            raise study.error(("transfer", "mask0"), "zhou needs each pruned weight's movement in training, and a "
                                                     "supermask ticket trains no weight: use zero or frozen")
        noisy = {("search", "label_noise"): any(spec.search.label_noise or []),
                 ("search", "train", "label_noise"): bool(spec.search.train.label_noise),
                 ("train", "label_noise"): bool(spec.train.label_noise)}
        if any(noisy.values()):
            where = next(k for k, v in noisy.items() if v)
            raise study.error(where, "supermask tickets are learned on clean labels: search with label noise and "
                                     "supermask methods cannot be crossed")

    def values(self, draft: Draft) -> list[Any]:
        search = draft.study.spec.search
        block = search.supermask or SupermaskBlock()
        out: list[Any] = []
        for m in search.method or [IMP]:
            if m == IMP:
                out.append((IMP, None, None))
            else:
                out += [(m, w, p) for w in block.weights for p in block.profile]
        return out

    def apply(self, value: Any, draft: Draft) -> None:
        method, weights, profile = value
        draft.info.update(search_method=method, supermask_weights=weights or "", supermask_profile=profile or "")
        if method == IMP:  # the cells of before: nothing changes
            return
        block = draft.study.spec.search.supermask or SupermaskBlock()
        draft.spec["supermask"] = SupermaskSpec(method=method, weights=weights, profile=profile, length=block.length,
                                                lr=block.lr, batch_size=block.batch_size)
        draft.ids.append((self.name, f"{method}-{'sc' if weights == 'signed-constant' else weights}-{profile}"))
        draft.titles.append(self.describe(value))

    def text(self, value: Any) -> str:
        if isinstance(value, tuple):
            method, weights, profile = value
            return method if method == IMP else f"{method} over {weights} ({profile} profile)"
        return "" if value is None else str(value)

    def canonical(self, value: Any) -> str:
        return str(value[0] if isinstance(value, tuple) else value)

    def selects(self, wanted: tuple[Any, ...], info: dict[str, Any]) -> bool:
        return str(info.get("search_method") or IMP) in wanted  # a cell recorded before the axis: an IMP ticket

    def label_part(self, value: Any) -> str:
        return "" if self.canonical(value) == IMP else self.text(value)  # the lottery ticket goes without saying

    def phrase(self, value: Any) -> str:
        return self.label_part(value) and f"supermask {self.text(value)}"

    def describe(self, value: Any) -> str:
        return "by imp" if self.canonical(value) == IMP else f"supermask {self.text(value)}"
