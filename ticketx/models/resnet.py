"""ResNets (He et al. 2016): the CIFAR ResNet-20/56 and torchvision's ResNet-18/50.

Width: the CIFAR ResNets follow Zagoruyko & Komodakis 2016 (Wide Residual Networks, BMVC),
whose WRN-n-k has 16k/32k/64k channels in its three stages; here every stage width is
`widen(16|32|64, width)`, so width k is their widening factor k. Unlike WRN (a 16-channel stem
whatever k), the stem is as wide as the first stage, as in open_lth's `cifar_resnet_N_W`: the
first stage keeps its identity shortcuts and the network the same tensors at every width. The
torchvision ResNets scale their base planes the same way: stem and stages at
`widen(64|128|256|512, width)` (x4 at a Bottleneck's output, as at width 1).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ticketx.models.defaults import global_prune, sgd_defaults
from ticketx.models.prunable import HEAD_ATTR
from ticketx.models.registry import ModelInfo, register
from ticketx.models.weight_init import kaiming_init
from ticketx.models.width import widen

# --------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016 sec. 4.2; open_lth `cifar_resnet`).


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers around a shortcut.

    Where the shape changes the shortcut is a 1x1 conv + BN (He et al. 2016 option B, as in
    open_lth), not the zero-padding option A that He et al. used on CIFAR.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place: batch norm's and the add's backward need their inputs, not their outputs, so the
        # ReLUs and the residual add may overwrite them: the same floats, fewer passes over memory
        # (resnet20's CPU step 1.05-1.10x faster, bit for bit the same losses and weights).
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class CifarResNet(nn.Module):
    """ResNet-(6n+2): 3x3 stem, three stages of n blocks (16/32/64 channels at width 1), global
    pool, fc."""

    head_layer: ClassVar[str] = "fc"

    def __init__(self, depth: int, num_classes: int, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stages = [widen(base, width) for base in (16, 32, 64)]
        self.conv = nn.Conv2d(in_channels, stages[0], 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(stages[0])
        blocks: list[nn.Module] = []
        channels = stages[0]
        for stage, stage_width in enumerate(stages):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_BasicBlock(channels, stage_width, stride))
                channels = stage_width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x)), inplace=True))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _register_cifar_resnet(depth: int) -> None:
    # He et al. 2016 sec. 4.2: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, lr /10 twice; the
    # 160ep / 80ep,120ep form is open_lth's cifar_resnet default.
    name = f"resnet{depth}"
    info = ModelInfo(
        name=name,
        image_size=32,
        channels=3,
        train_defaults=sgd_defaults(weight_decay=1e-4),
        prune_defaults=global_prune(),
        paper="He et al. 2016 (CVPR) sec. 4.2; open_lth cifar_resnet",
        description=f"CIFAR ResNet-{depth}: {(depth - 2) // 6} basic blocks per stage, 16/32/64 ch",
        widths=True,
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int, *, width: float) -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels, width=width)


_register_cifar_resnet(20)
_register_cifar_resnet(56)


# --------------------------------------------------------------------------------------------
# torchvision ResNet-18/50 (He et al. 2016), with the usual CIFAR stem for small images.

# Up to this size the ImageNet stem (7x7 stride 2 + max pool: 4x downsampling) would leave the
# last stage with a 1x1 map at 32 px, so small images get a 3x3 stride-1 stem and no pool.
_CIFAR_STEM_MAX_SIZE = 64

# torchvision's block type and blocks per stage (torchvision.models.resnet18 / resnet50).
_TORCHVISION_ARCHS: dict[str, tuple[str, list[int]]] = {
    "resnet18": ("BasicBlock", [2, 2, 2, 2]),
    "resnet50": ("Bottleneck", [3, 4, 6, 3]),
}


@functools.cache
def _scaled_resnet_class() -> type[nn.Module]:
    """torchvision's ResNet with every stage's planes widened (a class made on first use:
    torchvision is slow to import)."""
    from torchvision.models.resnet import ResNet

    class ScaledResNet(ResNet):
        """torchvision's ResNet; stage planes `widen(64|128|256|512, width)`. Its stem and its
        fc are torchvision's 64-channel and 512-plane ones: `_torchvision_resnet` replaces them
        when the width changes their size."""

        def __init__(self, block: Any, layers: list[int], num_classes: int, width: float) -> None:
            self.width = width  # read by _make_layer, which ResNet.__init__ calls
            super().__init__(block, layers, num_classes=num_classes)

        def _make_layer(self, block: Any, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
            if planes == 64:  # layer1: its input is the stem's output, widened with it
                self.inplanes = widen(64, self.width)
            return super()._make_layer(block, widen(planes, self.width), blocks, stride, dilate)

    return ScaledResNet


def _torchvision_resnet(
    arch: str, num_classes: int, in_channels: int, image_size: int, width: float
) -> nn.Module:
    import torchvision  # imported where used: it is slow to import

    block_name, layers = _TORCHVISION_ARCHS[arch]
    block = getattr(torchvision.models.resnet, block_name)
    # At width 1 this is torchvision.models.<arch>(weights=None, num_classes=num_classes).
    model = _scaled_resnet_class()(block, layers, num_classes, width)
    stem_width = widen(64, width)
    stem: nn.Conv2d | None = None
    if image_size <= _CIFAR_STEM_MAX_SIZE:
        stem = nn.Conv2d(in_channels, stem_width, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3 or stem_width != 64:
        stem = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
    if stem is not None:
        # torchvision's own conv init, so the replaced stem matches the rest of the network.
        nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
        model.conv1 = stem
    if stem_width != 64:
        model.bn1 = nn.BatchNorm2d(stem_width)  # weight 1, bias 0: torchvision's BN init
    features = widen(512, width) * block.expansion
    if features != model.fc.in_features:
        model.fc = nn.Linear(features, num_classes)  # PyTorch's default init, as torchvision's fc
    # A plain attribute: torchvision's class has no output-layer marker of its own.
    setattr(model, HEAD_ATTR, "fc")
    return model


def _register_torchvision_resnet(arch: str) -> None:
    # wd 5e-4 is the common CIFAR recipe for ImageNet-style ResNets (e.g. kuangliu/pytorch-cifar);
    # schedule as open_lth; global 0.2 with late resetting to 1ep as Morcos et al. 2019, whose
    # transfer study used ResNet-50.
    info = ModelInfo(
        name=arch,
        image_size=32,
        channels=3,
        train_defaults=sgd_defaults(weight_decay=5e-4),
        prune_defaults=global_prune(),
        paper="He et al. 2016 (CVPR); Morcos et al. 2019 (NeurIPS)",
        description=f"torchvision {arch}, 3x3 stride-1 stem without max pool at <= 64 px",
        widths=True,
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int, *, width: float) -> nn.Module:
        return _torchvision_resnet(arch, num_classes, in_channels, image_size, width)


_register_torchvision_resnet("resnet18")
_register_torchvision_resnet("resnet50")
