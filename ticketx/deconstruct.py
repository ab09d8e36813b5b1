"""Zhou et al. 2019's ablations as pure tensor functions (no model, no data set).

Zhou, Lan, Liu & Yosinski, NeurIPS 2019, "Deconstructing lottery tickets: zeros, signs, and the
supermask", ask which values a ticket's kept weights (mask 1) need and what its pruned weights
(mask 0) should hold. Each function here changes exactly one thing, and only where it says:

mask-1 actions (the kept weights; pruned positions are returned unchanged, the mask zeroes them):
- `permute_kept`: the kept values permuted among the kept positions of the layer (the same
  multiset of values per layer, other places; not `shuffle`, which moves the mask);
- `with_signs`: the magnitudes of one tensor with the signs of another ("reinit, original sign");
- `signed_constant`: ±σ with the original signs ("constant, original sign");
- `random_signs`: the magnitudes kept, the signs drawn (+1 or -1, each with probability 1/2).

mask-0 actions (the pruned weights): `frozen_values` says what each pruned weight is held at:
0 ('zero', the lottery ticket's rule), its starting value ('frozen'), or Zhou's rule ('zhou'):
zero where the weight moved toward zero during the training that pruned it (|w_f| < |w_i|), its
starting value elsewhere. `toward_zero` computes those bits.

Signs: sign(0) is taken as +1, so every kept weight gets a nonzero value (a Gaussian or uniform
initialisation has no exact zeros in practice).
"""

from __future__ import annotations

from typing import Mapping

import torch

MASK0 = ("zero", "frozen", "zhou")  # what pruned weights hold during training (Zhou et al. 2019 §3)


def signs(w: torch.Tensor) -> torch.Tensor:
    """+1 or -1 per element, in w's dtype (sign(0) = +1)."""
    return torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))


def permute_kept(w: torch.Tensor, keep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The values of `w` at the kept positions, permuted uniformly among those positions (one layer)."""
    out = w.detach().clone()
    flat = out.reshape(-1)
    idx = torch.nonzero(keep.reshape(-1).to(device=w.device, dtype=torch.bool), as_tuple=False).reshape(-1)
    perm = torch.randperm(idx.numel(), generator=generator).to(w.device)
    flat[idx] = flat[idx][perm]
    return out


def with_signs(magnitudes: torch.Tensor, sign_of: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """|magnitudes| with the signs of `sign_of` at the kept positions; `sign_of` elsewhere."""
    keep = keep.to(device=sign_of.device, dtype=torch.bool)
    return torch.where(keep, magnitudes.to(sign_of).abs() * signs(sign_of), sign_of.detach())


def signed_constant(w: torch.Tensor, sigma: float, keep: torch.Tensor) -> torch.Tensor:
    """σ times the sign of `w` at the kept positions; `w` elsewhere."""
    keep = keep.to(device=w.device, dtype=torch.bool)
    return torch.where(keep, signs(w) * float(sigma), w.detach())


def random_signs(w: torch.Tensor, keep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """|w| with signs drawn uniformly (+1/-1) at the kept positions; `w` elsewhere."""
    keep = keep.to(device=w.device, dtype=torch.bool)
    coin = torch.randint(0, 2, tuple(w.shape), generator=generator).to(device=w.device, dtype=w.dtype) * 2 - 1
    return torch.where(keep, w.detach().abs() * coin, w.detach())


def toward_zero(w_init: torch.Tensor, w_final: torch.Tensor) -> torch.Tensor:
    """Bool per weight: did it move toward zero during training (|w_final| < |w_init|)?"""
    return w_final.detach().abs().cpu() < w_init.detach().abs().cpu()


def frozen_values(how: str, start: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
                  toward: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The values the pruned weights of each tensor are held at, per mask-0 action (0 at kept positions).

    Only tensors with a pruned weight held away from zero are returned (an empty dict: 'zero').
    'zhou' needs `toward` (bool per weight, `toward_zero`) for every tensor of `mask`.
    """
    if how not in MASK0:
        raise ValueError(f"mask-0 action must be one of {', '.join(MASK0)}, got {how!r}")
    if how == "zero":
        return {}
    out = {}
    for name, m in mask.items():
        hold = ~m.to(torch.bool)
        if how == "zhou":
            assert toward is not None
            hold = hold & ~toward[name].to(device=hold.device, dtype=torch.bool)
        if bool(hold.any()):
            s = start[name].detach().cpu()
            out[name] = torch.where(hold, s, torch.zeros_like(s))
    return out
