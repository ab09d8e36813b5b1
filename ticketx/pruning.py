"""Pruning: pure functions (weights, mask, rates) -> new mask.

Magnitude pruning removes a fraction of the weights that are still *remaining* each round
(Frankle & Carbin 2019), either per layer ('layerwise') or with one threshold across all layers
('global'). Exactly k = round(rate * remaining) weights are removed per pruning group; ties in
magnitude are broken deterministically by position (lower flat index in the concatenation
goes first), so the same weights always give the same mask.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ticketx.errors import UsageError
from ticketx.masks import Mask

def num_to_prune(remaining: int, rate: float) -> int:
    """k for one pruning group: round(rate * remaining), never more than remaining."""
    return min(remaining, int(round(rate * remaining)))


def prune_lowest(scores: torch.Tensor, keep: torch.Tensor, k: int) -> torch.Tensor:
    """Return a copy of the flat bool `keep` with the k lowest-scoring kept entries removed.

    A stable sort on the kept scores breaks ties by position, so exactly k go and the choice is
    deterministic.
    """
    keep = keep.clone()
    if k <= 0:
        return keep
    idx = torch.nonzero(keep, as_tuple=False).reshape(-1)
    order = torch.sort(scores[idx].to(torch.float64), stable=True).indices
    keep[idx[order[:k]]] = False
    return keep


def kind_of(shape: torch.Size | tuple[int, ...]) -> str:
    """A prunable tensor's layer kind for per-kind rates: 'conv' (3+ dims) or 'linear' (2)."""
    return "conv" if len(shape) > 2 else "linear"


def rate_of(name: str, kind: str, rate: float, rates: Mapping[str, float] | None) -> float:
    """A tensor's rate: its own name in `rates`, else its kind ('conv', 'linear'), else `rate`."""
    rates = rates or {}
    return float(rates.get(name, rates.get(kind, rate)))


def groups(
    names: list[str], scope: str, head: str | None, head_rate: float | None, rate: float, keep_dense: set[str],
    rates: Mapping[str, float] | None = None, kinds: Mapping[str, str] | None = None,
) -> list[tuple[list[str], float]]:
    """Pruning groups as (tensor names, rate).

    Each tensor's rate is `rate_of` (per tensor name or layer kind, Frankle & Carbin 2019 prune
    Conv-2/4/6's conv layers slower than their fully-connected ones); the output layer's is
    `head_rate` when given. 'layerwise': one group per tensor. 'global': one threshold over the
    tensors that share a rate (one group per distinct rate, in the order they appear); the
    output layer has its own group when it has its own rate.
    """
    kinds = kinds or {}
    own = {n: rate_of(n, kinds.get(n, "linear"), rate, rates) for n in names}
    own_head = head is not None and head_rate is not None and head in names and head not in keep_dense
    body = [n for n in names if n not in keep_dense and not (own_head and n == head)]
    if scope == "layerwise":
        out = [([n], own[n]) for n in body]
    else:
        by_rate: dict[float, list[str]] = {}
        for n in body:
            by_rate.setdefault(own[n], []).append(n)
        out = [(g, r) for r, g in by_rate.items()]
    if own_head:
        out.append(([head], float(head_rate)))  # type: ignore[arg-type]
    return out


def schedule_counts(
    shapes: Mapping[str, tuple[int, ...]], rounds: int, rate: float, *, scope: str = "layerwise",
    head: str | None = None, head_rate: float | None = None, keep_dense: tuple[str, ...] | list[str] = (),
    rates: Mapping[str, float] | None = None,
) -> list[dict[tuple[str, ...], int]]:
    """The weights each pruning group keeps after rounds 0..rounds of iterative pruning, from shapes alone.

    The exact-k arithmetic of `prune` (round(rate x remaining) per group and round), without any
    weights: a group is a tuple of tensor names (one tensor each when 'layerwise'; a tensor in
    `keep_dense` is a group of its own that keeps everything), so every ticket found with these
    settings has exactly these counts, whatever its criterion.
    """
    names = list(shapes)
    kinds = {n: kind_of(s) for n, s in shapes.items()}
    size = {n: int(torch.Size(s).numel()) for n, s in shapes.items()}
    pruned = groups(names, scope, head, head_rate, rate, set(keep_dense), rates, kinds)
    kept = {tuple(g): sum(size[n] for n in g) for g, _ in pruned}
    kept.update({(n,): size[n] for n in names if n in set(keep_dense)})
    out = [dict(kept)]
    for _ in range(rounds):
        for g, r in pruned:
            kept[tuple(g)] -= num_to_prune(kept[tuple(g)], r)
        out.append(dict(kept))
    return out


