"""Sanity checks for tickets (Frankle et al., ICLR 2021, "Pruning neural networks at
initialization: why are we missing the mark?", §5): does the ticket's choice of *which* weights
matter, or only how many it keeps in each layer?

Pure mask functions, each a baseline at exactly the ticket's per-layer counts:

- `shuffle`: permute each layer's mask within the layer. Keeps the layerwise density profile,
  destroys which weights are kept. A ticket that does no better than its shuffle is only a good
  density profile (Frankle et al. 2021 found this for SNIP, GraSP and SynFlow, not for IMP).
- `invert`: keep the weights the ticket ranked *lowest*, at the same per-layer counts. A ticket
  whose inverse trains as well does not depend on its ranking.

Random re-initialisation (the third check of Frankle et al. 2021) changes weights, not masks,
and is the existing `random-reinit` baseline.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ticketx.errors import UsageError
from ticketx.masks import Mask


def shuffle(mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> Mask:
    """Each layer's mask permuted uniformly within the layer: the same count per layer, new positions."""
    out: Mask = {}
    for name, m in mask.items():  # mask order: the same generator gives the same masks
        flat = m.reshape(-1).to("cpu", torch.bool)
        out[name] = flat[torch.randperm(flat.numel(), generator=generator)].reshape(m.shape)
    return out


def pruning_order(masks_by_round: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """For every weight, the number of rounds it survived (0 = pruned in round 1, R = never pruned)."""
    names = list(masks_by_round[0])
    return {n: sum(m[n].to("cpu", torch.int64) for m in masks_by_round) for n in names}


def invert_scores(scores: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> Mask:
    """Frankle et al. 2021's inversion: per layer, as many weights as `target` keeps, the lowest-scored
    ones (ties: the earlier position first). Exact for a one-shot ranking (the scores a
    prune-at-init ticket stores): the inverse of the weights the method ranked highest."""
    out: Mask = {}
    for name, keep in target.items():
        flat = scores[name].reshape(-1).float()
        k = int(keep.sum())
        order = torch.sort(flat, stable=True).indices
        new = torch.zeros(flat.numel(), dtype=torch.bool)
        new[order[:k]] = True
        out[name] = new.reshape(keep.shape)
    return out


def invert(masks_by_round: Sequence[Mapping[str, torch.Tensor]], round: int, generator: torch.Generator) -> Mask:
    """An approximate inversion from the pruning order alone (for tests and analysis; the `invert`
    control uses `invert_scores`, which is exact): per layer, keep as many weights as round
    `round` keeps, choosing the ones the ticket ranked lowest.

    `masks_by_round` are the nested masks of rounds 1..R (round r at index r-1), `round` in 1..R.
    A ticket does not store its scores, only its pruning order: weights pruned in round 1 scored
    lowest, then those pruned in round 2, and so on, and the survivors of round R highest. The
    inverse takes the earliest-pruned weights first; within one round the scores are unknown, so
    ties are broken uniformly at random by `generator`. This is "lowest-scored" up to the order
    inside each round's pruned set (exact when one round's pruned set is taken whole). Note: at
    densities above 50% the inverse must include some of the ticket's own kept weights.
    """
    if not masks_by_round:
        raise UsageError("invert needs a ticket with at least one pruned round")
    if not 1 <= round <= len(masks_by_round):
        raise UsageError(f"round {round} is not a pruned round of this ticket (1..{len(masks_by_round)})")
    for r in range(1, len(masks_by_round)):
        if any(bool((masks_by_round[r][n] & ~masks_by_round[r - 1][n]).any()) for n in masks_by_round[r]):
            raise UsageError(f"masks are not nested: round {r + 1} keeps weights round {r} pruned")
    survived = pruning_order(masks_by_round)
    target = masks_by_round[round - 1]
    out: Mask = {}
    for name, level in survived.items():
        flat = level.reshape(-1)
        k = int(target[name].sum())
        # Random order first, then a stable sort by rounds survived: equal levels stay shuffled.
        perm = torch.randperm(flat.numel(), generator=generator)
        order = perm[torch.sort(flat[perm], stable=True).indices]
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[order[:k]] = True
        out[name] = keep.reshape(level.shape)
    return out
