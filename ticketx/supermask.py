"""Supermasks as ticket sources: a mask learned over frozen random weights, no weight ever trained.

Two methods, one registry entry each:

- `bernoulli` (Zhou, Lan, Liu & Yosinski, NeurIPS 2019, "Deconstructing lottery tickets: zeros,
  signs, and the supermask", §5): a score s per weight; each step samples the mask
  m ~ Bernoulli(σ(s)) and the gradient passes straight through the sample to σ(s) (∂m/∂s =
  σ'(s)).
- `edge-popup` (Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari, CVPR 2020, "What's hidden in a
  randomly weighted neural network?"): the mask keeps the top-k |s| of each layer; the gradient
  of the mask passes straight through to the scores.

Over the model's initialisation (`init`: the weights `find` starts from with the same init seed)
or signed constants (`signed-constant`: sign(w_0)·σ_l, σ_l the std of layer l's initial weights,
Zhou et al.'s "signed constant" and Ramanujan et al.'s "signed Kaiming constant" for their inits).

ticketx's departures, so that the result is an ordinary ticket (nested masks at exact densities):
- every prunable layer (conv and linear weights, the output layer included) at each target
  density, exactly round(density × its weights), layer by layer (Ramanujan et al.'s k% per layer:
  profile `uniform`, the default); or at the per-layer counts of an IMP ticket: profile `imp`, the
  counts `find`'s layerwise pruning schedule gives at the round nearest each density (the output
  layer at its head rate, as Frankle & Carbin 2019 prune it), or a ticket file's own per-layer
  counts at its nearest round (`profile_counts`);
- densities are learned in sequence: each continues from the previous density's scores and can
  only drop weights of its mask (Ramanujan et al. learn each density from scratch);
- Bernoulli: the scores of each layer are shifted before every step so that the expected density
  of the sampled mask is the target (Zhou et al. let the density emerge); the final mask is the
  top-k scores of each layer (Zhou et al. sample it, or threshold σ(s) at 0.5);
- scores train with Adam (Zhou et al.: SGD with momentum; Ramanujan et al.: SGD, cosine lr);
- biases and normalisation parameters stay at their initial values, frozen like the weights
  (Ramanujan et al.'s networks have no biases and use non-affine batch norm; ticketx's LeNet and
  Conv nets have zero-initialised biases, so these are zero); batch-norm running statistics are
  updated in train mode while the mask is learned, as in Ramanujan et al.'s code, and stored.

The ticket: one round per density, the frozen weights as its rewind weights (rewind step 0),
found_by 'supermask', and per round the test accuracy of mask ⊙ weights on the source without any
weight training. `probe` trains only a new output layer on a target, every other weight frozen.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketx import deconstruct as D
from ticketx import masks as M
from ticketx import pruning, runtime
from ticketx.errors import UsageError
from ticketx.registry import Registry

ZHOU = "Zhou, Lan, Liu & Yosinski 2019 (NeurIPS), Deconstructing lottery tickets: zeros, signs, and the supermask"
RAMANUJAN = ("Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari 2020 (CVPR), What's hidden in a randomly weighted "
             "neural network?")
WEIGHTS = ("init", "signed-constant")
# How many weights each layer keeps: 'uniform' (every layer at the density: Ramanujan et al. 2020's
# k% per layer) or 'imp' (the layerwise IMP schedule's counts: Frankle & Carbin 2019); a ticket
# file's own counts are the third kind ('ticket').
PROFILES = ("uniform", "imp")
DEFAULT_LR = {"bernoulli": 0.1, "edge-popup": 0.01}  # Adam on the scores; measured on digits (README)


@dataclass(frozen=True)
class Method:
    name: str
    paper: str
    init: Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # scores for a weight tensor
    mask: Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]  # (scores, alive, k, gen) -> STE mask
    rank: Callable[[torch.Tensor], torch.Tensor]  # scores -> what the final top-k keeps


METHODS: Registry[Method] = Registry("supermask method")


def _bernoulli_init(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.zeros_like(w, dtype=torch.float32)  # σ(0) = 1/2, shifted to the target density each step


def shift_for(scores: torch.Tensor, k: int, iterations: int = 50) -> float:
    """The c with Σ σ(scores + c) = k (bisection; Σσ is increasing in c): expected density k / n."""
    n = scores.numel()
    if k <= 0 or n == 0:
        return -1e4
    if k >= n:
        return 1e4
    lo, hi = -60.0 - float(scores.max()), 60.0 - float(scores.min())
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if float(torch.sigmoid(scores + mid).sum()) < k:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _bernoulli_mask(s: torch.Tensor, alive: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    c = shift_for(s.detach()[alive], k)
    p = torch.sigmoid(s + c) * alive
    u = torch.rand(tuple(s.shape), generator=gen).to(s.device)  # drawn on the CPU: the same on any device
    sample = (u < p.detach()).to(s.dtype)
    return sample + p - p.detach()  # straight through the sample: dm/ds = σ'(s + c)


def _popup_init(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    fan_in = w[0].numel() if w.dim() > 1 else w.numel()
    bound = 1.0 / math.sqrt(max(1, fan_in))  # Ramanujan et al.: kaiming_uniform_(a=√5) scores
    return ((torch.rand(tuple(w.shape), generator=gen) * 2 - 1) * bound).to(w.device)


def top_k(rank: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest of `rank` among `alive` (exact; ties by position, as every ticketx pruning)."""
    flat = pruning.prune_lowest(rank.detach().reshape(-1).cpu(), alive.reshape(-1).cpu(), int(alive.sum()) - k)
    return flat.reshape(alive.shape).to(alive.device)


