"""Baselines: the controls a transferred ticket is compared with, one registry entry each.

Every arm of a transfer (the ticket itself and each baseline) starts from the same model built
the same way (`Arm.build`): the ticket's architecture, the ticket's rewind weights (or fresh
ones), the same new output layer, and a mask. A baseline differs from the ticket in exactly the
one thing it tests, stated by its entry:

- ``random-mask``: a random mask per layer, same rewind weights (the "random ticket");
- ``random-reinit``: the ticket's mask on freshly initialised weights (Frankle & Carbin 2019);
- ``dense``: the whole network from the same rewind weights (no mask; the same at every round);
- ``shuffle``: each layer's mask permuted within the layer (Frankle et al. 2021);
- ``invert``: the weights the ticket ranked lowest, at its per-layer counts (Frankle et al. 2021).

Adding a baseline is one `@baseline(...)` function below that turns the ticket's mask into the
baseline's (or returns None for no mask), plus its test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import nn

from ticketx import masks as M
from ticketx import pruning, runtime
from ticketx.registry import Registry

if TYPE_CHECKING:
    from ticketx.ticket import Ticket

MaskRule = Callable[["Arm", M.Mask], Optional[M.Mask]]


@dataclass(frozen=True)
class Baseline:
    name: str
    label: str  # column header
    rule: MaskRule  # the ticket's mask (output layer already set) -> the baseline's mask, None = dense
    fresh_weights: bool = False  # True: new random weights instead of the ticket's rewind weights
    per_round: bool = True  # False: the same network at every round (trained once per seed)


BASELINES: Registry[Baseline] = Registry("baseline")
DEFAULT = ("random-mask", "random-reinit", "dense")


def baseline(name: str, label: str, *, fresh_weights: bool = False, per_round: bool = True) -> Callable[[MaskRule], MaskRule]:
    """Register `rule` as the baseline `name`."""

    def deco(rule: MaskRule) -> MaskRule:
        BASELINES.add(name, Baseline(name, label, rule, fresh_weights, per_round))
        return rule

    return deco


@baseline("random-mask", "random mask")
def _random_mask(arm: "Arm", mask: M.Mask) -> M.Mask:
    return pruning.random_like(mask, arm.generator("random-mask"))


@baseline("random-reinit", "random reinit", fresh_weights=True)
def _random_reinit(arm: "Arm", mask: M.Mask) -> M.Mask:
    return mask


@baseline("dense", "dense", per_round=False)
def _dense(arm: "Arm", mask: M.Mask) -> None:
    return None


@baseline("shuffle", "shuffled mask")
def _shuffle(arm: "Arm", mask: M.Mask) -> M.Mask:
    """Each layer's mask permuted within the layer (Frankle et al. 2021): same layerwise density,
    other weights. A ticket no better than its shuffle is only a good density profile."""
    from ticketx.sanity import shuffle

    return shuffle(mask, arm.generator("shuffle"))


@baseline("invert", "inverted mask")
def _invert(arm: "Arm", mask: M.Mask) -> M.Mask:
    """The weights the ticket ranked lowest, at the same layerwise density (Frankle et al. 2021):
    the earliest-pruned first (ticketx.sanity.invert). A new output layer keeps its own mask."""
    from ticketx.sanity import invert

    if arm.round == 0:
        return mask
    inv = invert([arm.ticket.mask(r) for r in range(1, arm.ticket.num_rounds + 1)], arm.round, arm.generator("invert"))
    head = arm.ticket.meta.get("head")
    return {n: mask[n] if (arm.reset_head and n == head) else inv[n] for n in mask}


# The ticket itself, through the same builder: its mask unchanged.
TICKET = Baseline("ticket", "ticket", lambda arm, mask: mask)


def arm_order(names: "list[str] | tuple[str, ...]") -> list[str]:
    """Arms in one fixed order for every table and plot: the baselines as registered, then the own ticket."""
    rank = {n: i for i, n in enumerate(BASELINES.names())}
    return sorted(dict.fromkeys(names), key=lambda n: rank.get(n, len(rank)))


def label(name: str) -> str:
    """Column header of an arm ('ticket', 'own-ticket' or a baseline name)."""
    if name == "own-ticket":
        return "own ticket"
    return TICKET.label if name == "ticket" else BASELINES[name].label



# ---- building an arm --------------------------------------------------------------------------

def ticket_id(ticket: "Ticket") -> int:
    """A number that identifies the ticket: its fingerprint, else a hash of its masks and metadata."""
    fp = ticket.meta.get("fingerprint")
    if isinstance(fp, str):
        try:
            return int(fp, 16)
        except ValueError:
            pass
    h = hashlib.sha256(ticket.packed.numpy().tobytes())
    h.update(repr(sorted((k, str(v)) for k, v in ticket.meta.items() if k != "created")).encode())
    return int.from_bytes(h.digest()[:7], "big")


@dataclass
class Prepared:
    """A network ready to train on the target: model (weights set) and the mask to enforce."""

    model: nn.Module
    mask: M.Mask | None
    head_reset: bool


@dataclass(frozen=True)
class Arm:
    """One network to build: which ticket, which round, which seed, on how many target classes.

    `head`: 'new' gives a new output layer, 'keep' keeps the ticket's (settings.transfer.head_rule
    decides which per arm; 'keep' only when the ticket's class names are the target's). A new
    output layer is seeded, and pruned at random to the ticket's output-layer density unless
    `head_dense` (then every arm's output layer is dense, kept or new).
    """

    ticket: "Ticket"
    round: int
    num_classes: int
    seed: int
    head: str = "new"
    head_dense: bool = False

    def stream_seed(self, stream: str) -> int:
        """The seed of one random stream of this arm: the one place arm seeds are derived.

        Every stream derives from the ticket it controls (ticket_id), the seed and the stream's
        name, and the mask streams also from the round: two different tickets never share a
        random mask, a new output layer or a re-initialisation, so their controls are
        independent samples. The output layer's weights do not depend on the round (so the
        networks of one seed differ across rounds only by their masks).
        """
        return runtime.arm_seed(ticket_id(self.ticket), self.seed, stream, self.round)

    def generator(self, stream: str) -> torch.Generator:
        return runtime.generator(self.stream_seed(stream))

    @property
    def reset_head(self) -> bool:
        return self.head != "keep"

    def build(self, kind: Baseline) -> Prepared:
        """The network for `kind` (TICKET or a baseline) before any training step.

        Every arm of one (ticket, round, seed) gets the same output layer: with `head` 'new', the
        one drawn from the 'head-weights' stream (a re-initialised arm too: only its body is
        re-drawn); with 'keep', the ticket's rewind weights (a re-initialised arm re-draws them
        with the rest). With `head_dense` every arm's output layer is dense, kept or new, so
        their densities compare like with like.
        """
        from ticketx import ticket as ticketfile
        from ticketx.models import build_model, head_name

        meta, reset = self.ticket.meta, self.reset_head
        width = ticketfile.width_of(meta)
        runtime.seed_weights(self.stream_seed("fresh-weights" if kind.fresh_weights else "head-weights"))
        model = build_model(meta["model"], self.num_classes, meta["channels"], meta["image_size"], width=width)
        head_param = head_name(model)
        prefix = head_param.rsplit(".", 1)[0] + "."
        ticketfile.check_model(self.ticket, model, ignore=tuple(k for k in self.ticket.rewind if reset and k.startswith(prefix)))
        state = model.state_dict()
        if not kind.fresh_weights:
            # every layer from the rewind weights; the fresh (seeded) output layer when reset
            for k, v in self.ticket.rewind.items():
                if not (reset and k.startswith(prefix)):
                    state[k] = v.clone()
        elif reset:  # a re-drawn body under the new output layer every other arm gets
            runtime.seed_weights(self.stream_seed("head-weights"))
            shared = build_model(meta["model"], self.num_classes, meta["channels"], meta["image_size"],
                                 width=width).state_dict()
            state.update({k: v for k, v in shared.items() if k.startswith(prefix)})
        model.load_state_dict(state)
        mask = self.ticket.mask(self.round)
        shape = tuple(dict(model.named_parameters())[head_param].shape)
        if self.head_dense:
            mask[head_param] = torch.ones(shape, dtype=torch.bool)
        elif reset:
            mask[head_param] = _random_head(mask[head_param], shape, self.generator("head"))
        mask = kind.rule(self, mask)
        if mask is not None:
            M.apply(model, mask)
        return Prepared(model, mask, reset)


def _random_head(old: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A random mask of `shape` at the density of the old output layer's mask."""
    n = torch.Size(shape).numel()
    keep = int(round(float(old.sum()) / old.numel() * n))
    flat = torch.zeros(n, dtype=torch.bool)
    flat[torch.randperm(n, generator=gen)[:keep]] = True
    return flat.reshape(shape)
