"""Cohorts: runs that share a recipe, trained together in one step (`--cohort N|auto`, `cohort:`).

A cohort is N runs of the same network architecture, recipe (optimizer, schedule, data set,
batch size) and start step. Their parameters and buffers are stacked along a new leading
dimension and one `torch.func.vmap(functional_call)` forward and one backward train all N; one
optimizer updates the stacked tensors. Everything a run has of its own stays its own slice:
weights, masks (a float mask per run, re-applied with one `_foreach_mul_` after every step, as
`train.MaskEnforcer` does), optimizer moments (SGD and Adam are elementwise, so a slice of the
stacked state is exactly that run's state), BatchNorm running statistics (stacked buffers,
updated in place under vmap), data order (a run with its own data seed gathers its own batch
from the one tensor-resident data set; runs that share a seed share the batch) and its
evaluation, train accuracy and memorisation (`train.measure_fit`, as for one run), snapshots,
checkpoint and history. Runs of one cohort train on one training set: their validation split and
label noise (`train.training_split`) are part of `signature`. Runs never mix: a run diverging to NaN or inf
changes no other run's numbers and is reported as failed once the others are recorded.

Why this mechanism (measured, README "Performance"): vmap over stacked modules works for every
registered network without per-model code; a hand-written "wide" MLP (batched matmuls) was no
faster than vmap once the linear weights are stored transposed and the optimizer is fused
(below); a grouped-conv "wide" conv net is what vmap's convolution rule runs anyway;
torch.compile of the vmapped step compiled for 88 s on CPU and then ran slower than eager. On
this project's CPU a cohort of LeNet-300-100s trains 1.40x (N = 4) to 2.2x (N = 64) as many
networks per second as one run after another; conv nets are slower in a cohort (0.23-0.69x idle),
so `auto` picks cohorts only where the benchmark shows one (`AUTO`).

Equivalence: each run follows its one-network trajectory to float tolerance, not bit for bit
(its matmuls are batched: bmm instead of addmm; the optimizer is the fused kernel, which is
bit-identical for SGD and differs in the last bits for Adam). A cohort of one network is never
formed: `train.train` keeps today's path for it. Which runs form a cohort depends only on the
inputs (the order of the runs, their architecture and start step, and `--cohort`), never on
timing, so a rerun forms the same cohorts; a killed cohort resumes from its runs' checkpoints
(the same file layout as one run's) bit-identically.

Not in a cohort (each trains alone, exactly as before): models with dropout or other stochastic
layers (one dropout stream per run cannot be drawn inside one vmapped call), fp16 (one
GradScaler would couple the runs), DDP, networks whose state has tied or extra entries, and runs
whose pruned weights are held at frozen values (`Start.frozen`, the mask-0 treatment).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketx import distributed, interrupt, runtime, store
from ticketx.errors import TicketxError, UsageError
from ticketx.models import is_conv
from ticketx.threads import cpu_threads, training_threads

MAX_COHORT = 1024

# `--cohort auto`: runs per cohort by (device kind, network kind), from `python -m benchmarks --only
# cohort` (README "Performance"). CPU (2 vCPU AMD EPYC, torch 2.14.1, idle): lenet_300_100 on 8x8
# digits trains 1.40x (N=4), 1.94x (N=16) and 2.19x (N=64) as many networks per second as one at a
# time (loaded: 1.35x, 1.92x, 2.26x); 16, not 64: at 28x28 input a cohort of 64 crosses the thread
# policy's one-thread line and measured 0.75x (16: 1.81x). conv4 and resnet20 measured 0.23-0.69x
# at N=4-64 idle (every interval below 1; loaded 0.93-1.20x, intervals across 1), so conv nets train
# alone there. CUDA: not yet measured on a GPU (benchmarks/gpu_smoke.sh prints the rows that would
# change this); a cohort of MLPs replaces N launch-bound steps by one, so they form cohorts, conv nets
# wait for the measurement. A fixed table, never a timing: a rerun forms the same cohorts.
AUTO: dict[tuple[str, str], int] = {
    ("cpu", "mlp"): 16,
    ("cpu", "conv"): 1,
    ("cuda", "mlp"): 16,
    ("cuda", "conv"): 1,
}
# `auto` forms a cohort only when it gets at least this many runs: on the CPU a cohort of 2 LeNets
# was not shown faster than two runs one after the other (benchmark 1.13x, interval 0.98-1.19; a
# probe 0.95x), 3 were (probe 1.32x), 4 clearly (1.35x, 1.31-1.41). Elsewhere: 2.
AUTO_MIN: dict[str, int] = {"cpu": 3}


def parse(value: Any) -> int | str:
    """`--cohort` / `cohort:`: 'auto' or a number of runs from 1 to MAX_COHORT."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit():
            raise UsageError(f"--cohort expects a number of runs or 'auto', got {value!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COHORT:
        raise UsageError(f"--cohort expects a number of runs from 1 to {MAX_COHORT} or 'auto', got {value!r}")
    return value


def network_kind(model: nn.Module) -> str:
    """'conv' for networks with convolutions, else 'mlp' (the two kinds `AUTO` tells apart)."""
    return "conv" if is_conv(model) else "mlp"


def size(setting: int | str, device: torch.device, model: nn.Module) -> int:
    """How many runs a cohort of `model` on `device` may hold under `setting` (an int, or 'auto': `AUTO`)."""
    if setting != "auto":
        return int(setting)
    return AUTO.get((torch.device(device).type, network_kind(model)), 1)


def _stochastic(model: nn.Module) -> str | None:
    """The first stochastic layer of `model` (dropout, drop-path) that is switched on, if any."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return name or type(m).__name__
        if "drop" in type(m).__name__.lower() and any(float(getattr(m, a, 0) or 0) > 0 for a in ("p", "drop_prob", "drop_rate")):
            return name or type(m).__name__
    return None


def alone_reason(model: nn.Module, recipe: Any, start: Any = None) -> str | None:
    """Why `model` (of the run's Start `start`) must train alone under `recipe` (None: it can join a cohort)."""
    if getattr(start, "frozen", None):
        return "its pruned weights are held at frozen values (mask-0 treatment)"
    if distributed.active():
        return "DDP trains one network per process"
    if recipe.spec.precision == "fp16":
        return "fp16 needs one GradScaler per run"
    layer = _stochastic(model)
    if layer is not None:
        return f"its stochastic layer {layer} needs a dropout stream of its own"
    names = set(dict(model.named_parameters())) | set(dict(model.named_buffers()))
    if any(k not in names for k in model.state_dict()):
        return "its state has tied or extra entries"
    return None


def signature(run: Any, model: nn.Module, recipe: Any) -> tuple:
    """What runs of one cohort must share besides the recipe: the network (its type, layers and
    tensors), the start step and their training set: with a validation split, the split; with label
    noise, the noise's seed (which labels are flipped; `train.training_split` decides both)."""
    params = tuple((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers())
    spec = recipe.spec
    split = (run.data_seed if run.split_seed is None else run.split_seed) if spec.val_split > 0 else None
    noise = spec.noise_seed_or(run.data_seed if run.noise_seed is None else run.noise_seed) if spec.label_noise > 0 else None
    return (type(model), repr(model), params, buffers, run.start_step, split, noise)


def plan(runs: Sequence[Any], recipe: Any) -> Iterator[list[tuple[Any, Any]]]:
    """The cohorts of `runs`, in order: lists of (run, its built Start); a list of one trains alone.

    Consecutive runs with the same `signature` fill a cohort up to its size (`size`); the next run
    that does not fit starts the next one. Each run is built (`run.start()`) just before it is
    placed, so at most one cohort's networks exist at a time. Depends only on the inputs.
    """
    group: list[tuple[Any, Any]] = []
    key: tuple | None = None
    limit = 1
    for run in runs:
        start = run.start()
        model = start.model
        fits = group and len(group) < limit and signature(run, model, recipe) == key
        if group and not fits:
            yield from _close(group, recipe)
            group = []
        if not group:
            limit = 1 if alone_reason(model, recipe, start) else size(recipe.cohort, recipe.device, model)
            key = signature(run, model, recipe)
        group.append((run, start))
        if limit == 1:
            yield group
            group = []
    if group:
        yield from _close(group, recipe)


def _close(group: list[tuple[Any, Any]], recipe: Any) -> Iterator[list[tuple[Any, Any]]]:
    """A full or ended group: one cohort, or each run alone when `auto` got too few runs to gain."""
    if recipe.cohort == "auto" and len(group) < AUTO_MIN.get(recipe.device.type, 2):
        for item in group:
            yield [item]
    else:
        yield group


# ---- The stacked networks -------------------------------------------------------------------


class Stack:
    """N networks of one architecture as stacked tensors: parameters (leaves the optimizer updates)
    and buffers, each [N, ...] on the training device.

    Linear weights are stored transposed ([N, in, features]: vmap's linear rule then multiplies
    contiguous matrices instead of copying a transposed view every step; measured about 1.15x per
    step for lenet_300_100); `call_params` hands functional_call the [N, out, in] views. Every
    elementwise operation (optimizer, masks) is layout-blind, and `run_tensor` undoes the layout.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        first = models[0]
        linear = {f"{n}.weight" if n else "weight" for n, m in first.named_modules() if isinstance(m, nn.Linear)}
        self.n = len(models)
        self.names = [n for n, _ in first.named_parameters()]
        self.transposed = {n for n in self.names if n in linear and first.get_parameter(n).dim() == 2}
        self.requires_grad = {n: p.requires_grad for n, p in first.named_parameters()}
        self.shapes = {n: tuple(p.shape) for n, p in first.named_parameters()}  # one network's
        self.leaves: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name in self.names:
                leaf = self.stacked([m.get_parameter(name).detach() for m in models], name, device)
                self.leaves[name] = leaf.requires_grad_(self.requires_grad[name])
            self.buffers = {n: torch.stack([m.get_buffer(n).detach().to(device) for m in models])
                            for n, _ in first.named_buffers()}
        self.state_keys = list(first.state_dict())

    def stacked(self, tensors: Sequence[torch.Tensor], name: str, device: torch.device) -> torch.Tensor:
        """Per-run tensors of parameter `name` stacked in the leaf's layout."""
        t = torch.stack([x.detach().to(device) for x in tensors])
        return t.transpose(1, 2).contiguous() if name in self.transposed else t.contiguous()

    def call_params(self) -> dict[str, torch.Tensor]:
        return {n: (v.transpose(1, 2) if n in self.transposed else v) for n, v in self.leaves.items()}

    def run_tensor(self, name: str, t: torch.Tensor, i: int) -> torch.Tensor:
        """Run i's slice of a leaf-layout tensor of parameter `name`, in the parameter's own layout."""
        x = t[i]
        return x.t() if name in self.transposed else x

    def state_copy(self, i: int) -> dict[str, torch.Tensor]:
        """Run i's state (parameters and buffers, in `state_dict` order) as contiguous CPU copies: what
        `train.state_copy` gives for one network. Copies, never views: a saved view would carry all N runs."""
        out = {}
        for k in self.state_keys:
            v = self.run_tensor(k, self.leaves[k].detach(), i) if k in self.leaves else self.buffers[k][i]
            out[k] = v.to("cpu", copy=True, memory_format=torch.contiguous_format)
        return out

    @torch.no_grad()
    def load(self, i: int, state: Mapping[str, torch.Tensor]) -> None:
        """Set run i's slice from a `state_dict` (a checkpoint's model)."""
        for k, v in state.items():
            if k in self.leaves:
                leaf = self.leaves[k]
                leaf[i].copy_(v.t() if k in self.transposed else v)
            else:
                self.buffers[k][i].copy_(v)

    @torch.no_grad()
    def write_back(self, i: int, model: nn.Module) -> None:
        """Copy run i's slice into its own network (whose result it is)."""
        for name, p in model.named_parameters():
            p.copy_(self.run_tensor(name, self.leaves[name], i))
        for name, b in model.named_buffers():
            b.copy_(self.buffers[name][i])


def stacked_masks(stack: Stack, masks: Sequence[Mapping[str, torch.Tensor] | None], device: torch.device
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(leaves, float masks) for `_foreach_mul_`: every tensor some run prunes; dense runs get ones.

    As `train.MaskEnforcer`: floats in the leaf's dtype and layout (a float multiply streams faster
    than a bool one), fully dense tensors left out; x * 1.0 is exactly x, so dense runs are unchanged.
    """
    names = [n for n in stack.names if any(m is not None and n in m and not bool(m[n].all()) for m in masks)]
    leaves, out = [], []
    for name in names:
        leaf = stack.leaves[name]
        per_run = [m[name] if m is not None and name in m else torch.ones(stack.shapes[name], dtype=torch.bool)
                   for m in masks]
        leaves.append(leaf)
        out.append(stack.stacked([m.to(leaf.dtype) for m in per_run], name, device))
    return leaves, out


def optimizer(leaves: Sequence[torch.Tensor], spec: Any, device: torch.device) -> torch.optim.Optimizer:
    """The cohort's optimizer on the stacked leaves: `train.make_optimizer`'s hyperparameters, fused
    kernels where PyTorch has them (one pass per tensor instead of one per operation: measured
    1.1-1.2x per cohort step for lenet_300_100 at N=16; bit-identical to foreach for SGD)."""
    kind = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    if spec.optimizer == "sgd":
        return torch.optim.SGD(leaves, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov and spec.momentum > 0,
                               weight_decay=spec.weight_decay, **kind)
    return torch.optim.Adam(leaves, lr=spec.lr, weight_decay=spec.weight_decay, **kind)


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class Step:
    """One training step of the cohort: one vmapped forward and loss per run, one backward of their
    sum (each run's gradient is its own loss's), one optimizer step, masks re-applied.

    Returns the per-run losses [N] as a device tensor without waiting for the device.
    """

    def __init__(self, template: nn.Module, stack: Stack, opt: torch.optim.Optimizer,
                 masks: tuple[list[torch.Tensor], list[torch.Tensor]], device: torch.device, precision: str) -> None:
        self.template, self.stack, self.opt = template, stack, opt
        self.mask_leaves, self.masks = masks
        self.device, self.precision = device, precision

        def loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(torch.func.functional_call(template, (params, buffers), (x,)), y)

        def counted(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = torch.func.functional_call(template, (params, buffers), (x,))
            return F.cross_entropy(out, y), (out.detach().argmax(dim=-1) == y).sum()

        def logits(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(template, (params, buffers), (x,))

        # in_dims: a batch shared by every run (one data seed) is passed once, unbatched.
        dims = {shared: (0, 0, None if shared else 0, None if shared else 0) for shared in (True, False)}
        self.losses = {shared: torch.func.vmap(loss, in_dims=d) for shared, d in dims.items()}
        self.counted = {shared: torch.func.vmap(counted, in_dims=d) for shared, d in dims.items()}
        self.logits = torch.func.vmap(logits, in_dims=(0, 0, None))
        self.correct: torch.Tensor | None = None  # per run: training batches' correct answers since the last read
        self.seen = 0

    def count_correct(self) -> None:
        """Also count each run's correct answers on its training batches (train.Stepper.count_correct: tracking)."""
        self.correct = torch.zeros(self.stack.n, dtype=torch.int64, device=self.device)

    def train_accuracy(self) -> list[float] | None:
        """Each run's accuracy on its training batches since the last read (a device sync), or None."""
        if self.correct is None or not self.seen:
            return None
        acc = [float(c) / self.seen for c in self.correct.tolist()]
        self.correct.zero_()
        self.seen = 0
        return acc

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float, shared: bool) -> torch.Tensor:
        for g in self.opt.param_groups:
            g["lr"] = lr
        with autocast(self.device, self.precision):
            if self.correct is None:
                losses = self.losses[shared](self.stack.call_params(), self.stack.buffers, x, y)
            else:
                losses, right = self.counted[shared](self.stack.call_params(), self.stack.buffers, x, y)
                self.correct += right
                self.seen += y.shape[-1]
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        if self.mask_leaves:
            with torch.no_grad():
                torch._foreach_mul_(self.mask_leaves, self.masks)
        return losses.detach()

    @torch.no_grad()
    def evaluate(self, batches: Any) -> list[float]:
        """Each run's top-1 accuracy over all batches (eval mode: running statistics; one host read)."""
        self.template.eval()
        correct = torch.zeros(self.stack.n, dtype=torch.int64, device=batches.device)
        n = 0
        for x, y in batches.epoch():
            with autocast(self.device, self.precision):
                out = self.logits(self.stack.call_params(), self.stack.buffers, x)
            correct += (out.argmax(dim=-1) == y).sum(dim=1)
            n += y.numel()
        self.template.train()
        return [float(c) / max(1, n) for c in correct.tolist()]


def build_step(models: Sequence[nn.Module], masks: Sequence[Mapping[str, torch.Tensor] | None], spec: Any,
               device: torch.device) -> Step:
    """The cohort step of `models` (on `device`, masks applied) with their `masks`: what the trainer and the benchmark run."""
    stack = Stack(models, device)
    template = copy.deepcopy(models[0]).to("meta")  # holds no weights: every tensor comes from the stack
    template.train()
    opt = optimizer([stack.leaves[k] for k in stack.names if stack.requires_grad[k]], spec, device)
    return Step(template, stack, opt, stacked_masks(stack, masks, device), device, spec.precision)


# ---- Optimizer state per run: the layout of one network's checkpoint -------------------------


def run_optimizer_state(opt: torch.optim.Optimizer, stack: Stack, i: int, groups: list[dict[str, Any]]
                        ) -> dict[str, Any]:
    """Run i's optimizer `state_dict` as the one-network optimizer (`train.make_optimizer`) writes it.

    `groups`: that optimizer's param_groups (hyperparameters, foreach flag and parameter indices), so
    a one-network run resumes from a cohort's checkpoint and a cohort from a one-network one.
    """
    order = [n for n in stack.names if stack.requires_grad[n]]
    state: dict[int, dict[str, Any]] = {}
    for j, name in enumerate(order):
        s = opt.state.get(stack.leaves[name])
        if not s:
            continue
        state[j] = {k: (stack.run_tensor(name, v, i).clone(memory_format=torch.contiguous_format)
                        if torch.is_tensor(v) and v.dim() > 0 else _scalar_state(v)) for k, v in s.items()}
    lr = opt.param_groups[0]["lr"]
    return {"state": state, "param_groups": [{**g, "lr": lr} for g in groups]}


def _scalar_state(v: Any) -> Any:
    # Adam's step: a CPU float32 scalar for the foreach optimizer of one network (fused keeps it on the device).
    return v.detach().to("cpu", torch.float32).clone() if torch.is_tensor(v) else v


def load_optimizer_states(opt: torch.optim.Optimizer, stack: Stack, states: Sequence[Mapping[str, Any]], device: torch.device) -> None:
    """Stack the runs' one-network optimizer states (`run_optimizer_state`'s layout) into `opt`."""
    order = [n for n in stack.names if stack.requires_grad[n]]
    for j, name in enumerate(order):
        per_run = [s["state"].get(j, s["state"].get(str(j))) for s in states]
        if not per_run[0]:
            continue
        leaf = stack.leaves[name]
        entry: dict[str, Any] = {}
        for k, v in per_run[0].items():
            if torch.is_tensor(v) and v.dim() > 0:
                entry[k] = stack.stacked([p[k] for p in per_run], name, device).to(leaf.dtype)
            else:  # one value for the cohort (every run made the same number of steps)
                entry[k] = v.detach().to(device, torch.float32).clone() if torch.is_tensor(v) else v
        opt.state[leaf] = entry


# ---- Training a cohort ----------------------------------------------------------------------


@dataclass
class Member:
    """One run of a cohort: its run, network and mask, and its own counters, history and snapshots."""

    run: Any
    start: Any
    task: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    elapsed: float = 0.0  # this run's seconds of earlier sessions (from its checkpoint)
    count: int = 0  # steps in the running loss since it was last read
    last: float = float("nan")  # the mean at the last read
    failed: str | None = None  # the divergence message, once its loss was not finite
    tracked: Any = None  # its tracker run (ticketx.trackers.TrackedRun), if a tracker is on
    since: tuple[float, int] | None = None  # (time, step) of its last tracker point


@dataclass
class Tools:
    """What the cohort trainer takes from `ticketx.train` (passed in: the trainer is the layer above)."""

    make_optimizer: Callable[..., torch.optim.Optimizer]  # one network's optimizer: its checkpoint's layout
    result: Callable[..., Any]  # TrainResult
    eval_batch_size: Callable[[torch.device, Sequence[int], bool], int]
    log_every: int
    track: Callable[..., Any]  # train.track: a run's tracker run (None when no tracker is on)
    tracked_config: Callable[..., Any]  # train.tracked_config: what the tracker shows of a run
    training_split: Callable[..., Any]  # train.training_split: (training data, validation split, label noise) of a run
    measure_fit: Callable[..., Any]  # train.measure_fit: (train accuracy, memorisation) at the end


def train_group(group: Sequence[tuple[Any, Any]], recipe: Any, reporter: Any, done: Callable[[Any, Any], None] | None,
                tools: Tools) -> list[Any]:
    """Train a cohort (from `plan`), calling `done(run, result)` as each run's result is ready; the results in order.

    Runs resume from their own checkpoints; runs whose checkpoints stand at different steps (a kill
    between two of a cohort's checkpoint writes) train as separate cohorts, each from its step.
    A run that diverged is reported after the others are done: one TicketxError naming each.
    """
    from ticketx.ui import Reporter

    reporter = reporter if reporter is not None else Reporter()
    steps = recipe.steps
    for run, _ in group:
        if run.start_step >= steps.total:
            raise UsageError(f"the rewind point (step {run.start_step}) is not before the end of training ({steps.total} steps)")
    # Every run of a cohort has the same training set (`signature`): the first run's.
    data, val, noise = tools.training_split(recipe, group[0][0])
    checkpoints = [_checkpoint(run) for run, _ in group]
    at = [ck["step"] if ck is not None else run.start_step for ck, (run, _) in zip(checkpoints, group)]
    results: dict[int, Any] = {}
    failures: list[str] = []
    for step in dict.fromkeys(at):
        part = [i for i, s in enumerate(at) if s == step]
        cohort = Cohort([group[i] for i in part], recipe, data, tools, noise)
        out = cohort.train([checkpoints[i] for i in part], step, val, reporter)
        for i, m, res in zip(part, cohort.members, out):
            if res is None:
                assert m.failed is not None
                failures.append(m.failed)
                continue
            results[i] = res
            if done is not None:
                done(group[i][0], res)
    if failures:
        raise TicketxError("; ".join(failures), "lower --lr or add --warmup")
    return [results[i] for i in range(len(group))]


def _checkpoint(run: Any) -> dict[str, Any] | None:
    """The run's checkpoint when it is this run's (same key and start step), as `train.TrainState.load` accepts it."""
    path = run.checkpoint
    ck = store.load_torch(path, "checkpoint") if path is not None and path.exists() else None  # weights_only
    if ck is not None and (ck.get("key") != run.key or ck.get("start_step") != run.start_step):
        return None
    return ck


class Cohort:
    """Runs that stand at the same step, set up to train together: the stack, its step and the runs' own state."""

    def __init__(self, group: Sequence[tuple[Any, Any]], recipe: Any, data: Any, tools: Tools, noise: Any = None) -> None:
        from ticketx.masks import apply

        self.recipe, self.data, self.tools, self.noise = recipe, data, tools, noise
        spec, device = recipe.spec, recipe.device
        self.members = [Member(run, start) for run, start in group]
        self.n = len(self.members)
        models = [m.start.model for m in self.members]
        batch = max(1, min(spec.batch_size, len(data.train_y)))
        # A cohort step is about n one-network steps of work: the thread policy of that much work.
        self.threads = training_threads(models[0], tuple(data.train_x.shape[1:]), batch * self.n, device)
        for m in self.members:
            m.start.model.to(device)
            if m.start.mask:
                apply(m.start.model, m.start.mask)  # as train.prepare: the pruned weights start at zero
            if m.run.start_step in m.run.snapshot_steps:
                m.snapshots[m.run.start_step] = {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
                                                 for k, v in m.start.model.state_dict().items()}
        self.step = build_step(models, [m.start.mask for m in self.members], spec, device)
        self.stack, self.opt = self.step.stack, self.step.opt
        # One network's optimizer layout (hyperparameters, foreach flag), for the runs' checkpoints.
        self.groups = tools.make_optimizer([p for p in models[0].parameters() if p.requires_grad], spec
                                           ).state_dict()["param_groups"]

    def resume(self, checkpoints: Sequence[dict[str, Any] | None], step: int, reporter: Any) -> None:
        """Load each run's checkpoint (all at `step`) into its slice; nothing when none has one."""
        if all(ck is None for ck in checkpoints):
            return
        for i, (m, ck) in enumerate(zip(self.members, checkpoints)):
            assert ck is not None
            self.stack.load(i, ck["model"])
            m.history, m.elapsed = ck["history"], ck["elapsed"]
            m.snapshots = {int(k): v for k, v in ck["snapshots"].items()}
            reporter.log(f"[dim]{m.run.label}: resumed from checkpoint at step {step}/{self.recipe.steps.total}[/]")
        load_optimizer_states(self.opt, self.stack, [ck["optimizer"] for ck in checkpoints if ck is not None],
                              self.recipe.device)

    def save(self, i: int, step: int, running: list[Any], seconds: float) -> None:
        """Write run i's checkpoint in one network's layout (`train.TrainState.save`: either trainer resumes it)."""
        m = self.members[i]
        store.save_torch(m.run.checkpoint, {
            "key": m.run.key, "start_step": m.run.start_step, "step": step,
            "model": self.stack.state_copy(i), "optimizer": run_optimizer_state(self.opt, self.stack, i, self.groups),
            "scaler": None, "history": m.history, "elapsed": seconds,
            "snapshots": {str(k): v for k, v in m.snapshots.items()}, "running": running,
        })

    def train(self, checkpoints: Sequence[dict[str, Any] | None], step: int, val: Any, reporter: Any) -> list[Any]:
        """Train from `step` to the end; each run's TrainResult (None for a run that diverged)."""
        from ticketx.data import Batches

        recipe, data, tools, members = self.recipe, self.data, self.tools, self.members
        spec, steps, device = recipe.spec, recipe.steps, recipe.device
        with cpu_threads(self.threads):
            self.resume(checkpoints, step, reporter)
            running = [ck.get("running") if ck is not None else None for ck in checkpoints]
            totals = [float(r[0]) if r else 0.0 for r in running]
            for m, r in zip(members, running):
                if r:  # so a resumed run logs the same losses
                    m.count, m.last = int(r[1]), float(r[2])
            reporter.log(f"[dim]cohort of {self.n} runs trained together: {', '.join(m.run.label for m in members)}[/]")
            common = dict(mean=data.mean, std=data.std, device=device, channels_last=False)
            eval_bs = tools.eval_batch_size(device, tuple(data.test_x.shape), is_conv(self.step.template))
            if device.type == "cpu":  # n networks' activations at once: keep the whole batch in cache
                eval_bs = max(16, eval_bs // self.n)
            batches = Batches(data.train_x, data.train_y, batch_size=spec.batch_size, train=True,
                              crop_padding=data.crop_padding if spec.augment else 0, flip=data.flip and spec.augment,
                              **common)
            evals = [Batches(data.test_x, data.test_y, batch_size=eval_bs, train=False, **common)]
            if val is not None and len(val[1]):
                evals.append(Batches(val[0], val[1], batch_size=eval_bs, train=False, **common))
            for m in members:
                m.task = reporter.start(m.run.label, steps.total)
                reporter.update(m.task, step)
                m.tracked = tools.track(reporter, m.run.label, tools.tracked_config(m.run, recipe, m.start),
                                        folder=m.run.folder, key=m.run.key, kind=m.run.experiment or "network")
            if any(m.tracked is not None for m in members):
                self.step.count_correct()
            started = time.perf_counter()
            for m in members:
                m.since = (started, step)
            self.at = step
            try:
                images = self._loop(step, totals, batches, evals, reporter, started)
            finally:
                for m in members:
                    if m.tracked is not None:
                        m.tracked.finish(ok=self.at >= steps.total and m.failed is None)
            wall = time.perf_counter() - started
            for m in members:
                reporter.finish(m.task)
        # The global generator as the last run alone leaves it (train.run_epochs seeds it every epoch).
        torch.manual_seed(runtime.dropout_seed(members[-1].run.data_seed, (steps.total - 1) // steps.iterations_per_epoch))
        share = wall / self.n  # a run's share of the cohort's time: the shares add up to the wall time
        results: list[Any] = []
        for i, m in enumerate(members):
            if m.failed is not None:
                results.append(None)
                continue
            self.stack.write_back(i, m.start.model)
            final = m.history[-1]
            fit: dict[str, Any] = {}
            with cpu_threads(self.threads):  # as a run alone measures it: eval mode, its whole training split
                fit["train_acc"], fit["memorised"] = tools.measure_fit(m.start.model, batches, self.noise, spec.precision)
            fit["noise"] = None if self.noise is None else self.noise.as_dict()
            results.append(tools.result(
                test_acc=final["test_acc"], val_acc=final.get("val_acc"), history=m.history, snapshots=m.snapshots,
                seconds=m.elapsed + share, steps=steps.total - m.run.start_step,
                images_per_second=images / max(1e-9, share), model=m.start.model, mask=m.start.mask, info=m.start.info,
                **fit))
        return results

    def _loop(self, step: int, totals_init: list[float], batches: Any, evals: list[Any], reporter: Any,
              started: float) -> int:
        """`train.run_epochs` with its hooks (log, snapshot, eval, checkpoint), for n runs at once; the images per run."""
        steps, members, stack = self.recipe.steps, self.members, self.stack
        ipe, log_every = steps.iterations_per_epoch, self.tools.log_every
        seeds = [m.run.data_seed for m in members]
        distinct = list(dict.fromkeys(seeds))
        shared = len(distinct) == 1
        where = [distinct.index(s) for s in seeds]
        # The running losses, summed on the device (train.RunningLoss: reading them is a device sync).
        totals = torch.tensor(totals_init, dtype=torch.float32, device=self.recipe.device)
        images = 0

        def read() -> list[float]:
            values = totals.tolist()
            for m, v in zip(members, values):
                if m.count:
                    m.last = v / m.count
                    m.count = 0
            totals.zero_()
            return [m.last for m in members]

        while step < steps.total:
            epoch = step // ipe
            # Each seed's batches: a pure function of (data seed, epoch), as for one run.
            iters = [itertools.islice(batches.epoch(runtime.data_order(s, epoch)), step - epoch * ipe, None) for s in distinct]
            epoch_end = min((epoch + 1) * ipe, steps.total)
            for got in zip(*iters):
                if step >= epoch_end:
                    break
                interrupt.check()  # a Ctrl-C/SIGTERM whose KeyboardInterrupt was swallowed stops here
                if shared:
                    x, y = got[0]
                else:
                    x = torch.stack([got[w][0] for w in where])
                    y = torch.stack([got[w][1] for w in where])
                totals += self.step(x, y, steps.schedule(step), shared).float()
                for m in members:
                    m.count += 1
                step += 1
                self.at = step
                images += got[0][1].shape[0]
                if step % log_every == 0:
                    for m, loss in zip(members, read()):
                        if m.failed is None and not math.isfinite(loss):
                            m.failed = f"{m.run.label}: training diverged (loss {loss}) at step {step}"
                        if m.failed is None:
                            reporter.update(m.task, step, epoch=f"{step / ipe:.1f}", loss=loss)
                for i, m in enumerate(members):
                    if m.failed is None and step in m.run.snapshot_steps:
                        m.snapshots[step] = stack.state_copy(i)
                evaluated = step % steps.eval_every == 0 or step == steps.total
                trained_at = None
                if evaluated:
                    losses = read()  # waits for the device: the training steps so far are done
                    trained_at = time.perf_counter()
                    self._evaluate(step, losses, evals, reporter)
                if self.step.correct is not None and (step % log_every == 0 or evaluated):
                    self._track(step, evaluated, trained_at if trained_at is not None else time.perf_counter())
            for m in members:
                if m.tracked is not None and m.failed is None:
                    m.tracked.checkpoint()
            seconds = time.perf_counter() - started
            live = [(i, m) for i, m in enumerate(members) if m.failed is None]
            for i, m in live:
                fields: dict[str, Any] = {"epoch": f"{math.ceil(step / ipe)}/{math.ceil(steps.total / ipe)}", "loss": m.last}
                if m.history and m.history[-1]["step"] == step:
                    fields["acc"] = m.history[-1]["test_acc"]
                fields["img_s"] = images * self.n / max(1e-9, seconds)  # this run's share of the time
                reporter.update(m.task, step, **fields)
            if step < steps.total and any(m.run.checkpoint is not None for _, m in live):
                values = totals.tolist()
                for i, m in live:
                    if m.run.checkpoint is not None:
                        self.save(i, step, [values[i], m.count, m.last], m.elapsed + seconds / self.n)
        return images

    def _track(self, step: int, evaluated: bool, now: float) -> None:
        """train.TrackHook for every tracked run that has not diverged. `time/step_ms` is the run's share
        of the cohort's step time (the shares add up to it), as its `seconds` are."""
        steps = self.recipe.steps
        accuracy = self.step.train_accuracy()
        for i, m in enumerate(self.members):
            if m.tracked is None or m.failed is not None:
                continue
            values: dict[str, Any] = {"train/loss": m.last, "train/lr": steps.schedule(step - 1),
                                      "train/accuracy": accuracy[i] if accuracy is not None else None,
                                      "epoch": step / steps.iterations_per_epoch}
            if m.since is not None and step > m.since[1]:
                values["time/step_ms"] = 1000 * (now - m.since[0]) / (step - m.since[1]) / self.n
            if evaluated and m.history and m.history[-1]["step"] == step:
                record = m.history[-1]
                values.update({"test/accuracy": record["test_acc"], "val/accuracy": record.get("val_acc"),
                               "density": {**m.run.info, **m.start.info}.get("density")})
            m.tracked.log(step, {k: v for k, v in values.items() if v is not None})
            m.since = (time.perf_counter(), step)

    def _evaluate(self, step: int, losses: list[float], evals: list[Any], reporter: Any) -> None:
        """train.EvalHook for every run that has not diverged: test (and validation) accuracy into its history."""
        ipe = self.recipe.steps.iterations_per_epoch
        accs = [self.step.evaluate(b) for b in evals]
        for i, m in enumerate(self.members):
            if m.failed is not None:
                continue
            record = {"step": step, "epoch": round(step / ipe, 4), "loss": losses[i], "test_acc": accs[0][i]}
            if len(accs) > 1:
                record["val_acc"] = accs[1][i]
            m.history.append(record)
            reporter.update(m.task, step, epoch=f"{step / ipe:.1f}", loss=losses[i], acc=record["test_acc"])
