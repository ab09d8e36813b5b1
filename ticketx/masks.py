"""Masks: {prunable tensor name: bool tensor}. Density, application and bit-packing.

Pure tensor functions: no model, no data set. `density` is the fraction of weights kept
(1.0 = dense); sparsity = 1 - density.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

Mask = dict[str, torch.Tensor]


def ones_like(params: Mapping[str, torch.Tensor]) -> Mask:
    """The dense mask (every weight kept) for the given tensors."""
    return {name: torch.ones_like(t, dtype=torch.bool, device="cpu") for name, t in params.items()}


def count(mask: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(kept, total) over all tensors."""
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return kept, total


def density(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of weights kept over all masked tensors."""
    kept, total = count(mask)
    return kept / total if total else 1.0


def layer_densities(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(m.sum()) / m.numel() for name, m in mask.items()}


def collapsed(mask: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of tensors pruned to zero weights (layer collapse: the network is cut)."""
    return [name for name, m in mask.items() if not bool(m.any())]


def is_subset(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> bool:
    """True when `new` keeps no weight that `old` pruned (masks only shrink)."""
    return all(not bool((new[n] & ~old[n]).any()) for n in old)


@torch.no_grad()
def apply(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights of `model` in place."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        p = params[name]
        p.mul_(m.to(device=p.device, dtype=p.dtype))


# Bit-packing: one bit per weight, 8 to a byte (big-endian bit order). The ticket file packs only
# the weights still alive in the previous round (ticket.encode), so a ticket's masks cost at
# most one bit per prunable weight per round, and far less after a few rounds.
_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(flat: torch.Tensor) -> torch.Tensor:
    """Pack a 1-D bool tensor into uint8 (big-endian bit order, zero padded)."""
    flat = flat.reshape(-1).to(torch.bool).cpu()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _BITS).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of pack_bits: the first n bits as a bool tensor."""
    bits = packed.reshape(-1, 1).bitwise_and(_BITS).ne(0).reshape(-1)
    return bits[:n].clone()
