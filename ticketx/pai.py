"""Pruning at initialisation (PaI) as ticket sources: SNIP, GraSP and SynFlow.

Each criterion scores every prunable weight of the freshly initialised network, without training
it, and keeps the highest scores. The result is an ordinary ticket (nested masks + the initial
weights as rewind point + metadata), so `transfer`, `inspect` and studies use it like an IMP
ticket; the initial weights are those `find` starts from with the same init seed (paired).

- `snip` (Lee et al., ICLR 2019): connection sensitivity |g ⊙ w|, g the gradient of the
  training loss on a class-balanced sample; one shot.
- `grasp` (Wang et al., ICLR 2020): gradient signal preservation. The paper removes the highest
  S = -w ⊙ Hg (H the Hessian, g the gradient of the loss with softmax temperature T = 200), so
  the keep-score is w ⊙ Hg; one shot.
- `synflow` (Tanaka et al., NeurIPS 2020): data-free synaptic flow R = 1ᵀ(∏|W|)1, score
  |w ⊙ ∂R/∂w|, recomputed over `iterations` (100) prunes with an exponential density schedule.

Model state per criterion (as the papers' code): SNIP and GraSP in train mode, so batch norm uses
the sample's batch statistics, as in the training they predict (Lee et al.'s and Wang et al.'s
code score the network as built); SynFlow in eval mode on |θ| of every parameter and buffer
(Tanaka et al.'s `linearize`), so a fresh batch-norm layer with running mean 0 and variance 1 is
the positive affine map |γ|x/√(1+ε) + |β|: with the all-ones input, batch statistics would have
zero variance. SynFlow runs in float64: R is a product over layers and overflows float32 in deep
networks (Tanaka et al. §6). All scoring works on a copy: the caller's model is not changed.
"""

from __future__ import annotations

import copy
import datetime as _dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketx import masks as M
from ticketx import pruning
from ticketx.errors import TicketxError, UsageError
from ticketx.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
Scores = dict[str, torch.Tensor]

GRASP_TEMPERATURE = 200.0  # Wang et al. 2020, official code: logits divided by T = 200
SYNFLOW_ITERATIONS = 100  # Tanaka et al. 2020 §6: 100 pruning iterations
SAMPLES_PER_CLASS = 10  # Wang et al. 2020 (10 per class on CIFAR); Tanaka et al. 2020 (10 x classes)
DEFAULT_BATCH_SIZE = 256  # scoring batch; gradients are summed over batches, so only memory depends on it


@dataclass(frozen=True)
class Criterion:
    """A pruning-at-initialisation criterion: a scorer (higher = keep) and how it is applied."""

    name: str
    score: Callable[..., Scores]
    iterative: bool
    data_free: bool
    paper: str

    @property
    def cite(self) -> str:
        """The paper in short: 'Lee et al. 2019'."""
        import re

        m = re.match(r"([^,&]+?)\s*([,&].*?)?\s(\d{4})", self.paper)
        return f"{m[1]}{' et al.' if m[2] else ''} {m[3]}" if m else self.paper


CRITERIA: Registry[Criterion] = Registry("pruning-at-initialisation criterion")


def criterion(name: str, *, iterative: bool = False, data_free: bool = False, paper: str) -> Callable:
    """Register a scorer `(model, batches, names, mask, device, **options) -> {name: scores}`."""

    def deco(fn: Callable[..., Scores]) -> Callable[..., Scores]:
        CRITERIA.add(name, Criterion(name, fn, iterative, data_free, paper))
        return fn

    return deco


def get(name: str) -> Criterion:
    return CRITERIA[name]


# ------------------------------------------------------------------------------------------
# Scores


