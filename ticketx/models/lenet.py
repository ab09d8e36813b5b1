"""LeNet-300-100 (Frankle & Carbin 2019 Fig. 2; LeCun et al. 1998)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ticketx.models.defaults import adam_defaults, layerwise_prune
from ticketx.models.registry import ModelInfo, register
from ticketx.models.weight_init import glorot_init
from ticketx.models.width import widen


class LeNet(nn.Module):
    """Fully connected net: flatten, hidden ReLU layers, linear output."""

    head_layer: ClassVar[str] = "fc"

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, hidden: tuple[int, ...]
    ) -> None:
        super().__init__()
        sizes = [in_channels * image_size * image_size, *hidden]
        self.fc_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.fc = nn.Linear(sizes[-1], num_classes)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
        return self.fc(x)


@register(
    ModelInfo(
        name="lenet_300_100",
        image_size=28,
        channels=1,
        train_defaults=adam_defaults(lr=1.2e-3, iterations=50_000),
        prune_defaults=layerwise_prune(),
        # Frankle & Carbin 2019, Fig. 2: fully-connected layers at 20% per round, the output at 10%
        paper_prune={"scope": "layerwise", "rates": {"linear": 0.2}, "head_rate": 0.1},
        paper="Frankle & Carbin 2019 (ICLR), Fig. 2",
        description="MLP 784-300-100-10 for MNIST (LeNet-300-100)",
        widths=True,
    )
)
def _lenet_300_100(num_classes: int, in_channels: int, image_size: int, *, width: float) -> nn.Module:
    hidden = (widen(300, width), widen(100, width))
    return LeNet(num_classes, in_channels, image_size, hidden=hidden)
