"""Each model's training and pruning defaults, keyed by `TrainSpec` / `PruneSpec` field names.

Every training dict has all ten TrainSpec training keys so a resolved spec never silently falls
back to a generic value; the helpers return fresh dicts so no two models share one.
"""

from __future__ import annotations

from typing import Any


def adam_defaults(lr: float, iterations: int) -> dict[str, Any]:
    """Frankle & Carbin 2019 Fig. 2: Adam, batch 60, no weight decay, no lr schedule."""
    return {
        "optimizer": "adam",
        "lr": lr,
        "momentum": 0.9,  # Adam's beta1 default (Kingma & Ba 2015); F&C 2019 kept Adam's defaults
        "nesterov": False,
        "weight_decay": 0.0,
        "batch_size": 60,
        "length": f"{iterations}it",
        "milestones": [],
        "gamma": 0.1,  # unused: no milestones
        "warmup": "0",
    }


def sgd_defaults(weight_decay: float) -> dict[str, Any]:
    """open_lth's CIFAR step schedule (cifar_vgg, cifar_resnet): 160 epochs, /10 at 80 and 120."""
    return {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": weight_decay,
        "batch_size": 128,
        "length": "160ep",
        "milestones": ["80ep", "120ep"],
        "gamma": 0.1,
        # F&C 2019 sec. 4 needed lr warmup to find tickets at lr 0.1 when rewinding to
        # iteration 0; rewinding to 1ep instead (late resetting, below) makes warmup unnecessary
        # (Frankle et al. 2020), so it is off here.
        "warmup": "0",
    }


def layerwise_prune() -> dict[str, Any]:
    """Frankle & Carbin 2019 sec. 2-3: each layer pruned by itself, rewound to the original init.

    The paper prunes the output layer at half the rate (0.1); ticketx's default prunes every
    layer at the same 20% so that round r has density 0.8^r everywhere (Morcos et al. 2019's
    uniform rate). Pass head_rate=0.1 (`--head-rate 0.1`) to reproduce the paper exactly.
    """
    return {"scope": "layerwise", "rate": 0.2, "head_rate": None, "rewind": "0"}


def global_prune() -> dict[str, Any]:
    """Frankle & Carbin 2019 sec. 4 and Morcos et al. 2019: one global threshold, 20% per round,
    rewinding to 1 epoch (late resetting: Morcos et al. 2019; Frankle et al. 2020)."""
    return {"scope": "global", "rate": 0.2, "head_rate": None, "rewind": "1ep"}


def generic_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """Defaults for timm models: generic, from no paper for that architecture.

    They are the CIFAR ResNet recipe (He et al. 2016 via open_lth) as a starting point; most timm
    architectures (ViTs especially) need their own optimizer settings, set in the spec.
    """
    return sgd_defaults(weight_decay=1e-4), global_prune()
