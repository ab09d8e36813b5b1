"""The model registry: what ticketx knows about each local model (`ModelInfo`) and its builder.

Every builder takes (num_classes, in_channels, image_size) and, if its `ModelInfo.widths` says
so, a keyword `width` (see `ticketx.models.width`); it sizes all of its layers from them, so a
ticket found on one data set can be rebuilt for another (Morcos et al. 2019 transfer tickets
across data sets by swapping only the output layer). Each model also carries its paper's training
and pruning defaults (`ticketx.models.defaults`), keyed by `TrainSpec` / `PruneSpec` field names.
Look models up and build them with `ticketx.models.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of ticketx needs to know about a model before building it."""

    name: str
    image_size: int  # native input side in pixels; the data side resizes images to it
    channels: int  # native input channels (1 for MNIST nets, 3 for CIFAR nets)
    train_defaults: dict[str, Any]  # keys are TrainSpec fields
    prune_defaults: dict[str, Any]  # keys are PruneSpec fields
    paper: str  # short citation of where the defaults come from
    description: str
    widths: bool = False  # whether the builder takes the keyword `width` (a width multiplier)
    # The paper's per-layer pruning schedule (PruneSpec fields: rates, head_rate, scope), used with
    # schedule 'paper'; empty when the paper prunes every layer at one rate.
    paper_prune: dict[str, Any] = field(default_factory=dict)


# (num_classes, in_channels, image_size, *, width) -> model; without `width` unless info.widths
Builder = Callable[..., nn.Module]

MODELS: dict[str, ModelInfo] = {}
_BUILDERS: dict[str, Builder] = {}


def register(info: ModelInfo) -> Callable[[Builder], Builder]:
    """Decorator: add a builder to the registry under `info.name`."""

    def deco(builder: Builder) -> Builder:
        if info.name in MODELS:
            raise ValueError(f"model {info.name!r} registered twice")
        MODELS[info.name] = info
        _BUILDERS[info.name] = builder
        return builder

    return deco


def builder_of(name: str) -> Builder:
    """The builder registered under `name` (a local model; KeyError otherwise)."""
    return _BUILDERS[name]
