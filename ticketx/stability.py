"""Stability to SGD noise: linear mode connectivity of a ticket (Frankle et al., ICML 2020).

Frankle, Dziugaite, Roy & Carbin 2020, "Linear mode connectivity and the lottery ticket
hypothesis": train two copies of a network from the same weights with different SGD noise (data
order and augmentation), evaluate the networks on the straight line between the two results,
and report the error barrier, the highest error along the path minus the mean error of the two
endpoints. A network is stable when the barrier is about zero; IMP subnetworks reach full
accuracy only when they are stable (from initialisation on MNIST; from a rewind point early in
training for larger settings).

Here the two copies start at the ticket's rewind point, masked as the ticket's round, and
differ only in the data seed (`train`'s data order and augmentation are a pure function of it);
both use the ticket's training recipe. Masks are applied to every interpolated network
(interpolating two masked networks keeps pruned weights at zero; applying the mask makes sure).

Batch norm: an interpolated network's running statistics are the interpolated statistics of
the endpoints, which are not the statistics of its own activations, and its error is then too
high (Jordan et al., ICLR 2023, "REPAIR"). Frankle et al. 2020 do not say that they recompute
them (not verified against their code). `bn_reset` (default: on for networks with batch norm)
re-estimates the running statistics of every network on the path on a few unaugmented training
batches; the result records which was done, and `bn_reset=False` evaluates as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ticketx import masks as M
from ticketx import store
from ticketx.errors import UsageError
from ticketx.models import has_batch_norm
from ticketx.runtime import evaluation_subset

# Frankle et al. 2020 §3 call a network stable when its error barrier is under 2 percentage
# points (their threshold for "stable"; the barrier of a truly stable network is about 0).
STABLE_BARRIER = 0.02
POINTS = 11  # alpha = 0, 0.1, ..., 1
BN_RESET_BATCHES = 20  # training batches to re-estimate running statistics on


def interpolate(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * a + alpha * b for every floating tensor; integer buffers (batch counts) from a."""
    if set(state_a) != set(state_b):
        raise UsageError("the two networks do not have the same tensors")
    out = {}
    for k, a in state_a.items():
        b = state_b[k]
        if a.shape != b.shape:
            raise UsageError(f"{k}: {tuple(a.shape)} vs {tuple(b.shape)}")
        out[k] = torch.lerp(a, b.to(a.dtype), float(alpha)) if a.is_floating_point() else a.clone()
    return out


def barrier(errors: Sequence[float]) -> float:
    """Error barrier: the highest error along the path minus the mean of the two endpoints' errors (>= 0)."""
    if len(errors) < 2:
        raise ValueError("a path needs at least its two endpoints")
    return float(max(errors) - (errors[0] + errors[-1]) / 2)


@torch.no_grad()
def reset_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Re-estimate every batch-norm layer's running mean and variance on `batches` (a plain average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m, m.momentum) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same (equal batch sizes: every image)
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was_training)


def path_errors(
    model: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    batches: Any,
    points: int = POINTS,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    bn_reset: Any = None,
    precision: str = "fp32",
) -> list[float]:
    """Top-1 error on `batches` (a `ticketx.data.Batches`) at `points` evenly spaced alphas from a to b.

    `bn_reset`: batches to re-estimate batch-norm statistics on at every point (a sequence, so it
    can be read more than once), or None to evaluate the interpolated statistics as they are.
    The model is left holding the last point's weights.
    """
    from ticketx.train import evaluate

    if points < 2:
        raise UsageError(f"a path needs at least 2 points, got {points}")
    dev = next(model.parameters()).device
    errors = []
    for i in range(points):
        alpha = i / (points - 1)
        model.load_state_dict(interpolate(state_a, state_b, alpha))
        if mask is not None:
            M.apply(model, mask)
        model.to(dev)
        if bn_reset is not None:
            reset_bn(model, bn_reset)
        errors.append(1.0 - evaluate(model, batches, precision))
    return errors


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=evaluation_subset(seed))[:n]
    return x[idx], y[idx]