def _popup_mask(s: torch.Tensor, alive: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    a = s.abs()
    hard = top_k(a, alive, k).to(s.dtype)
    return hard + a - a.detach()  # straight through: dL/ds = dL/dm · sign(s)


METHODS.add("bernoulli", Method("bernoulli", ZHOU, _bernoulli_init, _bernoulli_mask, lambda s: s))
METHODS.add("edge-popup", Method("edge-popup", RAMANUJAN, _popup_init, _popup_mask, lambda s: s.abs()))


def nearest_rounds(candidates: Sequence[Mapping[str, int]], total: int, densities: Sequence[float],
                   what: str) -> list[int]:
    """For each density, the candidate round whose whole-network density is nearest (ties: the earlier
    round; the rule of `transfer --density`, Ticket.round_for_density); two densities that land on
    one round are refused (the masks must be nested)."""
    whole = [sum(c.values()) / total for c in candidates]
    chosen: list[int] = []
    for d in densities:
        r = min(range(len(whole)), key=lambda i: (abs(whole[i] - d), i))
        if chosen and r <= chosen[-1]:
            raise UsageError(f"densities {densities[len(chosen) - 1]:g} and {d:g} are both nearest round {chosen[-1]} "
                             f"({100 * whole[chosen[-1]]:.2f}%) of {what}",
                             "give one density per round: " + ", ".join(f"{w:.4g}" for w in whole[1:8]) + ", ...")
        chosen.append(r)
    return chosen


def profile_counts(profile: str, shapes: Mapping[str, tuple[int, ...]], densities: Sequence[float], *,
                   prune: Any = None, head: str | None = None, ticket: Any = None) -> tuple[list[dict[str, int]], dict[str, Any]]:
    """Per density, the weights each layer keeps, and what the ticket records about the profile.

    `uniform`: round(density × the layer's weights). `imp`: the counts of the layerwise pruning
    schedule `prune` (rate, head_rate for the output layer `head`, rates, keep_dense:
    pruning.schedule_counts) at the round nearest each density. `ticket`: the ticket's own counts
    at its nearest round (its layers must be this model's). Each density must reach a later round
    than the one before, so the counts only shrink.
    """
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    if profile == "uniform":
        return [{n: int(round(d * torch.Size(s).numel())) for n, s in shapes.items()} for d in densities], \
            {"profile": "uniform"}
    if profile == "imp":
        p = dict(prune.model_dump() if hasattr(prune, "model_dump") else prune or {})
        if p.get("scope", "layerwise") != "layerwise":
            raise UsageError("the imp profile follows the layerwise pruning schedule; with global pruning a layer's "
                             "count depends on the weights", "give the ticket file itself as the profile")
        # PruneSpec's most rounds (100): far below any density a supermask is learned at
        groups = pruning.schedule_counts(shapes, 100, float(p.get("rate", 0.2)), head=head, head_rate=p.get("head_rate"),
                                         keep_dense=list(p.get("keep_dense") or []), rates=p.get("rates") or {})
        candidates = [{g[0]: k for g, k in c.items()} for c in groups]
        rounds = nearest_rounds(candidates, total, densities, "the imp profile")
        info = {"profile": "imp", "profile_rounds": rounds,
                "schedule": {k: p.get(k) for k in ("rate", "head_rate", "rates", "keep_dense")}}
        return [candidates[r] for r in rounds], info
    if profile == "ticket":
        names = list(ticket.names)
        if sorted(names) != sorted(shapes) or any(tuple(ticket.shapes[n]) != tuple(shapes[n]) for n in names):
            raise UsageError(f"the profile ticket's layers are not this model's ({ticket.meta.get('model')}, "
                             f"{ticket.meta.get('image_size')} px)", "give a ticket of the same model, input size and width")
        candidates = [{n: int(torch.Size(shapes[n]).numel()) for n in shapes}]
        candidates += [{n: int(m.sum()) for n, m in ticket.mask(r).items()} for r in range(1, ticket.num_rounds + 1)]
        rounds = nearest_rounds(candidates, total, densities, "the profile ticket")
        return [candidates[r] for r in rounds], {"profile": "ticket", "profile_rounds": rounds,
                                                 "profile_ticket": ticket.meta.get("fingerprint")}
    raise UsageError(f"--profile must be uniform, imp or a ticket file, got {profile!r}")


def frozen_weights(init: Mapping[str, torch.Tensor], names: Sequence[str], weights: str) -> dict[str, torch.Tensor]:
    """The state the mask is learned over: the initialisation, or its prunable tensors as sign(w)·σ_layer."""
    if weights not in WEIGHTS:
        raise UsageError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    state = {k: v.detach().clone() for k, v in init.items()}
    if weights == "signed-constant":
        for n in names:
            w = state[n]
            state[n] = D.signs(w) * float(w.double().std(unbiased=False))
    return state


def masked_forward(model: nn.Module, masks: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The model with each masked weight replaced by weight ⊙ mask; the weights themselves never change."""
    params = dict(model.named_parameters())
    return torch.func.functional_call(model, {n: params[n] * m for n, m in masks.items()}, (x,), strict=False)


def learn(model: nn.Module, data: Any, densities: Sequence[float], *, method: str, steps: int, lr: float,
          batch_size: int, seed: int, device: torch.device | str = "cpu", reporter: Any = None,
          counts: Sequence[Mapping[str, int]] | None = None,
          data_seed: int | None = None) -> tuple[list[M.Mask], list[dict[str, Any]]]:
    """Nested supermasks of `model` (every parameter frozen as it is), one per density: (masks, per-density log).

    Each density trains the scores for `steps` steps on `data`'s training set (the data order and
    augmentation of epoch e are runtime.data_order(data seed, e), as in training) and ends with the
    exact top-k of each layer's scores among the previous density's mask: k = round(density × the
    layer's weights), or `counts[i][layer]` (a profile: profile_counts), which may never grow.
    """
    from ticketx.data import Batches
    from ticketx.models import prunable_names

    m = METHODS[method]
    device = torch.device(device)
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    names = prunable_names(model)
    params = dict(model.named_parameters())
    data_seed = seed if data_seed is None else data_seed
    gen = runtime.generator(runtime.seed_for(seed, runtime.salt("supermask")))
    scores = {n: m.init(params[n].detach(), gen).to(device).requires_grad_(True) for n in names}
    alive = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    batches = Batches(data.train_x, data.train_y, batch_size=min(batch_size, len(data.train_y)), train=True,
                      crop_padding=data.crop_padding, flip=data.flip, mean=data.mean, std=data.std, device=device)
    ipe = len(batches)
    masks: list[M.Mask] = []
    log: list[dict[str, Any]] = []
    step = 0
    model.train()
    for i, d in enumerate(densities):
        k = {n: int(round(d * alive[n].numel())) for n in names} if counts is None else {n: int(counts[i][n]) for n in names}
        grown = [n for n in names if k[n] > int(alive[n].sum())]
        if grown:
            raise UsageError(f"layer {grown[0]} would keep {k[grown[0]]} weights at {d:g}, more than the "
                             f"{int(alive[grown[0]].sum())} of the density before: the masks must be nested")
        opt = torch.optim.Adam(list(scores.values()), lr=lr)
        t0, losses = time.perf_counter(), []
        for _ in range(steps):
            epoch = step // ipe
            if step % ipe == 0:
                it = iter(batches.epoch(runtime.data_order(data_seed, epoch)))
            x, y = next(it)
            mk = {n: m.mask(scores[n], alive[n], k[n], gen) for n in names}
            loss = F.cross_entropy(masked_forward(model, mk, x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        alive = {n: top_k(m.rank(scores[n].detach()), alive[n], k[n]) for n in names}
        masks.append({n: a.cpu() for n, a in alive.items()})
        log.append({"density": d, "steps": steps, "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
                    "seconds": time.perf_counter() - t0})
        if reporter is not None:
            reporter.log(f"supermask {method}: {100 * M.density(masks[-1]):.2f}% weights remaining, "
                         f"train loss {log[-1]['final_loss']:.3f} ({log[-1]['seconds']:.1f}s)")
    return masks, log


@torch.no_grad()
def accuracy(model: nn.Module, mask: Mapping[str, torch.Tensor] | None, data: Any, device: torch.device | str = "cpu") -> float:
    """Test accuracy of mask ⊙ weights as they are (no training); eval mode."""
    from ticketx.data import Batches
    from ticketx.models import is_conv
    from ticketx.train import eval_batch_size

    device = torch.device(device)
    model.to(device).eval()
    b = Batches(data.test_x, data.test_y, batch_size=eval_batch_size(device, tuple(data.test_x.shape), is_conv(model)), train=False,
                mean=data.mean, std=data.std, device=device)
    masks = {n: v.to(device=device, dtype=torch.float32) for n, v in (mask or {}).items()}
    correct = n = 0
    for x, y in b.epoch():
        out = masked_forward(model, masks, x) if masks else model(x)
        correct += int((out.argmax(1) == y).sum())
        n += int(y.numel())
    return correct / max(1, n)


def untrained_accuracy(ticket: Any, round_: int, data: Any, device: torch.device | str = "cpu") -> float:
    """A ticket's mask ⊙ its rewind weights on its own data set's test set, no training (Zhou et al.'s
    "mask ⊙ init"): its own output layer kept."""
    from ticketx.baselines import TICKET, Arm

    prep = Arm(ticket, round_, data.num_classes, 0, head="keep").build(TICKET)
    return accuracy(prep.model, prep.mask, data, device)


def probe(ticket: Any, round_: int, target: Any, *, steps: int, lr: float = 1e-2, batch_size: int = 60, seed: int = 0,
          device: torch.device | str = "cpu") -> float:
    """Target test accuracy of the ticket's mask ⊙ rewind weights with only a new, dense output layer
    trained (every other parameter frozen; Adam, eval mode, so batch statistics are not updated)."""
    from ticketx.baselines import TICKET, Arm
    from ticketx.data import Batches
    from ticketx.models import head_name

    device = torch.device(device)
    prep = Arm(ticket, round_, target.num_classes, seed, head="new", head_dense=True).build(TICKET)
    model = prep.model.to(device).eval()
    head = head_name(model).rsplit(".", 1)[0] + "."
    train = [p for n, p in model.named_parameters() if n.startswith(head)]
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(head))
    masks = {n: v.to(device=device, dtype=torch.float32) for n, v in (prep.mask or {}).items()
             if not n.startswith(head)}
    opt = torch.optim.Adam(train, lr=lr)
    batches = Batches(target.train_x, target.train_y, batch_size=min(batch_size, len(target.train_y)), train=True,
                      crop_padding=target.crop_padding, flip=target.flip, mean=target.mean, std=target.std, device=device)
    ipe, step = len(batches), 0
    while step < steps:
        for x, y in batches.epoch(runtime.data_order(seed, step // ipe)):
            loss = F.cross_entropy(masked_forward(model, masks, x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return accuracy(model, masks, target, device)


def supermask_ticket(method: str, model_name: str, data: Any, densities: Sequence[float], *, weights: str = "init",
                     seed: int = 0, steps: int = 300, lr: float | None = None, batch_size: int = 60,
                     train: Mapping[str, Any] | None = None, device: torch.device | str = "cpu",
                     reporter: Any = None, profile: str = "uniform", prune: Any = None, profile_ticket: Any = None,
                     width: float = 1.0, data_seed: int | None = None) -> Any:
    """A ticket whose masks are supermasks learned over frozen weights: one round per density, rewind step 0.

    The network is built as `find` builds it (runtime.seed_weights(seed), then the model), so the
    `init` weights are those of an IMP ticket with the same init seed. `train` overrides the
    model's default recipe recorded in the ticket (what `transfer` retrains with). `profile`:
    how many weights each layer keeps (profile_counts: 'uniform', 'imp' with the schedule `prune`,
    or 'ticket' with `profile_ticket`); `data_seed` (default `seed`): the data order.
    """
    from ticketx import store
    from ticketx import ticket as ticketfile
    from ticketx.models import build_model, head_name, prunable_names
    from ticketx.settings import resolve_train
    from ticketx.train import Steps, state_copy

    m = METHODS[method]
    dens = [float(d) for d in densities]
    if not dens or any(not 0 < d <= 1 for d in dens) or any(b >= a for a, b in zip(dens, dens[1:])):
        raise UsageError(f"densities must be in (0, 1] and strictly decreasing, got {list(densities)}")
    lr = DEFAULT_LR[method] if lr is None else float(lr)
    train_spec = resolve_train(model_name, dict(train or {}))
    runtime.seed_weights(seed)
    model = build_model(model_name, data.num_classes, data.channels, data.image_size, width=width)
    names = prunable_names(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n in names}
    counts, profile_info = profile_counts(profile, shapes, dens, prune=prune, head=head_name(model), ticket=profile_ticket)
    model.load_state_dict(frozen_weights(state_copy(model), names, weights))
    frozen = state_copy(model)
    masks, log = learn(model, data, dens, method=method, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                       device=device, reporter=reporter, counts=None if profile == "uniform" else counts,
                       data_seed=data_seed)
    # The parameters are the frozen ones, bit for bit (nothing trained them); the running statistics
    # of batch norm moved in train mode and are kept with them.
    rewind = state_copy(model)
    assert all(torch.equal(rewind[n], frozen[n]) for n, _ in model.named_parameters())
    accs = [accuracy(model, mk, data, device) for mk in masks]
    dense_acc = accuracy(model, None, data, device)
    steps_info = Steps.of(train_spec, len(data.train_y))
    prune_info = {
        "method": method, "criterion": f"supermask-{method}", "weights": weights, "rate": None, "densities": dens,
        "rounds": len(dens), "scope": "layerwise", "head_rate": None, "keep_dense": [], "rewind": "0",
        "steps_per_density": steps, "lr": lr, "batch_size": batch_size, "optimizer": "adam", "paper": m.paper,
        "frozen": "every parameter (weights, biases, normalisation); batch-norm running statistics updated while learning",
    }
    data_seed = seed if data_seed is None else data_seed
    science = {"kind": "supermask", "model": model_name, "data": data.name, "image_size": data.image_size,
               "channels": data.channels, "prune": dict(prune_info), "train": train_spec.model_dump(), "init_seed": seed,
               "data_seed": data_seed}
    if width != 1:
        science["width"] = width
    # A uniform profile (every layer at the density) is what every supermask ticket had before
    # profiles: its fingerprint, which seeds its transfer controls, stays.
    prune_info.update(profile_info)
    if profile != "uniform":
        science["prune"] = dict(prune_info)
    records = [{"round": 0, "density": 1.0, "layer_density": {n: 1.0 for n in names}, "collapsed": [],
                "test_acc": dense_acc, "val_acc": None, "seconds": 0.0, "steps": 0, "history": []}]
    records += [{"round": r, "density": M.density(mk), "target_density": d, "layer_density": M.layer_densities(mk),
                 "collapsed": M.collapsed(mk), "test_acc": acc, "val_acc": None, "seconds": lg["seconds"], "steps": steps,
                 "history": [], "final_loss": lg["final_loss"]}
                for r, (d, mk, acc, lg) in enumerate(zip(dens, masks, accs, log), start=1)]
    meta = {
        "kind": "ticket", "found_by": "supermask", "model": model_name, "data": data.name, "classes": list(data.classes),
        "num_classes": data.num_classes, "image_size": data.image_size, "channels": data.channels,
        "head": head_name(model), "train": train_spec.model_dump(), "prune": prune_info, "seed": seed, "init_seed": seed,
        "data_seed": data_seed, "width": width, "deterministic": False, "rewind_step": 0, "iterations_per_epoch": steps_info.iterations_per_epoch,
        "total_steps": steps_info.total, "rounds": records, "fingerprint": store.fingerprint(science), "spec": science,
        "device": str(device), "versions": store.versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return ticketfile.make(meta, masks, {k: v.cpu() for k, v in rewind.items()})


def write_supermask_ticket(method: str, data: str, model: str, densities: str, out: Any, *, weights: str = "init",
                           seed: int = 0, length: str = "20ep", lr: float | None = None, batch_size: int = 60,
                           target: str | None = None, probe_length: str = "20ep", device: str = "auto",
                           image_size: int | None = None, data_dir: Any = None, train: Mapping[str, Any] | None = None,
                           reporter: Any = None, profile: str = "uniform",
                           prune: Mapping[str, Any] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """`ticketx supermask`: check the options, learn the masks, write the ticket; with `target`, probe each round.

    Returns (ticket, probes): probes are, per round, the target test accuracy with only a new output
    layer trained; they are also recorded in the ticket's metadata (`probe`). `profile`: uniform,
    imp (the layerwise schedule of the model's pruning defaults under the overrides `prune`) or
    the path of a ticket file.
    """
    from ticketx import store
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data, parse_data
    from ticketx.models import model_info
    from ticketx.runtime import resolve_device
    from ticketx.settings.base import density_list
    from ticketx.steps import check_step, to_iterations

    METHODS[method]
    if weights not in WEIGHTS:
        raise UsageError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    parse_data(data)
    if target is not None:
        parse_data(target)
    info = model_info(model)
    dens = density_list(densities)
    length, probe_length = check_step(length), check_step(probe_length)
    given = {k: v for k, v in (prune or {}).items() if v is not None}
    if given and profile != "imp":
        raise UsageError("--prune-rate, --head-rate, --prune-rates and --schedule shape the imp profile: give "
                         "them with --profile imp")
    schedule, profile_ticket, kind = None, None, profile
    if profile == "imp":
        from ticketx.settings import resolve_prune
        from pydantic import ValidationError

        try:
            schedule = resolve_prune(model, {"scope": "layerwise", **given})
        except ValidationError as err:
            from ticketx.settings.base import describe_validation_error

            raise UsageError(f"invalid option: {describe_validation_error(err)}") from None
    elif profile not in PROFILES:
        from pathlib import Path

        if not Path(profile).is_file():
            raise UsageError(f"--profile must be uniform, imp or a ticket file; {profile!r} is neither")
        profile_ticket, kind = ticketfile.load(profile), "ticket"
    dev = resolve_device(device)
    store.check_writable(out)
    images = load_data(data, data_dir, image_size=image_size or info.image_size)
    ipe = max(1, len(images.train_y) // min(batch_size, len(images.train_y)))
    ticket = supermask_ticket(method, model, images, dens, weights=weights, seed=seed, steps=max(1, to_iterations(length, ipe)),
                              lr=lr, batch_size=batch_size, train=train, device=dev, reporter=reporter, profile=kind,
                              prune=schedule, profile_ticket=profile_ticket)
    if profile_ticket is not None:
        ticket.meta["prune"]["profile_file"] = str(profile)
    probes: list[dict[str, Any]] = []
    if target is not None:
        tdata = load_data(target, data_dir, image_size=images.image_size, channels=images.channels)
        tipe = max(1, len(tdata.train_y) // min(batch_size, len(tdata.train_y)))
        for r in range(1, ticket.num_rounds + 1):
            acc = probe(ticket, r, tdata, steps=max(1, to_iterations(probe_length, tipe)), batch_size=batch_size,
                        seed=seed, device=dev)
            probes.append({"round": r, "density": ticket.rounds[r]["density"], "target": tdata.name, "test_acc": acc})
        ticket.meta["probe"] = probes
    ticketfile.save(ticket, out)
    return ticket, probes


def schedule_densities(shapes: Mapping[str, tuple[int, ...]], prune: Any, head: str | None) -> list[float]:
    """The whole-network densities of rounds 1..prune.rounds of the IMP schedule `prune` (any scope:
    the counts per pruning group follow from the shapes alone, pruning.schedule_counts)."""
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    counts = pruning.schedule_counts(shapes, prune.rounds, prune.rate, scope=prune.scope, head=head,
                                     head_rate=prune.head_rate, keep_dense=list(prune.keep_dense), rates=prune.rates)
    return [sum(c.values()) / total for c in counts[1:]]


def search(spec: Any, out: Any, *, data_dir: Any = None, device: str = "auto", reporter: Any = None) -> Any:
    """A study's supermask search (SearchSpec with `supermask`): the ticket at `out`, learned at the
    densities of the search's IMP schedule (one round per IMP round), or the one already there.

    The init seed builds the frozen weights (those of the IMP ticket with this seed), the data seed
    orders the data; the ticket's fingerprint is the search's key, as `find`'s is.
    """
    from pathlib import Path

    from ticketx import store
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data
    from ticketx.errors import TicketxError
    from ticketx.models import build_model, head_name, model_info, prunable_names
    from ticketx.runtime import resolve_device, set_deterministic
    from ticketx.steps import to_iterations

    sm = spec.supermask
    out = Path(out)
    key = store.fingerprint(spec.science())
    if out.exists():
        try:
            done = ticketfile.load(out)
        except TicketxError:
            done = None
        if done is not None and done.meta.get("fingerprint") == key:
            return done
    dev = resolve_device(device)
    set_deterministic(spec.deterministic)
    data = load_data(spec.data, data_dir, image_size=spec.image_size or model_info(spec.model).image_size,
                     channels=spec.channels)
    init_seed, data_seed = spec.seeds
    shape_model = build_model(spec.model, data.num_classes, data.channels, data.image_size, width=spec.width)
    names = prunable_names(shape_model)
    shapes = {n: tuple(p.shape) for n, p in shape_model.named_parameters() if n in names}
    densities = schedule_densities(shapes, spec.prune, head_name(shape_model))
    ipe = max(1, len(data.train_y) // min(sm.batch_size, len(data.train_y)))
    ticket = supermask_ticket(sm.method, spec.model, data, densities, weights=sm.weights, seed=init_seed,
                              data_seed=data_seed, steps=max(1, to_iterations(sm.length, ipe)), lr=sm.lr,
                              batch_size=sm.batch_size, train=spec.train.model_dump(), device=dev, reporter=reporter,
                              profile=sm.profile, prune=spec.prune, width=spec.width)
    ticket.meta.update(fingerprint=key, deterministic=spec.deterministic, search=spec.model_dump())
    ticketfile.save(ticket, out)
    return ticket
