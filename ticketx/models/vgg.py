"""CIFAR VGG (open_lth `cifar_vgg`, used by Frankle & Carbin 2019 sec. 4 and Morcos et al. 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ticketx.models.defaults import global_prune, sgd_defaults
from ticketx.models.registry import ModelInfo, register
from ticketx.models.weight_init import kaiming_init
from ticketx.models.width import LayerPlan, widen_plan


class _ConvBN(nn.Module):
    """3x3 conv, batch norm, ReLU. The conv keeps its bias, as in open_lth."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)  # batch norm's backward needs its input, not its output


class CifarVGG(nn.Module):
    """VGG for 32 px images: conv-BN-ReLU stacks, 4 max pools, global average pool, one Linear.

    open_lth drops VGG's last pool and its 4096-wide FC stack; its 2x2 average pool over the final
    2x2 map at 32 px is a global average pool, which is what we use so other sizes work too.
    """

    head_layer: ClassVar[str] = "fc"

    def __init__(self, plan: LayerPlan, num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(spec, int)
                layers.append(_ConvBN(channels, spec))
                channels = spec
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)
        return self.fc(x)


# open_lth cifar_vgg plans: Simonyan & Zisserman 2015 configurations A, D, E minus the last pool.
_VGG_PLANS: dict[str, LayerPlan] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512],
}  # fmt: skip


def _register_vgg(name: str) -> None:
    # train: F&C 2019 sec. 4 / open_lth: SGD 0.1, momentum 0.9, wd 1e-4, 160 epochs, /10 at 80
    # and 120; batch 128 as in open_lth (F&C used 64). prune: global 0.2 with the head pruned at
    # the same rate (open_lth instead leaves `fc.weight` dense; set keep_dense to match it).
    info = ModelInfo(
        name=name,
        image_size=32,
        channels=3,
        train_defaults=sgd_defaults(weight_decay=1e-4),
        prune_defaults=global_prune(),
        paper="Frankle & Carbin 2019 (ICLR) sec. 4; open_lth cifar_vgg; Morcos et al. 2019",
        description=f"VGG-{name[3:]} with batch norm for CIFAR (open_lth cifar_vgg_{name[3:]})",
        widths=True,
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int, *, width: float) -> nn.Module:
        return CifarVGG(widen_plan(_VGG_PLANS[name], width), num_classes, in_channels)


for _name in _VGG_PLANS:
    _register_vgg(_name)