@dataclass
class StabilityJob:
    """Stability analyses set up: every copy to train (`runs`, with the recipe and the tensors they keep),
    and `finish`, which measures the paths from the copies' outcomes (in the order of `runs`). Jobs
    of one ticket's recipe can hand their runs to the trainer together (a study's cohorts of cells)."""

    runs: list[Any]
    recipe: Any
    names: list[str]
    measure: Callable[[list[Any]], dict[str, Any]]

    def finish(self, outcomes: list[Any]) -> dict[str, Any]:
        return self.measure(outcomes)

    def train(self, reporter: Any = None) -> dict[str, Any]:
        """Train the copies not done yet (one call to the trainer) and measure."""
        from ticketx.runs import ensure

        return self.finish(ensure(self.runs, self.recipe, reporter, names=self.names))


def stability(ticket: Any, round: int, data: Any, train_spec: Any = None, *, reporter: Any = None,
              **kw: Any) -> dict[str, Any]:
    """Instability analysis of one round of a ticket on `data` (an ImageData with the ticket's classes).

    Trains two copies from the rewind point with data seeds `seeds` (train_spec: None = the
    ticket's own recipe), then measures train and test error at `points` alphas between them.
    `train_eval_samples` limits the train-error evaluation to a fixed random subset (None = all).
    `work`: a folder where the copies keep their checkpoints and results (resumable), or None.
    `cohort`: 2 or 'auto' trains the two copies together in one step (ticketx.cohort); 1 one after the other.
    The other options: `prepare`.
    """
    return prepare(ticket, round, data, train_spec, **kw).train(reporter)


def prepare(
    ticket: Any,
    round: int,
    data: Any,
    train_spec: Any = None,
    *,
    seeds: tuple[int, int] = (0, 1),
    device: str | torch.device = "cpu",
    points: int = POINTS,
    bn_reset: bool | None = None,
    bn_reset_batches: int = BN_RESET_BATCHES,
    train_eval_samples: int | None = None,
    work: Any = None,
    cohort: int | str = 1,
) -> StabilityJob:
    """`stability` set up without training anything: the two copies' runs and the measurement of their path."""
    from ticketx.models import build_model
    from ticketx.settings import TrainSpec
    from ticketx.ticket import width_of
    from ticketx.train import Recipe, Run, Start

    meta = ticket.meta
    a_seed, b_seed = seeds
    if a_seed == b_seed:
        raise UsageError(f"the two copies need different data seeds, got {seeds}")
    if data.num_classes != meta["num_classes"]:
        raise UsageError(f"{data.name} has {data.num_classes} classes; the ticket was found with {meta['num_classes']}")
    spec = train_spec if train_spec is not None else TrainSpec(**meta["train"])
    mask = ticket.mask(round)
    rewind_step = int(meta["rewind_step"])
    dev = torch.device(device)
    width = width_of(meta)
    # With label noise, both copies train on the very labels the ticket's search trained on.
    noise_seed = int(meta.get("label_noise", {}).get("seed", meta.get("data_seed", 0)))

    def copy() -> Start:
        net = build_model(meta["model"], meta["num_classes"], meta["channels"], meta["image_size"], width=width)
        net.load_state_dict(ticket.rewind)
        return Start(net, mask)

    # Both copies hold out the validation split the ticket's search held out (its data seed), so
    # neither trains on images its recipe kept for validation.
    key = store.fingerprint({"stability": meta.get("fingerprint"), "round": round, "train": spec.model_dump()})
    runs = [Run(key=f"{key}-{s}", start=copy, folder=None if work is None else Path(work) / f"copy-{i + 1}",
                label=f"stability copy {i + 1}/2 (data seed {s})", start_step=rewind_step, data_seed=s,
                split_seed=int(meta.get("data_seed", 0)), noise_seed=noise_seed, experiment="stability", keep_weights=True,
                config={"stability": meta.get("fingerprint"), "round": round, "train": spec.model_dump(), "data_seed": s},
                info={"copy": i + 1, "data_seed": s})
            for i, s in enumerate((a_seed, b_seed))]
    names = list(ticket.rewind)  # every tensor of the state: the path interpolates the whole network

    def measure(outcomes: list[Any]) -> dict[str, Any]:
        return _measure(ticket, round, data, spec, outcomes, dev=dev, width=width, seeds=(a_seed, b_seed),
                        points=points, bn_reset=bn_reset, bn_reset_batches=bn_reset_batches,
                        train_eval_samples=train_eval_samples)

    return StabilityJob(runs, Recipe.of(data, spec, dev, cohort=cohort), names, measure)


