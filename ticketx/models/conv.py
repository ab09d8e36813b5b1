"""Conv-2/4/6 (Frankle & Carbin 2019 Fig. 2): VGG-like (Simonyan & Zisserman 2015) 3x3 conv
stacks, no batch norm, then FC 256-256-out."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ticketx.errors import UsageError
from ticketx.models.defaults import adam_defaults, layerwise_prune
from ticketx.models.registry import ModelInfo, register
from ticketx.models.weight_init import glorot_init
from ticketx.models.width import LayerPlan, widen, widen_plan


class ConvNet(nn.Module):
    """Conv-2/4/6: 3x3 conv+ReLU stacks with 2x2 max pools, then two FC layers (256 units each
    at width 1)."""

    head_layer: ClassVar[str] = "fc"

    def __init__(
        self,
        plan: LayerPlan,
        num_classes: int,
        in_channels: int,
        image_size: int,
        fc: tuple[int, int] = (256, 256),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
                side //= 2
            else:
                assert isinstance(spec, int)
                layers += [nn.Conv2d(channels, spec, kernel_size=3, padding=1), nn.ReLU()]
                channels = spec
        if side < 1:
            raise UsageError(f"{image_size} px is too small for {plan.count('M')} 2x2 max pools")
        self.features = nn.Sequential(*layers)
        # The first FC layer's width follows the input size: 16384 inputs for Conv-2 at 32 px.
        self.fc_layers = nn.ModuleList(
            [nn.Linear(channels * side * side, fc[0]), nn.Linear(fc[0], fc[1])]
        )
        self.fc = nn.Linear(fc[1], num_classes)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
        return self.fc(x)


_CONV_PLANS: dict[str, LayerPlan] = {
    "conv2": [64, 64, "M"],
    "conv4": [64, 64, "M", 128, 128, "M"],
    "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
}


# Frankle & Carbin 2019, Fig. 2 and appendix: conv layers pruned at 10% per round (Conv-2, Conv-4)
# or 15% (Conv-6), fully-connected at 20%, the output layer at 10%, each layer by itself.
_PAPER_CONV_RATE = {"conv2": 0.1, "conv4": 0.1, "conv6": 0.15}


def _register_conv(name: str, lr: float, iterations: int) -> None:
    # prune_defaults: one rate for every layer (Morcos et al. 2019's uniform 20%) unless
    # schedule: paper, which gives the paper's per-layer-kind rates (paper_prune).
    info = ModelInfo(
        name=name,
        image_size=32,
        channels=3,
        train_defaults=adam_defaults(lr=lr, iterations=iterations),
        prune_defaults=layerwise_prune(),
        paper_prune={"scope": "layerwise", "rates": {"conv": _PAPER_CONV_RATE[name], "linear": 0.2}, "head_rate": 0.1},
        paper="Frankle & Carbin 2019 (ICLR), Fig. 2",
        description=f"Conv-{name[-1]} for CIFAR-10: 3x3 convs {_CONV_PLANS[name]}, FC 256-256",
        widths=True,
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int, *, width: float) -> nn.Module:
        plan = widen_plan(_CONV_PLANS[name], width)
        fc = (widen(256, width), widen(256, width))
        return ConvNet(plan, num_classes, in_channels, image_size, fc=fc)


# Adam learning rates and lengths: F&C 2019 Fig. 2 (Conv-2 2e-4 / 20K it, Conv-4 3e-4 / 25K,
# Conv-6 3e-4 / 30K).
_register_conv("conv2", lr=2e-4, iterations=20_000)
_register_conv("conv4", lr=3e-4, iterations=25_000)
_register_conv("conv6", lr=3e-4, iterations=30_000)
