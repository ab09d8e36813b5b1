"""Mask criteria for iterative pruning: which weights a round keeps (Zhou et al., NeurIPS 2019).

Zhou, Lan, Liu & Yosinski 2019, "Deconstructing lottery tickets: zeros, signs, and the
supermask", §2 and Fig. 2, score each weight from its value when a round starts training (w_i)
and when it ends (w_f); the highest scores are kept. Each criterion here is one pure function
`(w_init, w_final, generator) -> scores` of one tensor, registered by name with `@criterion`,
and `prune_round` turns scores into the next round's mask with `pruning.prune` (exact-k, ties
by position, pruned weights never come back).

What w_i is under rewinding: Zhou et al. rewind to the original initialisation, so their w_i is
θ_0. With late resetting (rewind to step k > 0) every round r >= 1 starts training from the
rewind weights θ_k, so ticketx passes θ_k as w_i: it is the state the pruned network actually
restarts from, `movement` and `magnitude_increase` then measure what training after the rewind
point did, the ticket file stores exactly these weights, and with `--rewind 0` it is Zhou et
al.'s θ_0. (Round 0 trains from θ_0; its final weights are still compared with θ_k.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import torch

from ticketx.registry import Registry

from ticketx import pruning
from ticketx.errors import UsageError
from ticketx.masks import Mask


class ScoreFn(Protocol):
    def __call__(self, w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Criterion:
    """A registered mask criterion: higher score = keep."""

    name: str
    score: ScoreFn
    formula: str
    source: str

    def __call__(self, w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.score(w_init, w_final, generator)


CRITERIA: Registry[Criterion] = Registry("criterion")
DEFAULT = "magnitude"


def criterion(name: str, formula: str, source: str = "Zhou et al. 2019, Fig. 2") -> Callable[[ScoreFn], ScoreFn]:
    """Register a scoring function under `name` (grep for `@criterion(` to list them all)."""

    def deco(fn: ScoreFn) -> ScoreFn:
        CRITERIA.add(name, Criterion(name, fn, formula, source))
        return fn

    return deco


def get(name: str) -> Criterion:
    """The criterion called `name`; an unknown name is a UsageError with a suggestion."""
    return CRITERIA[name]


def _check(w_init: torch.Tensor, w_final: torch.Tensor) -> None:
    if w_init.shape != w_final.shape:
        raise ValueError(f"initial and final weights differ in shape: {tuple(w_init.shape)} vs {tuple(w_final.shape)}")


@criterion("magnitude", "|w_f|", "Frankle & Carbin 2019; 'large final' in Zhou et al. 2019")
def magnitude(w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep the weights largest at the end of training (the LTH default)."""
    _check(w_init, w_final)
    return w_final.detach().abs()


@criterion("large_init", "|w_i|")
def large_init(w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep the weights largest when the round starts (training plays no part)."""
    _check(w_init, w_final)
    return w_init.detach().abs()


def quantile_ranks(x: torch.Tensor) -> torch.Tensor:
    """Rank of each entry of x among all of x, scaled to (0, 1]: smallest = 1/n, largest = 1.

    Stable sort: equal values rank by position, so the result is deterministic.
    """
    flat = x.detach().reshape(-1)
    order = torch.sort(flat.to(torch.float64), stable=True).indices
    ranks = torch.empty(flat.numel(), dtype=torch.float64, device=flat.device)
    ranks[order] = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    return (ranks / max(1, flat.numel())).reshape(x.shape)


@criterion("large_init_large_final", "min(rank |w_i|, rank |w_f|)")
def large_init_large_final(w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep weights large both at the start and at the end of the round.

    Zhou et al. keep a weight when it lies above one common percentile threshold p in both |w_i|
    and |w_f| of its layer, with p searched so the layer reaches its target count (their code:
    `bsearch_quadrant_threshold`; the paper writes min(α|w_i|, |w_f|)). A weight survives
    threshold p exactly when min(its percentile in |w_i|, its percentile in |w_f|) > p, so that
    minimum is the score, and exact-k pruning on it is their rule without the search. The
    percentiles are within the tensor, so under `--scope global` this criterion prunes every
    layer by about the same fraction (Zhou et al. prune layerwise).
    """
    _check(w_init, w_final)
    return torch.minimum(quantile_ranks(w_init.abs()), quantile_ranks(w_final.abs()))


@criterion("magnitude_increase", "|w_f| - |w_i|")
def magnitude_increase(w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep the weights whose magnitude grew most during training."""
    _check(w_init, w_final)
    return w_final.detach().abs() - w_init.detach().abs()


@criterion("movement", "|w_f - w_i|")
def movement(w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep the weights that moved most during training, in either direction."""
    _check(w_init, w_final)
    return (w_final.detach() - w_init.detach()).abs()


@criterion("random", "uniform(0, 1)", "Frankle & Carbin 2019 (random pruning control); Zhou et al. 2019")
def random(w_init: torch.Tensor, w_final: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent uniform scores: random pruning at the same rates (draws from `generator`)."""
    _check(w_init, w_final)
    if generator is None:
        raise ValueError("the 'random' criterion needs a generator (derive it from the search's seed)")
    return torch.rand(w_final.shape, generator=generator, dtype=torch.float64)


def scores(
    name: str | Criterion,
    w_init: Mapping[str, torch.Tensor],
    w_final: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per-tensor scores of the masked tensors, on the CPU.

    Weights already pruned are zeroed in both w_i and w_f first: they cannot come back, and
    rank-based criteria must rank the surviving weights among themselves (as Zhou et al.'s code,
    which pushes pruned weights to the bottom before thresholding).
    """
    crit = get(name) if isinstance(name, str) else name
    out: dict[str, torch.Tensor] = {}
    for n in mask:  # mask order: random criteria draw in the same order every time
        m = mask[n].to("cpu", torch.bool)
        wi = w_init[n].detach().to("cpu") * m
        wf = w_final[n].detach().to("cpu") * m
        out[n] = crit(wi, wf, generator)
    return out


def prune_round(
    criterion: str | Criterion,
    w_init: Mapping[str, torch.Tensor],
    w_final: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    rate: float,
    *,
    scope: str = "global",
    head: str | None = None,
    head_rate: float | None = None,
    keep_dense: tuple[str, ...] | list[str] = (),
    generator: torch.Generator | None = None,
    rates: Mapping[str, float] | None = None,
) -> Mask:
    """The next round's mask: prune `rate` of the remaining weights with the lowest criterion scores.

    w_init are the weights the round started training from (the rewind weights, see the module
    docstring), w_final its trained weights. Same groups, rates and tie rule as
    `pruning.magnitude`; with criterion 'magnitude' the result is identical to it.
    """
    crit = get(criterion) if isinstance(criterion, str) else criterion
    s = scores(crit, w_init, w_final, mask, generator)
    return pruning.prune(s, mask, rate, scope=scope, head=head, head_rate=head_rate, keep_dense=keep_dense, rates=rates)