def _measure(ticket: Any, round: int, data: Any, spec: Any, outcomes: list[Any], *, dev: torch.device, width: float,
             seeds: tuple[int, int], points: int, bn_reset: bool | None, bn_reset_batches: int,
             train_eval_samples: int | None) -> dict[str, Any]:
    """The error along the path between the two trained copies (`outcomes`), and its barriers."""
    from ticketx.data import Batches
    from ticketx.models import build_model, is_conv
    from ticketx.train import eval_batch_size

    meta = ticket.meta
    a_seed, b_seed = seeds
    mask = ticket.mask(round)
    rewind_step = int(meta["rewind_step"])
    ends = [o.weights for o in outcomes]
    accs = [o.record["test_acc"] for o in outcomes]
    model = build_model(meta["model"], meta["num_classes"], meta["channels"], meta["image_size"], width=width)
    model.to(dev)
    use_bn = has_batch_norm(model) if bn_reset is None else bool(bn_reset and has_batch_norm(model))
    ebs = eval_batch_size(dev, tuple(data.test_x.shape), is_conv(model))
    tx, ty = _subset(data.train_x, data.train_y, train_eval_samples, a_seed)
    evals = {
        "train": Batches(tx, ty, batch_size=ebs, mean=data.mean, std=data.std, train=False, device=dev),
        "test": Batches(data.test_x, data.test_y, batch_size=ebs, mean=data.mean, std=data.std, train=False, device=dev),
    }
    bn_batches = None
    if use_bn:
        bx, by = _subset(data.train_x, data.train_y, bn_reset_batches * spec.batch_size, b_seed)
        bn_batches = list(Batches(bx, by, batch_size=min(spec.batch_size, len(by)), mean=data.mean, std=data.std,
                                  train=False, device=dev, drop_last=True).epoch())
    errors = {k: path_errors(model, ends[0], ends[1], b, points, mask=mask, bn_reset=bn_batches, precision=spec.precision)
              for k, b in evals.items()}
    result = {
        "round": round,
        "density": ticket.rounds[round]["density"],
        "ticket": meta.get("fingerprint"),
        "model": meta["model"],
        "data": data.name,
        "rewind_step": rewind_step,
        "seeds": [a_seed, b_seed],
        "alphas": [i / (points - 1) for i in range(points)],
        "train_error": errors["train"],
        "test_error": errors["test"],
        "train_barrier": barrier(errors["train"]),
        "test_barrier": barrier(errors["test"]),
        "endpoint_test_acc": accs,
        "batch_norm": (f"re-estimated on {len(bn_batches)} training batches at every point" if bn_batches
                       else ("interpolated statistics as they are" if has_batch_norm(model) else "none in the model")),
        "train_eval_samples": len(ty),
        "train": spec.model_dump(),
    }
    result["stable"] = result["test_barrier"] <= STABLE_BARRIER
    return result


def stability_pairs(ticket: Any, round: int, data: Any, train_spec: Any = None, *, seeds: Sequence[int] = (0, 1),
                    work: Any = None, reporter: Any = None, **kw: Any) -> dict[str, Any]:
    """`stability` for each pair of consecutive seeds (s0, s1), (s2, s3), ...: one barrier per pair,
    and their mean with a 95% t interval over the pairs (a barrier is a random quantity: one pair
    is one measurement of it). The result is the first pair's fields, the barriers replaced by
    their means, plus `pairs` (every pair's result) and `*_barrier_interval`. Stable: the upper
    end of the test barrier's interval is within STABLE_BARRIER (one pair: its barrier)."""
    return prepare_pairs(ticket, round, data, train_spec, seeds=seeds, work=work, **kw).train(reporter)


