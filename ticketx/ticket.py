"""The ticket file: every round's mask (bit-packed), the rewind weights, and the metadata.

Layout (a plain dict of tensors and JSON-able values, so it loads with
`torch.load(path, weights_only=True)` and opening a ticket never executes code):

    format          "ticketx-ticket"
    format_version  1
    meta            dict: model, data set, classes, image size, channels, width, training and
                    pruning settings, label noise, seeds, versions, and per-round density and
                    accuracies (`rounds`)
    names           prunable tensor names, in packing order
    shapes          their shapes
    masks           uint8 [B]: the masks of rounds 1..R, nested-encoded (below)
    mask_bits       [R] ints: bits stored for each round
    rewind          state dict at the rewind point (every retraining starts from it)
    extras          (version 2) named groups of per-weight tensors, {group: {tensor name: tensor
                    of that tensor's shape}}; 'scores': the one-shot scores of a prune-at-init
                    ticket (float32), from which `invert` is exact (Frankle et al. 2021). Later
                    additions to a ticket go here as new groups, so the format stays 2.

Round 0 is the dense network (density 1.0) and has no stored mask. Version 1 files (no
extras) still load; what needs an extra (the inverted mask) is refused for them, one line.

Nested encoding: masks only shrink, so round r stores one bit only for each weight still alive
in round r-1 (round 1 stores one per prunable weight). A search of R rounds at rate 0.2 stores
P * (1 + 0.8 + ... + 0.8^(R-1)) bits: at most one bit per prunable weight per round, and under
1/8 of the bytes of the same masks as bool tensors (1/32 of int32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ticketx import masks as M
from ticketx import store
from ticketx.errors import TicketxError, UsageError

FORMAT = "ticketx-ticket"
FORMAT_VERSION = 2  # 2: extras (per-weight tensors by group: 'scores')


@dataclass
class Ticket:
    meta: dict[str, Any]
    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    packed: torch.Tensor  # uint8 [B], nested encoding
    bits: list[int]  # bits per stored round
    rewind: dict[str, torch.Tensor]
    format_version: int = 1  # of the file it was loaded from (a new ticket: FORMAT_VERSION)
    extras: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def num_rounds(self) -> int:
        """Pruned rounds stored (round 0, dense, is implicit)."""
        return len(self.bits)

    @property
    def num_weights(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.shapes.values())

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.meta["rounds"]

    def mask(self, round_: int) -> M.Mask:
        """The mask of round `round_` (0 = dense)."""
        if not 0 <= round_ <= self.num_rounds:
            raise UsageError(f"round {round_} is not in this ticket (rounds 0..{self.num_rounds})")
        flat = decode(self.packed, self.bits[:round_], self.num_weights)
        sizes = [int(torch.Size(s).numel()) for s in self.shapes.values()]
        return {n: part.reshape(s).clone() for (n, s), part in zip(self.shapes.items(), torch.split(flat, sizes))}

    def round_for_density(self, density: float) -> int:
        """The round whose overall density is closest to `density`."""
        return min(range(len(self.rounds)), key=lambda r: (abs(self.rounds[r]["density"] - density), r))

    def kept(self, round_: int) -> int:
        """Prunable weights round `round_` keeps (its mask's ones over every prunable tensor; 0: all of them)."""
        return self.num_weights if round_ == 0 else M.count(self.mask(round_))[0]

    def round_for_weights(self, weights: int) -> int:
        """The pruned round (1..R) whose remaining prunable weights are nearest to `weights`, on a log
        scale (a count off by 2x either way is equally far: rounds shrink geometrically); ties: the
        earlier round. The dense round 0 is not a ticket and is never picked."""
        return nearest_count([self.kept(r) for r in range(self.num_rounds + 1)], weights)


def nearest_count(kept: list[int], weights: int) -> int:
    """Of the pruned rounds 1..R with `kept[r]` remaining weights, the one nearest `weights` on a log scale."""
    import math

    if len(kept) < 2:
        raise UsageError("the ticket has no pruned round to pick by remaining weights")
    return min(range(1, len(kept)), key=lambda r: (abs(math.log(max(kept[r], 1) / weights)), r))


def match_round(ticket: Any, density: float, tol: float = 0.01) -> int | None:
    """The round of `ticket` whose density is within `tol` (relative) of `density`, else None.

    Tickets are compared at matched densities only: overlap between a 10% and a 13% ticket
    mostly measures the density difference. Of several matches, the closest wins.
    """
    rounds = ticket.rounds if hasattr(ticket, "rounds") else ticket["rounds"]
    best = None
    for r, rec in enumerate(rounds):
        gap = abs(float(rec["density"]) - density)
        if gap <= tol * density and (best is None or gap < best[0]):
            best = (gap, r)
    return None if best is None else best[1]


def encode(flat_masks: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """Nested bit-packing of shrinking flat masks: round r keeps bits only where round r-1 was kept."""
    if not flat_masks:
        return torch.zeros(0, dtype=torch.uint8), []
    alive = torch.ones_like(flat_masks[0], dtype=torch.bool)
    parts, bits = [], []
    for m in flat_masks:
        if bool((m & ~alive).any()):
            raise ValueError("masks must only shrink from round to round")
        kept = m[alive]
        parts.append(M.pack_bits(kept))
        bits.append(int(kept.numel()))
        alive = m
    return torch.cat(parts), bits


def decode(packed: torch.Tensor, bits: list[int], num_weights: int) -> torch.Tensor:
    """The flat mask after len(bits) rounds (all ones for zero rounds)."""
    alive = torch.ones(num_weights, dtype=torch.bool)
    offset = 0
    for n in bits:
        nbytes = (n + 7) // 8
        cur = torch.zeros(num_weights, dtype=torch.bool)
        cur.masked_scatter_(alive, M.unpack_bits(packed[offset:offset + nbytes], n))  # ~2.7x faster than cur[alive] = ...
        alive, offset = cur, offset + nbytes
    return alive


def make(meta: dict[str, Any], masks_by_round: list[M.Mask], rewind: dict[str, torch.Tensor],
         extras: dict[str, dict[str, torch.Tensor]] | None = None) -> Ticket:
    """Build a Ticket from masks of rounds 1..R (in order), the rewind state and any extras."""
    names = list(masks_by_round[0]) if masks_by_round else []
    shapes = {n: tuple(masks_by_round[0][n].shape) for n in names}
    flat = [torch.cat([m[n].reshape(-1).cpu().bool() for n in names]) for m in masks_by_round]
    packed, bits = encode(flat)
    extras = {g: {n: t.detach().cpu().contiguous() for n, t in group.items()} for g, group in (extras or {}).items()}
    return Ticket(meta=meta, names=names, shapes=shapes, packed=packed, bits=bits, rewind=rewind,
                  format_version=FORMAT_VERSION, extras=extras)


def save(ticket: Ticket, path: str | Path) -> None:
    """Write atomically (temp file + fsync + rename)."""
    store.save_torch(path, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": store.plain(ticket.meta),
        "names": ticket.names,
        "shapes": {n: list(s) for n, s in ticket.shapes.items()},
        "masks": ticket.packed.contiguous(),
        "mask_bits": list(ticket.bits),
        "rewind": {k: v.contiguous() for k, v in ticket.rewind.items()},
        "extras": {g: {n: t.contiguous() for n, t in group.items()} for g, group in ticket.extras.items()},
    })


def load(path: str | Path) -> Ticket:
    """Load and validate a ticket; every problem is one TicketxError naming the file."""
    path = Path(path)
    obj = store.load_torch(path, "ticket")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise TicketxError(f"{path} is not a ticketx ticket (no '{FORMAT}' header)")
    version = obj.get("format_version")
    if not isinstance(version, int):
        raise TicketxError(f"{path}: ticket has no valid format version")
    if version > FORMAT_VERSION:
        raise TicketxError(
            f"{path} is a ticket of format version {version}; this ticketx reads up to version {FORMAT_VERSION}",
            "upgrade ticketx",
        )
    try:
        names = list(obj["names"])
        shapes = {n: tuple(int(d) for d in obj["shapes"][n]) for n in names}
        packed, rewind, meta = obj["masks"], obj["rewind"], obj["meta"]
        bits = [int(b) for b in obj["mask_bits"]]
    except (KeyError, TypeError, ValueError) as err:
        raise TicketxError(f"{path}: ticket is missing or has a malformed field ({err})") from err
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        raise TicketxError(f"{path}: ticket masks are malformed")
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    if sum((b + 7) // 8 for b in bits) != packed.numel() or (bits and bits[0] != total):
        raise TicketxError(f"{path}: ticket masks are corrupted ({packed.numel()} bytes for rounds of {bits} bits, {total} weights)")
    if not isinstance(rewind, dict) or not all(isinstance(v, torch.Tensor) for v in rewind.values()):
        raise TicketxError(f"{path}: ticket rewind weights are malformed")
    bad = [n for n in names if n not in rewind or tuple(rewind[n].shape) != shapes[n]]
    if bad:
        raise TicketxError(f"{path}: mask and rewind weights disagree for: {', '.join(bad)}")
    if not isinstance(meta, dict) or not isinstance(meta.get("rounds"), list) or len(meta["rounds"]) != len(bits) + 1:
        raise TicketxError(f"{path}: ticket metadata is malformed (rounds)")
    extras = obj.get("extras", {}) if version >= 2 else {}
    if not isinstance(extras, dict) or not all(
            isinstance(g, dict) and all(n in shapes and isinstance(t, torch.Tensor) and tuple(t.shape) == shapes[n]
                                        for n, t in g.items()) for g in extras.values()):
        raise TicketxError(f"{path}: ticket extras are malformed (each a tensor of a prunable tensor's shape)")
    ticket = Ticket(meta=meta, names=names, shapes=shapes, packed=packed, bits=bits, rewind=rewind, format_version=version,
                    extras=extras)
    # Each round stores one bit per weight alive before it: the ones in round r's bytes (padding
    # bits are zero) must equal round r+1's bit count. A byte popcount table keeps this O(size).
    offset = 0
    for r, n in enumerate(bits[:-1], start=1):
        nbytes = (n + 7) // 8
        if int(_POPCOUNT[packed[offset:offset + nbytes].long()].sum()) != bits[r]:
            raise TicketxError(f"{path}: ticket masks are corrupted (round {r + 1})")
        offset += nbytes
    return ticket


_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


# What `find` writes into every ticket's metadata, and its JSON type: what inspect and transfer read.
META_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": str, "data": str, "num_classes": int, "image_size": int, "channels": int, "train": dict,
    "prune": dict, "init_seed": int, "data_seed": int, "rewind_step": int, "total_steps": int,
}
# Also written, but absent from tickets of earlier versions (readers default them): "width" (1.0,
# `width_of`) and "label_noise" (the search's noise: fraction, mode, seed, flipped; none = clean labels).


def width_of(meta: dict[str, Any]) -> float:
    """The width multiplier a ticket's network was built at (1: the published network, and every ticket
    written before widths existed)."""
    return float(meta.get("width", 1.0))


def check_meta(ticket: Ticket, path: str | Path = "ticket") -> None:
    """Reject a ticket whose metadata lacks what `find` writes (a crafted or damaged file), naming the keys.

    Separate from `load`, which accepts any well-formed ticket (library use, tests).
    """
    m = ticket.meta
    bad = [k for k, typ in META_KEYS.items() if not isinstance(m.get(k), typ) or isinstance(m.get(k), bool)]
    if not bad:
        bad += [f"train.{k}" for k in ("optimizer", "lr", "length") if k not in m["train"]]
        bad += [f"prune.{k}" for k in ("rate", "scope", "rewind") if k not in m["prune"]]
    width = m.get("width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        bad.append("width")
    for r, rec in enumerate(m["rounds"]):
        if not isinstance(rec, dict) or not isinstance(rec.get("density"), (int, float)) or not 0 <= rec["density"] <= 1:
            bad.append(f"rounds[{r}].density")
    if bad:
        raise TicketxError(f"{path}: ticket metadata is missing or malformed: {', '.join(bad)}")


def check_architecture(ticket: Ticket) -> None:
    """Reject a ticket whose tensors do not fit the model it names, before any data is loaded.

    The model is built on the meta device: shapes only, no memory, no random numbers drawn.
    """
    from ticketx.models import build_model

    m = ticket.meta
    try:
        args = (str(m["model"]), int(m["num_classes"]), int(m["channels"]), int(m["image_size"]))
        width = width_of(m)
    except (KeyError, TypeError, ValueError) as err:
        raise TicketxError(f"ticket metadata is malformed (model, num_classes, channels, image_size, width): {err}") from err
    with torch.device("meta"):
        model = build_model(*args, width=width)
    check_model(ticket, model)


def check_model(ticket: Ticket, model: torch.nn.Module, *, ignore: tuple[str, ...] = (), where: str = "ticket") -> None:
    """Reject a ticket whose tensors do not match `model`, listing every mismatch."""
    state = model.state_dict()
    problems = []
    for n, t in ticket.rewind.items():
        if n in ignore:
            continue
        if n not in state:
            problems.append(f"{n}: not in the model")
        elif tuple(state[n].shape) != tuple(t.shape):
            problems.append(f"{n}: ticket {tuple(t.shape)} vs model {tuple(state[n].shape)}")
    problems += [f"{n}: missing from the {where}" for n in state if n not in ticket.rewind and n not in ignore]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise TicketxError(f"{where} does not match model {ticket.meta.get('model')!r}: {shown}")
