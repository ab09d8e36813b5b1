"""What the rows time: ticketx's own training setup (`ticketx.train.prepare`) and the baselines.

The ticketx side is never a copy: a step is `prepare(...)`'s Stepper (train()'s layout,
optimizer and MaskEnforcer), its thread count is `ticketx.threads.training_threads`, masks come
from `ticketx.pruning`. The baselines are what a user would write without ticketx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketx import masks as M
from ticketx import pruning
from ticketx.models import build_model, is_conv, prunable_names
from ticketx.settings import TrainSpec, resolve_train
from ticketx.threads import training_threads
from ticketx.train import prepare

# CIFAR-10 per-channel statistics (Krizhevsky 2009 training set): only used to normalise the
# synthetic images, so both data paths do the same arithmetic.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Setup:
    """A model ready to step, with one fixed input batch, and the CPU threads to step it with."""

    step: Callable[[], Any]
    threads: int | None
    model: nn.Module
    compile_mode: str | None = None  # the torch.compile mode of the step (None: eager)


def train_spec(model_name: str, **over: Any) -> TrainSpec:
    """The model's paper recipe with `over` applied (as `ticketx find` resolves it)."""
    return resolve_train(model_name, over)


def synthetic_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-sized uint8 images [n, 3, 32, 32] and labels 0..9 (random pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


def random_mask(model: nn.Module, density: float, seed: int = 0) -> M.Mask:
    """Exactly `density` of every prunable tensor kept at random (`ticketx.pruning.prune_random`, layerwise)."""
    params = dict(model.named_parameters())
    dense = M.ones_like({n: params[n] for n in prunable_names(model)})
    return pruning.prune_random(None, dense, 1 - density, scope="layerwise", generator=torch.Generator().manual_seed(seed))


def _fixed_batch(batch: int, device: torch.device, channels_last: bool, seed: int,
                 shape: Sequence[int] = (3, 32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (batch,), generator=g).to(device)


def ticketx_setup(name: str, batch: int, device: torch.device, *, mask: M.Mask | None = None,
                  precision: str = "fp32", channels_last: bool | None = None, seed: int = 0,
                  compile: bool | str = False, shape: Sequence[int] = (3, 32, 32)) -> Setup:
    """`name` stepped exactly as `ticketx.train.train` steps it: `prepare`'s Stepper and train()'s threads.

    `compile`: as `prepare`'s (off/auto/on or a bool; default off, the eager step)."""
    torch.manual_seed(seed)
    model = build_model(name, 10, shape[0], shape[-1])
    threads = training_threads(model, tuple(shape), batch, device)
    s = prepare(model, train_spec(name, batch_size=batch, precision=precision), mask=mask, device=device,
                channels_last=channels_last, compile=compile, sample_shape=tuple(shape))
    x, y = _fixed_batch(batch, s.device, s.channels_last, seed, shape)
    model.train()
    return Setup(lambda: s.stepper(x, y), threads, model, s.stepper.compile_mode)


def prune_setup(name: str, batch: int, device: torch.device, mask: M.Mask, threads: int | None) -> Setup:
    """The same model, layout, optimizer and Stepper, masked with torch.nn.utils.prune instead."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = build_model(name, 10, 3, 32)
    s = prepare(model, train_spec(name, batch_size=batch), device=device)  # no ticketx mask
    modules = dict(model.named_modules())
    for pname, m in mask.items():
        mod_name, _, attr = pname.rpartition(".")
        prune.custom_from_mask(modules[mod_name], attr, m.to(s.device))
    x, y = _fixed_batch(batch, s.device, s.channels_last, 0)
    model.train()
    return Setup(lambda: s.stepper(x, y), threads, model)


def plain_setup(name: str, batch: int, device: torch.device, seed: int = 0) -> Setup:
    """The textbook loop: NCHW fp32 eager, torch's default threads and optimizer, loss.item() every step."""
    torch.manual_seed(seed)
    model = build_model(name, 10, 3, 32).to(device)
    spec = train_spec(name, batch_size=batch)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    x, y = _fixed_batch(batch, device, False, seed)
    model.train()

    def step() -> float:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return Setup(step, None, model)


class ArrayImages(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's in-memory layout: HWC uint8 numpy, a PIL image per sample."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Any) -> None:
        self.data = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = [int(t) for t in y]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def torchvision_transform(mean: Sequence[float], std: Sequence[float], train: bool) -> Any:
    """The standard CIFAR pipeline: RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize."""
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def train_flops_per_image(model: nn.Module, device: torch.device) -> float:
    """Forward + backward FLOPs per 32x32 image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    fmt = torch.channels_last if is_conv(model) else torch.contiguous_format
    x = torch.randn(2, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def one_after_another(name: str, n: int, batch: int, device: torch.device, *, density: float = 1.0,
                      shape: Sequence[int] = (3, 32, 32)) -> Setup:
    """n networks stepped one after the other, each exactly as `ticketx.train` steps one (`ticketx_setup`)."""
    setups = []
    for i in range(n):
        model = build_model(name, 10, shape[0], shape[-1])
        mask = random_mask(model, density, seed=i) if density < 1 else None
        setups.append(ticketx_setup(name, batch, device, mask=mask, seed=i, shape=shape))
    return Setup(lambda: [s.step() for s in setups], setups[0].threads, setups[0].model)


def cohort_setup(name: str, n: int, batch: int, device: torch.device, *, density: float = 1.0,
                 shape: Sequence[int] = (3, 32, 32)) -> Setup:
    """The same n networks (seeds, masks, one batch each) as one cohort step: `ticketx.cohort.build_step`,
    with the thread count the cohort trainer picks (`training_threads` of n batches' work)."""
    from ticketx import cohort

    models, masks, xs, ys = [], [], [], []
    for i in range(n):
        torch.manual_seed(i)
        model = build_model(name, 10, shape[0], shape[-1])
        mask = random_mask(model, density, seed=i) if density < 1 else None
        model.to(device)
        if mask is not None:
            M.apply(model, mask)
        models.append(model)
        masks.append(mask)
        x, y = _fixed_batch(batch, device, False, i, shape)
        xs.append(x)
        ys.append(y)
    spec = train_spec(name, batch_size=batch)
    threads = training_threads(models[0], tuple(shape), batch * n, device)
    step = cohort.build_step(models, masks, spec, device)
    x, y = torch.stack(xs), torch.stack(ys)  # every network its own batch (different data seeds)
    return Setup(lambda: step(x, y, spec.lr, False), threads, models[0])
