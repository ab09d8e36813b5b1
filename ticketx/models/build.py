"""Look a model up (`model_info`) and build it (`build_model`): a local model from the registry
or any timm model as 'timm:<name>', checked against its input size; and what the registry lists
(`model_rows`, `prunable_names_of`), from models built on the meta device."""

from __future__ import annotations

import copy
import difflib
import warnings
from typing import Any, Callable

import torch
from torch import nn

from ticketx.errors import UsageError, did_you_mean
from ticketx.models.inputs import input_problem, smallest_size
from ticketx.models.prunable import prunable_names
from ticketx.models.registry import MODELS, ModelInfo, builder_of
from ticketx.models.timm_models import TIMM_PREFIX, build_timm, is_timm_model, timm_info
from ticketx.models.width import check_width


def is_conv(model: nn.Module) -> bool:
    """Whether `model` has convolutions: a conv net (the CPU evaluation batch, channels_last and the
    cohort size depend on it), else a fully connected one."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def has_batch_norm(model: nn.Module) -> bool:
    """Whether `model` has batch norm layers (folded for evaluation; re-estimated along a stability path)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name` (a local model or 'timm:<name>'); a copy, safe to change."""
    if name.startswith(TIMM_PREFIX):
        return timm_info(name)
    if name not in MODELS:
        hint = "timm models are named 'timm:<name>', e.g. 'timm:resnet18'"
        # timm is slow (~3 s) to import: asked only when the name is not a near-miss of a local model
        if not difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.5) and is_timm_model(name):
            hint = f"{name!r} is a timm model: use 'timm:{name}'"
        raise UsageError(did_you_mean(name, list(MODELS), "model"), hint=hint)
    return copy.deepcopy(MODELS[name])


def _local(name: str, info: ModelInfo, width: float) -> Callable[[int, int, int], nn.Module]:
    """`build(num_classes, in_channels, image_size)` for a local model at `width`."""
    build = builder_of(name)
    if info.widths:
        return lambda c, ch, size: build(c, ch, size, width=width)
    return build


def width_problem(name: str, width: object) -> str | None:
    """Why model `name` cannot be built at `width` (a positive number), or None: the one place that rule lives."""
    if check_width(width) == 1 or model_info(name).widths:
        return None
    why = "timm builds it at its published width" if name.startswith(TIMM_PREFIX) else "its builder takes none"
    return f"{name} has no width option: {why}"


def check_model_width(name: str, width: object) -> float:
    """`width` as a float, or a one-line UsageError when model `name` cannot take it."""
    problem = width_problem(name, width)
    if problem:
        takes = ", ".join(n for n, i in MODELS.items() if i.widths)
        raise UsageError(problem, hint=f"width 1, or a model that has one: {takes}")
    return float(width)  # type: ignore[arg-type]


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int | None = None,
    *,
    width: float = 1.0,
) -> nn.Module:
    """Build a freshly initialised model; `image_size=None` means the model's native size.

    `width` multiplies every hidden layer's channel or unit count (`ticketx.models.width`); 1 is
    the published model, and the only width of a model whose ModelInfo.widths is False (timm's).
    Weights depend only on torch's global seed. Sizes a model cannot take (too small for its
    pools, or so small that conv kernels would hang over padding only) raise UsageError.
    """
    info = model_info(name)
    size = info.image_size if image_size is None else image_size
    checks = (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", size))
    for what, value in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{what} must be a positive integer, got {value!r}")
    width = check_model_width(name, width)

    if name.startswith(TIMM_PREFIX):
        model = build_timm(name, num_classes, in_channels, size)
        found = input_problem(model, in_channels, size)
        if found is not None:
            fatal, why = found
            if fatal:
                raise UsageError(f"{name} cannot take {size} px images: {why}")
            # timm architectures are the user's own choice: warn rather than refuse.
            warnings.warn(f"{name} at {size} px: {why}; consider a larger image_size", stacklevel=2)
        return model

    build = _local(name, info, width)
    problem: str | None = None
    try:
        model = build(num_classes, in_channels, size)
        found = input_problem(model, in_channels, size)
        problem = found[1] if found else None
    except UsageError as e:
        problem = str(e)
    if problem:
        smallest = smallest_size(lambda s: build(2, in_channels, s), in_channels, size)
        hint = f"use image_size >= {smallest}" if smallest else None
        raise UsageError(f"{name} cannot take {size} px images: {problem}", hint=hint)
    return model


def prunable_names_of(
    name: str, in_channels: int, image_size: int, *, width: float = 1.0
) -> list[str] | None:
    """Prunable tensor names of model `name`, built on the meta device (no memory, no random
    numbers drawn); None when the model cannot be built at that size."""
    try:
        with torch.device("meta"):
            return prunable_names(build_model(name, 10, in_channels, image_size, width=width))
    except Exception:  # noqa: BLE001 - sizes a model cannot take are reported when it is built for real
        return None


def model_rows() -> list[dict[str, Any]]:
    """One row per local model for `ticketx models`; weights counted for 10 classes."""
    rows = []
    for name, info in MODELS.items():
        with torch.device("meta"):  # shapes only: no memory, no random numbers drawn
            model = build_model(name, 10, info.channels)
        params = dict(model.named_parameters())
        rows.append(
            {
                "name": name,
                "image_size": info.image_size,
                "channels": info.channels,
                "prunable_weights": sum(params[n].numel() for n in prunable_names(model)),
                "paper": info.paper,
                "description": info.description,
            }
        )
    return rows