def _as_batches(data: Batch | Sequence[Batch]) -> list[Batch]:
    """One (x, y) pair or a sequence of them, as a list of batches."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [data]  # type: ignore[list-item]
    batches = list(data)  # type: ignore[arg-type]
    if not batches:
        raise UsageError("no data to score the weights with")
    return batches


def _copy(model: nn.Module, names: Sequence[str], mask: Mapping[str, torch.Tensor] | None,
          device: torch.device | str | None, dtype: torch.dtype | None = None) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A scoring copy of the model (the caller's model and its buffers stay untouched), masked."""
    work = copy.deepcopy(model)
    if device is not None:
        work.to(device)
    if dtype is not None:
        work.to(dtype)
    params = dict(work.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise UsageError(f"not parameters of the model: {', '.join(missing)}")
    if mask is not None:
        M.apply(work, {n: mask[n] for n in names if n in mask})
    for p in work.parameters():
        p.requires_grad_(False)
    chosen = {n: params[n] for n in names}
    for p in chosen.values():
        p.requires_grad_(True)
    return work, chosen


def _names(model: nn.Module, names: Sequence[str] | None, mask: Mapping[str, torch.Tensor] | None) -> list[str]:
    from ticketx.models import prunable_names

    if names is not None:
        return list(names)
    return list(mask) if mask is not None else prunable_names(model)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@criterion("snip", paper="Lee, Ajanthan & Torr 2019 (ICLR), SNIP: single-shot network pruning based on connection sensitivity")
def snip_scores(
    model: nn.Module,
    batches: Batch | Sequence[Batch],
    *,
    names: Sequence[str] | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    **_: Any,
) -> Scores:
    """SNIP connection sensitivity |∂L/∂c| at c = 1 for the mask c, which equals |g ⊙ w|.

    g sums the gradients of the mean cross-entropy of each batch (one batch is Lee et al.'s
    setting; more batches lower the variance). Lee et al. normalise by the sum over all weights,
    which changes no ranking and is left out. Model in train mode (batch statistics).
    """
    names = _names(model, names, mask)
    work, params = _copy(model, names, mask, device)
    dev = _device_of(work)
    work.train()
    for x, y in _as_batches(batches):
        loss = F.cross_entropy(work(x.to(dev)), y.to(dev))
        loss.backward()
    return {n: (p.grad * p.detach()).abs().cpu() if p.grad is not None else torch.zeros_like(p, device="cpu")
            for n, p in params.items()}


@criterion("grasp", paper="Wang, Zhang & Grosse 2020 (ICLR), Picking winning tickets before training by preserving gradient flow")
def grasp_scores(
    model: nn.Module,
    batches: Batch | Sequence[Batch],
    *,
    names: Sequence[str] | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    temperature: float = GRASP_TEMPERATURE,
    **_: Any,
) -> Scores:
    """GraSP keep-scores w ⊙ Hg (the paper prunes the largest S = -w ⊙ Hg, i.e. keeps the largest w ⊙ Hg).

    L is the cross-entropy of logits / `temperature`; g = Σ_batches ∇L is held fixed, and
    Hg = ∇(gᵀ ∇L) by double backpropagation, summed over the batches (Wang et al.'s code).
    """
    names = _names(model, names, mask)
    work, params = _copy(model, names, mask, device)
    dev = _device_of(work)
    work.train()
    plist = list(params.values())
    data = _as_batches(batches)
    g = [torch.zeros_like(p) for p in plist]
    for x, y in data:
        loss = F.cross_entropy(work(x.to(dev)) / temperature, y.to(dev))
        for acc, gi in zip(g, torch.autograd.grad(loss, plist, allow_unused=True)):
            if gi is not None:
                acc.add_(gi)
    for x, y in data:
        loss = F.cross_entropy(work(x.to(dev)) / temperature, y.to(dev))
        grads = torch.autograd.grad(loss, plist, create_graph=True, allow_unused=True)
        z = sum((gi * gs).sum() for gi, gs in zip(grads, g) if gi is not None)
        if isinstance(z, torch.Tensor) and z.requires_grad:
            z.backward()
    return {n: (p.grad * p.detach()).cpu() if p.grad is not None else torch.zeros_like(p, device="cpu")
            for n, p in params.items()}


@criterion("synflow", iterative=True, data_free=True,
        paper="Tanaka, Kunin, Yamins & Ganguli 2020 (NeurIPS), Pruning neural networks without any data by iteratively conserving synaptic flow")
def synflow_scores(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    names: Sequence[str] | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    **_: Any,
) -> Scores:
    """Synaptic flow |w ⊙ ∂R/∂w| with R = Σ f(1; |θ|): one all-ones input of `input_shape` (C, H, W).

    Every floating parameter and buffer is replaced by its absolute value (biases and batch-norm
    included, as Tanaka et al.'s `linearize`), in eval mode and float64 (see the module notes).
    For a linear network without biases, R = 1ᵀ|W_L|…|W_1|1.
    """
    names = _names(model, names, mask)
    work, params = _copy(model, names, None, device, torch.float64)
    with torch.no_grad():
        for t in work.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    if mask is not None:
        M.apply(work, {n: mask[n] for n in names if n in mask})
    dev = _device_of(work)
    work.eval()
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=dev)
    work(x).sum().backward()
    out = {}
    for n, p in params.items():
        s = (p.grad * p.detach()).abs() if p.grad is not None else torch.zeros_like(p)
        if not bool(torch.isfinite(s).all()):
            raise TicketxError(f"synflow: the synaptic flow overflowed float64 in {n}", "the network is too deep for SynFlow")
        out[n] = s.cpu()
    return out


