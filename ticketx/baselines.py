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

Zhou et al. 2019's mask-1 ablations keep the ticket's mask and change the kept weights' values
(a weight rule, applied after the weights are set; ticketx.deconstruct has the tensor maths):

- ``permuted-weights``: the kept values permuted within each layer (not ``shuffle``: the mask stays);
- ``signed-reinit``: fresh magnitudes (a new initialisation), the rewind weights' signs;
- ``signed-constant``: ±σ with the rewind weights' signs, σ the std of the layer's weights in the
  ticket's original initialisation θ_0 (Zhou et al.'s "standard deviation of each layer's
  original initialization");
- ``random-signs``: the rewind weights' magnitudes, signs drawn.

They touch every tensor of the ticket (a kept output layer too), never a new output layer, which
is the same in every arm. Adding a baseline is one `@baseline(...)` function below that turns the
ticket's mask into the baseline's (or returns None for no mask), or one `@weight_baseline(...)`
function that changes the kept weights in place, plus its test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import nn

from ticketx import deconstruct as D
from ticketx import masks as M
from ticketx import pruning, runtime
from ticketx.errors import UsageError
from ticketx.registry import Registry

if TYPE_CHECKING:
    from ticketx.ticket import Ticket

MaskRule = Callable[["Arm", M.Mask], Optional[M.Mask]]
WeightRule = Callable[["Arm", nn.Module, M.Mask], None]


@dataclass(frozen=True)
class Baseline:
    name: str
    label: str  # column header
    rule: MaskRule  # the ticket's mask (output layer already set) -> the baseline's mask, None = dense
    fresh_weights: bool = False  # True: new random weights instead of the ticket's rewind weights
    per_round: bool = True  # False: the same network at every round (trained once per seed)
    # Changes the kept weights in place once the weights are set and the mask chosen (before the
    # mask zeroes the pruned ones); None: the weights as set. Zhou et al. 2019's mask-1 ablations.
    weights: Optional[WeightRule] = None
    paper: str = ""  # where the control comes from (shown in result.json)


BASELINES: Registry[Baseline] = Registry("baseline")
DEFAULT = ("random-mask", "random-reinit", "dense")


def baseline(name: str, label: str, *, fresh_weights: bool = False, per_round: bool = True) -> Callable[[MaskRule], MaskRule]:
    """Register `rule` as the baseline `name`."""

    def deco(rule: MaskRule) -> MaskRule:
        BASELINES.add(name, Baseline(name, label, rule, fresh_weights, per_round))
        return rule

    return deco


def weight_baseline(name: str, label: str, *, paper: str) -> Callable[[WeightRule], WeightRule]:
    """Register the weight rule `fn(arm, model, mask)` as the baseline `name`: the ticket's mask, other kept weights."""

    def deco(fn: WeightRule) -> WeightRule:
        BASELINES.add(name, Baseline(name, label, _same_mask, weights=fn, paper=paper))
        return fn

    return deco


def _same_mask(arm: "Arm", mask: M.Mask) -> M.Mask:
    return mask


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
    """The weights the ticket's method ranked lowest, at the same per-layer counts (Frankle et al.
    2021, "Pruning neural networks at initialization: why are we missing the mark?"): exact from
    the one-shot scores a prune-at-init ticket stores (ticketx.sanity.invert_scores). IMP tickets
    and tickets without scores are refused before anything trains (`invert_problem`). A new
    output layer keeps its own mask."""
    from ticketx.sanity import invert_scores

    problem = invert_problem(arm.ticket)
    if problem:
        raise UsageError(problem)
    if arm.round == 0:
        return mask
    inv = invert_scores(arm.ticket.extras["scores"], arm.ticket.mask(arm.round))
    head = arm.ticket.meta.get("head")
    return {n: mask[n] if (arm.reset_head and n == head) else inv[n] for n in mask}


def invert_problem(ticket: "Ticket") -> str | None:
    """Why the inverted mask of `ticket` is not defined, or None.

    Frankle et al. 2021 invert one-shot scores at initialisation. An IMP ticket's later rounds
    are scored with the earlier rounds' weights already at zero, so no single ranking of all
    weights exists to invert; SynFlow rescores after every pruning iteration, likewise.
    """
    if ticket.meta.get("found_by") != "prune-at-init":
        return ("invert is defined for prune-at-init tickets (one-shot scores, Frankle et al. 2021); an IMP ticket's "
                "rounds are scored with earlier rounds' weights at zero, so there is no single ranking to invert")
    if "scores" not in ticket.extras:
        criterion = ticket.meta.get("prune", {}).get("criterion", "?")
        if ticket.meta.get("prune", {}).get("iterations"):
            return (f"invert is not defined for an iterative {criterion} ticket: its scores change with every pruning "
                    "iteration (Tanaka et al. 2020), so no one ranking was kept")
        return "this ticket stores no scores (made before ticket format 2): make it again with `ticketx pai` to invert it"
    return None


ZHOU = "Zhou, Lan, Liu & Yosinski 2019 (NeurIPS), Deconstructing lottery tickets: zeros, signs, and the supermask"