def magnitude(
    weights: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    rate: float,
    *,
    scope: str = "global",
    head: str | None = None,
    head_rate: float | None = None,
    keep_dense: tuple[str, ...] | list[str] = (),
    rates: Mapping[str, float] | None = None,
) -> Mask:
    """Prune `rate` of the remaining weights with the smallest |w|; returns a new mask."""
    return prune({n: weights[n].abs() for n in mask}, mask, rate, scope=scope, head=head, head_rate=head_rate,
                 keep_dense=keep_dense, rates=rates)


def prune_random(
    weights: Mapping[str, torch.Tensor] | None,
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
    """Prune `rate` of the remaining weights uniformly at random (the random-pruning control)."""
    gen = generator or torch.Generator().manual_seed(0)
    return prune({n: torch.rand(mask[n].numel(), generator=gen) for n in mask}, mask, rate, scope=scope, head=head,
                 head_rate=head_rate, keep_dense=keep_dense, rates=rates)


def prune(
    scores: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    rate: float,
    *,
    scope: str = "global",
    head: str | None = None,
    head_rate: float | None = None,
    keep_dense: tuple[str, ...] | list[str] = (),
    rates: Mapping[str, float] | None = None,
) -> Mask:
    """Prune `rate` of the remaining weights with the lowest `scores` (one tensor per masked name).

    The one exact-k pruning rule every criterion shares: scores are compared within each
    pruning group (one layer for 'layerwise', all layers for 'global'), pruned weights never
    come back, ties go by position.
    """
    return _prune(lambda n: scores[n].detach().reshape(-1).cpu(), mask, rate, scope, head, head_rate, keep_dense, rates)


def _prune(
    score: Callable[[str], torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    rate: float,
    scope: str,
    head: str | None,
    head_rate: float | None,
    keep_dense,
    rates: Mapping[str, float] | None = None,
) -> Mask:
    if not 0 <= rate < 1 or any(not 0 <= r < 1 for r in (rates or {}).values()):
        raise UsageError(f"pruning rate must be in [0, 1), got {rate}")
    if scope not in ("global", "layerwise"):
        raise UsageError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    names = list(mask)
    unknown = [n for n in keep_dense if n not in mask]
    if unknown:
        raise UsageError(f"--keep-dense names unknown tensors: {', '.join(unknown)} (prunable: {', '.join(names)})")
    new: Mask = {n: m.clone().cpu() for n, m in mask.items()}
    kinds = {n: kind_of(mask[n].shape) for n in names}
    for group, group_rate in groups(names, scope, head, head_rate, rate, set(keep_dense), rates, kinds):
        keep = torch.cat([mask[n].reshape(-1).cpu() for n in group])
        scores = torch.cat([score(n) for n in group])
        keep = prune_lowest(scores, keep, num_to_prune(int(keep.sum()), group_rate))
        for n, part in zip(group, torch.split(keep, [mask[n].numel() for n in group])):
            new[n] = part.reshape(mask[n].shape)
    return new


def random_like(
    mask: Mapping[str, torch.Tensor], generator: torch.Generator
) -> Mask:
    """A random mask with exactly the same number of kept weights in every tensor as `mask`.

    The 'random ticket' baseline (Frankle & Carbin 2019; Morcos et al. 2019): same per-layer
    density, positions drawn uniformly.
    """
    out: Mask = {}
    for name, m in mask.items():
        k = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        if k:
            flat[torch.randperm(m.numel(), generator=generator)[:k]] = True
        out[name] = flat.reshape(m.shape)
    return out