# ------------------------------------------------------------------------------------------
# From scores to nested masks


def select(
    scores: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    density: float,
    *,
    scope: str = "global",
    keep_dense: Sequence[str] = (),
) -> M.Mask:
    """Shrink `mask` to `density` by dropping the lowest scores (exact k, ties by position).

    'global': one ranking over every tensor not kept dense, with the count chosen so the whole
    network (kept-dense tensors included) reaches round(density x weights). 'layerwise': each
    tensor not kept dense at round(density x its weights). A mask never grows.
    """
    if not 0 < density <= 1:
        raise UsageError(f"density must be in (0, 1], got {density}")
    if scope not in ("global", "layerwise"):
        raise UsageError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    unknown = [n for n in keep_dense if n not in mask]
    if unknown:
        raise UsageError(f"keep_dense names unknown tensors: {', '.join(unknown)}")
    new: M.Mask = {n: m.to("cpu", torch.bool).clone() for n, m in mask.items()}
    body = [n for n in mask if n not in keep_dense]
    total = sum(m.numel() for m in mask.values())
    fixed = sum(int(new[n].sum()) for n in keep_dense)
    if scope == "global":
        groups = [(body, round(density * total) - fixed)] if body else []
        if groups and groups[0][1] < 0:
            raise UsageError(f"density {density} is below what the kept-dense tensors alone keep ({fixed / total:.4f})")
    else:
        groups = [([n], round(density * mask[n].numel())) for n in body]
    for group, k_keep in groups:
        keep = torch.cat([new[n].reshape(-1) for n in group])
        s = torch.cat([scores[n].detach().reshape(-1).cpu() for n in group])
        if not bool(torch.isfinite(s[keep]).all()):
            raise TicketxError("pruning scores are not finite (NaN or inf)")
        keep = pruning.prune_lowest(s, keep, max(0, int(keep.sum()) - k_keep))
        for n, part in zip(group, torch.split(keep, [new[n].numel() for n in group])):
            new[n] = part.reshape(new[n].shape)
    return new


def synflow_schedule(start: float, target: float, iterations: int) -> list[float]:
    """Exponential density schedule start·(target/start)^(k/n), k = 1..n (Tanaka et al. 2020, Alg. 1)."""
    if iterations < 1:
        raise UsageError(f"iterations must be at least 1, got {iterations}")
    return [start * (target / start) ** (k / iterations) for k in range(1, iterations + 1)]