@weight_baseline("permuted-weights", "permuted weights", paper=ZHOU)
def _permuted_weights(arm: "Arm", model: nn.Module, mask: M.Mask) -> None:
    """The kept weights' values permuted among the kept positions of each layer (Zhou et al.'s
    "reshuffle"): the same mask and multiset of values per layer, each value elsewhere."""
    gen = arm.generator("permuted-weights")
    for name, p, keep in arm.ablated(model, mask):
        p.copy_(D.permute_kept(p, keep, gen))


@weight_baseline("signed-reinit", "signed reinit", paper=ZHOU)
def _signed_reinit(arm: "Arm", model: nn.Module, mask: M.Mask) -> None:
    """Fresh magnitudes (a new initialisation of the architecture, from this arm's own stream), the
    rewind weights' signs (Zhou et al.'s "reinit, original sign")."""
    fresh = arm.fresh_init(arm.stream_seed("signed-reinit"), arm.num_classes)
    for name, p, keep in arm.ablated(model, mask):
        p.copy_(D.with_signs(fresh[name], p, keep))


@weight_baseline("signed-constant", "signed constant", paper=ZHOU)
def _signed_constant(arm: "Arm", model: nn.Module, mask: M.Mask) -> None:
    """±σ with the rewind weights' signs (Zhou et al.'s "constant, original sign"): σ is the std
    of the layer's weights in the ticket's original initialisation θ_0, rebuilt from its init seed
    as `find` builds it (for a rewind-0 ticket, the std of its own rewind weights). No random
    numbers: the same network for every seed but for the output layer."""
    theta0 = arm.fresh_init(int(arm.ticket.meta["init_seed"]), int(arm.ticket.meta["num_classes"]))
    for name, p, keep in arm.ablated(model, mask):
        p.copy_(D.signed_constant(p, float(theta0[name].double().std(unbiased=False)), keep))


@weight_baseline("random-signs", "random signs", paper=ZHOU)
def _random_signs(arm: "Arm", model: nn.Module, mask: M.Mask) -> None:
    """The rewind weights' magnitudes with signs drawn uniformly (Zhou et al.: signs matter)."""
    gen = arm.generator("random-signs")
    for name, p, keep in arm.ablated(model, mask):
        p.copy_(D.random_signs(p, keep, gen))


TOWARD_ZERO = "toward_zero"  # the ticket's extras group: per weight, did it move toward zero (search.py)


def mask0_problem(ticket: "Ticket", how: str) -> str | None:
    """Why the mask-0 action `how` is not defined for `ticket`, or None."""
    if how == "zhou" and TOWARD_ZERO not in ticket.extras:
        return ("--mask0 zhou needs each pruned weight's movement (|w_final| < |w_init|) in the round that pruned it, "
                "which the IMP tickets of this ticketx store (extras 'toward_zero'); this ticket has none "
                f"({'found by ' + ticket.meta['found_by'] if ticket.meta.get('found_by') else 'made before they were stored'})")
    return None


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
    frozen: dict[str, torch.Tensor] | None = None  # mask-0 values held at pruned positions (None: zeros)


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
    mask0: str = "zero"  # what pruned weights hold while training (ticketx.deconstruct.MASK0)

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

    def ablated(self, model: nn.Module, mask: M.Mask) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, parameter, kept positions) of every masked tensor a weight rule changes: all of the
        ticket's, not a new output layer (the same in every arm). In mask order."""
        from ticketx.models import head_name

        params, head = dict(model.named_parameters()), head_name(model)
        return [(n, params[n].data, m.to(params[n].device)) for n, m in mask.items()
                if not (self.reset_head and n == head)]

    def fresh_init(self, seed: int, num_classes: int) -> dict[str, torch.Tensor]:
        """A new initialisation of the ticket's architecture from `seed`, built as `find` builds it; the
        global random state is left as it was."""
        from ticketx.models import build_model

        meta = self.ticket.meta
        with torch.random.fork_rng(devices=[]):
            runtime.seed_weights(seed)
            return build_model(meta["model"], num_classes, meta["channels"], meta["image_size"]).state_dict()

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
        frozen = None
        if mask is not None:
            with torch.no_grad():
                if kind.weights is not None:
                    kind.weights(self, model, mask)
                frozen = self.frozen(model, mask, head_param)
            M.apply(model, mask)
        return Prepared(model, mask, reset, frozen or None)

    def frozen(self, model: nn.Module, mask: M.Mask, head_param: str) -> dict[str, torch.Tensor]:
        """The mask-0 values of this arm (`mask0`): its pruned weights at their starting values
        ('frozen'), or at them only where the ticket's weight moved away from zero ('zhou', from the
        ticket's `toward_zero` extras). A new output layer's pruned weights stay zero."""
        if self.mask0 == "zero":
            return {}
        problem = mask0_problem(self.ticket, self.mask0)
        if problem:
            raise UsageError(problem)
        state = model.state_dict()
        names = [n for n in mask if not (self.reset_head and n == head_param)]
        return D.frozen_values(self.mask0, {n: state[n] for n in names}, {n: mask[n] for n in names},
                               self.ticket.extras.get(TOWARD_ZERO))


def _random_head(old: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A random mask of `shape` at the density of the old output layer's mask."""
    n = torch.Size(shape).numel()
    keep = int(round(float(old.sum()) / old.numel() * n))
    flat = torch.zeros(n, dtype=torch.bool)
    flat[torch.randperm(n, generator=gen)[:keep]] = True
    return flat.reshape(shape)
