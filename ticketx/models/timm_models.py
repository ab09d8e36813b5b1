"""timm models, by name: 'timm:<timm model name>', randomly initialised, with generic defaults.

timm is imported inside each function, never at module level: it is slow to import (~3 s), and
`import ticketx.models` (hence `ticketx --help`) must not pay for it.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from ticketx.errors import UsageError
from ticketx.models.defaults import generic_defaults
from ticketx.models.registry import ModelInfo

TIMM_PREFIX = "timm:"


def is_timm_model(name: str) -> bool:
    """Whether timm has a model of this name (without the prefix)."""
    import timm

    return bool(timm.is_model(name))


def timm_info(name: str) -> ModelInfo:
    """The ModelInfo of 'timm:<name>': its pretrained config's input size, generic defaults."""
    import timm

    arch = name[len(TIMM_PREFIX) :]
    if not arch or not timm.is_model(arch):
        # did_you_mean() would list all ~1,400 timm names; name the closest few instead.
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.5)
        msg = f"unknown timm model {arch!r}"
        if close:
            msg += "; did you mean " + " or ".join(repr(TIMM_PREFIX + c) for c in close) + "?"
        raise UsageError(msg, hint="timm.list_models() lists the names; pattern: 'timm:resnet18'")
    cfg = timm.get_pretrained_cfg(arch)
    input_size = getattr(cfg, "input_size", None) if cfg is not None else None
    channels, image_size = (input_size[0], input_size[-1]) if input_size else (3, 224)
    train, prune = generic_defaults()
    return ModelInfo(
        name=name,
        image_size=int(image_size),
        channels=int(channels),
        train_defaults=train,
        prune_defaults=prune,
        paper="generic defaults (CIFAR ResNet recipe), not from a paper for this model",
        description=f"timm {arch}, randomly initialised",
        widths=False,  # timm builds each architecture at its published width
    )


def build_timm(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A freshly initialised 'timm:<name>'; its weights depend only on torch's global seed."""
    import timm

    arch = name[len(TIMM_PREFIX) :]
    kwargs: dict[str, Any] = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels)
    rng = torch.random.get_rng_state()
    try:
        # Models with a fixed token grid (ViTs) must be told the size; others reject the keyword.
        return timm.create_model(arch, img_size=image_size, **kwargs)
    except TypeError as e:
        if "img_size" not in str(e):
            raise
    # The failed attempt may have drawn random numbers: restart from the same state so the
    # weights depend only on the seed.
    torch.random.set_rng_state(rng)
    return timm.create_model(arch, **kwargs)