def prune_at_init(
    criterion: str,
    model: nn.Module,
    data: Batch | Sequence[Batch] | None,
    densities: Sequence[float],
    *,
    scope: str = "global",
    iterations: int = SYNFLOW_ITERATIONS,
    keep_dense: Sequence[str] = (),
    names: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    temperature: float = GRASP_TEMPERATURE,
    scores_out: dict[str, torch.Tensor] | None = None,
) -> list[M.Mask]:
    """Nested masks, one per target density (strictly decreasing), for the model as it is now.

    `scores_out`, when given, receives a one-shot criterion's scores (float32, CPU): the one
    ranking every density was cut from, which a ticket stores so that `invert` is exact.

    One-shot criteria (SNIP, GraSP) score the dense network once and keep the top of that one
    ranking at every density. SynFlow prunes `iterations` times per target with its exponential
    schedule, rescoring the masked network each time, continuing from the previous target's mask
    (Tanaka et al. run each density from the dense network; continuing keeps the masks nested,
    as a ticket stores them). `data`: (x, y) or a list of batches, normalised as for training;
    unused by SynFlow, which needs `input_shape` (C, H, W) or takes it from `data`.
    """
    m = get(criterion)
    dens = [float(d) for d in densities]
    if not dens or any(not 0 < d <= 1 for d in dens) or any(b >= a for a, b in zip(dens, dens[1:])):
        raise UsageError(f"densities must be in (0, 1] and strictly decreasing, got {list(densities)}")
    names = _names(model, names, None)
    params = dict(model.named_parameters())
    mask: M.Mask = M.ones_like({n: params[n] for n in names})
    options = {"names": names, "device": device, "temperature": temperature}
    if m.data_free:
        if input_shape is None:
            if data is None:
                raise UsageError(f"{criterion} needs input_shape (C, H, W) or a batch to take it from")
            input_shape = tuple(_as_batches(data)[0][0].shape[1:])
        source: Any = tuple(input_shape)
    else:
        if data is None:
            raise UsageError(f"{criterion} needs data to score the weights with")
        source = _as_batches(data)
    out: list[M.Mask] = []
    if not m.iterative:
        s = m.score(model, source, mask=None, **options)
        if scores_out is not None:
            scores_out.update({n: s[n].detach().float().cpu() for n in names})
        for d in dens:
            mask = select(s, mask, d, scope=scope, keep_dense=keep_dense)
            out.append(mask)
        return out
    current = 1.0
    for d in dens:
        for step_density in synflow_schedule(current, d, iterations):
            s = m.score(model, source, mask=mask, **options)
            mask = select(s, mask, step_density, scope=scope, keep_dense=keep_dense)
        out.append(mask)
        current = d
    return out


# ------------------------------------------------------------------------------------------
# A PaI ticket


def score_sample(data: Any, samples_per_class: int, seed: int, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: torch.device | str = "cpu") -> list[Batch]:
    """A class-balanced sample of the training set (up to `samples_per_class` per class), normalised as in training.

    No augmentation: the scores are of the network at initialisation on the data as it is.
    The images are a pure function of (seed, data set), drawn per class in label order.
    """
    from ticketx.data import Batches
    from ticketx.runtime import score_sample as sample_stream

    gen = sample_stream(seed)
    picks = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.train_y == c, as_tuple=False).reshape(-1)
        picks.append(idx[torch.randperm(idx.numel(), generator=gen)[:samples_per_class]])
    idx = torch.cat(picks)
    if idx.numel() == 0:
        raise TicketxError(f"{data.name}: no training images to score the weights with")
    b = Batches(data.train_x[idx], data.train_y[idx], batch_size=min(batch_size, idx.numel()), mean=data.mean,
                std=data.std, train=False, device=device)
    return list(b.epoch())