def prepare_pairs(ticket: Any, round: int, data: Any, train_spec: Any = None, *, seeds: Sequence[int] = (0, 1),
                  work: Any = None, **kw: Any) -> StabilityJob:
    """`stability_pairs` set up without training: every pair's copies in one job (one call to the trainer,
    pair by pair, so with `cohort` above 1 all the copies of a round can train together)."""
    seeds = [int(x) for x in seeds]
    if len(seeds) < 2 or len(seeds) % 2 or len(set(seeds)) != len(seeds):
        raise UsageError(f"stability needs an even number of different data seeds (pairs of copies), got {seeds}")
    jobs = []
    for i in range(0, len(seeds), 2):
        where = None if work is None else (Path(work) if i == 0 else Path(work) / f"pair-{i // 2 + 1}")
        jobs.append(prepare(ticket, round, data, train_spec, seeds=(seeds[i], seeds[i + 1]), work=where, **kw))

    def measure(outcomes: list[Any]) -> dict[str, Any]:
        pairs = [job.finish(outcomes[2 * j:2 * j + 2]) for j, job in enumerate(jobs)]
        return _combine(pairs, seeds)

    return StabilityJob([r for job in jobs for r in job.runs], jobs[0].recipe, jobs[0].names, measure)


def _combine(pairs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The pairs' results as one: the first pair's fields, barriers replaced by their means and intervals."""
    from ticketx.stats import interval

    out = dict(pairs[0])
    for key in ("train_barrier", "test_barrier"):
        iv = interval([p[key] for p in pairs])
        out[key] = iv.mean
        out[f"{key}_interval"] = iv.as_dict()
    out["seeds"] = seeds
    out["pairs"] = pairs
    high = out["test_barrier_interval"]["high"]
    out["stable"] = (high if high is not None else out["test_barrier"]) <= STABLE_BARRIER
    return out


def path_plot(result: Mapping[str, Any], path: Any) -> Any:
    """PNG: train and test error (%) along the linear path between the two trained copies."""
    from pathlib import Path

    from matplotlib.figure import Figure

    from ticketx.report import save_png

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = result["alphas"]
    for key, label in (("train_error", "train"), ("test_error", "test")):
        bar = result[key.replace("error", "barrier")]
        ax.plot(xs, [100 * e for e in result[key]], marker="o", markersize=3, label=f"{label} (barrier {100 * bar:.2f} points)")
    ax.set_xlabel("interpolation α (0 = copy 1, 1 = copy 2)")
    ax.set_ylabel("error (%)")
    ax.set_title(f"{result.get('model', '')} round {result['round']} ({100 * result['density']:.2f}% weights remaining): "
                 f"linear interpolation", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    save_png(fig, path)
    return path


def run_stability(ticket: Any, round_: int | None, seeds: str, train_spec: Any, *, points: int = POINTS,
                  device: str = "auto", data_dir: Any = None, reporter: Any = None, cohort: int | str = 1) -> dict[str, Any]:
    """`ticketx stability`: parse the seeds, load the ticket's data set, run `stability`."""
    from ticketx.data import load_data
    from ticketx.settings.base import as_list
    from ticketx.runtime import resolve_device

    parts = as_list(seeds)
    if len(parts) < 2 or len(parts) % 2 or not all(str(p).isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise UsageError(f"--seeds expects an even number of different data-order seeds like '0,1' or '0,1,2,3' "
                         f"(one pair of copies per two seeds), got {seeds!r}")
    r = ticket.num_rounds if round_ is None else round_
    if not 0 <= r <= ticket.num_rounds:
        raise UsageError(f"round {r} is not in the ticket (rounds 0..{ticket.num_rounds})")
    dev = resolve_device(device)
    m = ticket.meta
    data = load_data(m["data"], data_dir, image_size=m["image_size"], channels=m["channels"])
    return stability_pairs(ticket, r, data, train_spec, seeds=[int(p) for p in parts], device=dev, points=points,
                           reporter=reporter, cohort=cohort)