def pai_ticket(
    criterion: str,
    model_name: str,
    data: Any,
    densities: Sequence[float],
    *,
    seed: int = 0,
    init_seed: int | None = None,
    data_seed: int | None = None,
    samples_per_class: int = SAMPLES_PER_CLASS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    iterations: int = SYNFLOW_ITERATIONS,
    scope: str = "global",
    keep_dense: Sequence[str] = (),
    train: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    width: float = 1.0,
) -> Any:
    """A ticket found by pruning at initialisation: one round per target density, rewind point 0.

    The network is built exactly as `find` builds it (torch.manual_seed(init_seed), then
    build_model), so a PaI ticket and an IMP ticket with the same init seed share their initial
    weights. `train` overrides the model's default recipe recorded in the ticket (what
    `transfer` retrains with by default). `data` is a `ticketx.data.ImageData`. `width` multiplies
    the hidden layers (ticketx.models.width), recorded in the ticket.
    """
    from ticketx import store
    from ticketx import ticket as ticketfile
    from ticketx.models import build_model, head_name
    from ticketx.settings import resolve_train
    from ticketx.train import Steps, state_copy

    m = get(criterion)
    init_seed = seed if init_seed is None else init_seed
    data_seed = seed if data_seed is None else data_seed
    dens = [float(d) for d in densities]
    train_spec = resolve_train(model_name, dict(train or {}))
    if train_spec.label_noise:
        raise UsageError("pruning at initialisation scores the weights on true labels: --label-noise is not used here",
                         "give --label-noise to `transfer` (retraining under noise) or find a ticket with `find --label-noise`")
    from ticketx.runtime import seed_weights

    seed_weights(init_seed)
    model = build_model(model_name, data.num_classes, data.channels, data.image_size, width=width)
    head = head_name(model)
    rewind_state = state_copy(model)
    t0 = time.perf_counter()
    batches = None if m.data_free else score_sample(data, samples_per_class, data_seed, batch_size, device)
    shape = (data.channels, data.image_size, data.image_size)
    scores: dict[str, torch.Tensor] = {}
    masks = prune_at_init(criterion, model, batches, dens, scope=scope, iterations=iterations,
                          keep_dense=keep_dense, input_shape=shape, device=device, scores_out=scores)
    seconds = time.perf_counter() - t0
    steps = Steps.of(train_spec, len(data.train_y))
    prune = {
        "method": criterion,  # the old key, kept: tickets (and their fingerprints) stay as they were
        "criterion": criterion,
        "rate": None,  # no per-round rate: each round is a target density
        "densities": dens,
        "rounds": len(dens),
        "scope": scope,
        "head_rate": None,
        "keep_dense": list(keep_dense),
        "rewind": "0",
        "iterations": iterations if m.iterative else None,
        "samples_per_class": None if m.data_free else samples_per_class,
        "batch_size": None if m.data_free else batch_size,
        "temperature": GRASP_TEMPERATURE if criterion == "grasp" else None,
        "paper": m.paper,
    }
    science = {"kind": "prune-at-init", "model": model_name, "data": data.name, "image_size": data.image_size,
               "channels": data.channels, "prune": prune, "train": train_spec.model_dump(),
               "init_seed": init_seed, "data_seed": data_seed}
    if width != 1:  # tickets found before widths existed keep their fingerprints
        science["width"] = float(width)
    dense_record = {"round": 0, "density": 1.0, "layer_density": {n: 1.0 for n in masks[0]}, "collapsed": [],
                    "test_acc": None, "val_acc": None, "seconds": 0.0, "steps": 0, "history": []}
    records = [dense_record] + [
        {"round": r, "density": M.density(mk), "target_density": d, "layer_density": M.layer_densities(mk),
         "collapsed": M.collapsed(mk), "test_acc": None, "val_acc": None,
         "seconds": seconds if r == len(dens) else 0.0, "steps": 0, "history": []}
        for r, (d, mk) in enumerate(zip(dens, masks), start=1)
    ]
    meta = {
        "kind": "ticket",
        "found_by": "prune-at-init",
        "model": model_name,
        "data": data.name,
        "classes": list(data.classes),
        "num_classes": data.num_classes,
        "image_size": data.image_size,
        "channels": data.channels,
        "width": float(width),
        "head": head,
        "train": train_spec.model_dump(),
        "prune": prune,
        "seed": seed,
        "init_seed": init_seed,
        "data_seed": data_seed,
        "deterministic": False,
        "rewind_step": 0,
        "iterations_per_epoch": steps.iterations_per_epoch,
        "total_steps": steps.total,
        "rounds": records,
        "fingerprint": store.fingerprint(science),
        "spec": science,
        "device": str(device),
        "versions": store.versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return ticketfile.make(meta, masks, rewind_state, extras={"scores": scores} if scores else None)


def write_pai_ticket(criterion: str, data: str, model: str, densities: str, out: Any, *, scope: str = "global",
                     iterations: int = SYNFLOW_ITERATIONS, seed: int = 0, device: str = "auto", image_size: int | None = None,
                     data_dir: Any = None, train: Mapping[str, Any] | None = None, width: float = 1.0) -> Any:
    """`ticketx pai`: check the options, load the data, find the masks, write the ticket atomically."""
    from ticketx import store
    from ticketx import ticket as ticketfile
    from ticketx.data import load_data, parse_data
    from ticketx.models import check_model_width, model_info
    from ticketx.settings.base import density_list
    from ticketx.runtime import resolve_device

    get(criterion)
    parse_data(data)
    info = model_info(model)
    width = check_model_width(model, width)
    dens = density_list(densities)
    if scope not in ("global", "layerwise"):
        raise UsageError(f"--scope must be global or layerwise, got {scope!r}")
    dev = resolve_device(device)
    store.check_writable(out)
    images = load_data(data, data_dir, image_size=image_size or info.image_size)
    ticket = pai_ticket(criterion, model, images, dens, seed=seed, iterations=iterations, scope=scope, train=train,
                        device=dev, width=width)
    ticketfile.save(ticket, out)
    return ticket
