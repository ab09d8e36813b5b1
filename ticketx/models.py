"""Model registry: the lottery-ticket canon (LeNet, Conv-2/4/6, VGG, ResNet) plus any timm model.

Every builder takes (num_classes, in_channels, image_size) and sizes all of its layers from them,
so a ticket found on one data set can be rebuilt for another (Morcos et al. 2019 transfer tickets
across data sets by swapping only the output layer). Each model also carries its paper's training
and pruning defaults, keyed by `TrainSpec` / `PruneSpec` field names.

The pruning side needs two facts from a model, both answered here: which tensors are prunable
(`prunable_names`: every conv and linear weight) and which one is the output layer (`head_name`),
because Frankle & Carbin 2019 prune the output layer at a different rate.
"""

from __future__ import annotations

import copy
import difflib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ticketx.errors import UsageError, did_you_mean

__all__ = [
    "MODELS",
    "TIMM_PREFIX",
    "ModelInfo",
    "build_model",
    "head_name",
    "model_info",
    "model_rows",
    "prunable_names",
    "register",
]

TIMM_PREFIX = "timm:"

# Layers whose weights are prunable. Subclasses (timm's Conv2dSame, NonDynamicallyQuantizableLinear)
# count too; depthwise convs are plain Conv2d with groups > 1.
_PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Local model classes name their output layer in this class attribute (a module name, e.g. 'fc');
# `head_name` appends '.weight'. A distinct name, because timm models use `head` for a module.
_HEAD_ATTR = "head_layer"


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


Builder = Callable[[int, int, int], nn.Module]  # (num_classes, in_channels, image_size) -> model

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


# --------------------------------------------------------------------------------------------
# Defaults. Every dict has all ten TrainSpec training keys so a resolved spec never silently
# falls back to a generic value; helpers return fresh dicts so no two models share one.


def _adam_defaults(lr: float, iterations: int) -> dict[str, Any]:
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


def _sgd_defaults(weight_decay: float) -> dict[str, Any]:
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


def _layerwise_prune() -> dict[str, Any]:
    """Frankle & Carbin 2019 sec. 2-3: each layer pruned by itself, rewound to the original init.

    The paper prunes the output layer at half the rate (0.1); ticketx's default prunes every
    layer at the same 20% so that round r has density 0.8^r everywhere (Morcos et al. 2019's
    uniform rate). Pass head_rate=0.1 (`--head-rate 0.1`) to reproduce the paper exactly.
    """
    return {"scope": "layerwise", "rate": 0.2, "head_rate": None, "rewind": "0"}


def _global_prune() -> dict[str, Any]:
    """Frankle & Carbin 2019 sec. 4 and Morcos et al. 2019: one global threshold, 20% per round,
    rewinding to 1 epoch (late resetting: Morcos et al. 2019; Frankle et al. 2020)."""
    return {"scope": "global", "rate": 0.2, "head_rate": None, "rewind": "1ep"}


def _generic_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """Defaults for timm models: generic, from no paper for that architecture.

    They are the CIFAR ResNet recipe (He et al. 2016 via open_lth) as a starting point; most timm
    architectures (ViTs especially) need their own optimizer settings, set in the spec.
    """
    return _sgd_defaults(weight_decay=1e-4), _global_prune()


# --------------------------------------------------------------------------------------------
# Initialisation.


def _glorot_init(model: nn.Module) -> None:
    """Gaussian Glorot weights, zero biases: Frankle & Carbin 2019 Fig. 2 (LeNet, Conv-2/4/6).

    Zero biases are TensorFlow's default, which F&C used. (open_lth's LeNet uses Kaiming normal.)
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _kaiming_init(model: nn.Module) -> None:
    """Kaiming normal conv/linear weights (open_lth's default `kaiming_normal`; He et al. 2015).

    Biases keep PyTorch's default, as in open_lth. BatchNorm starts at weight 1, bias 0 (He et al.
    2016, torchvision); open_lth's default `batchnorm_init='uniform'` draws BN weights from
    U(0, 1) instead, which we do not copy: it is not what the papers describe.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# LeNet-300-100 (Frankle & Carbin 2019 Fig. 2; LeCun et al. 1998).


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
        _glorot_init(self)

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
        train_defaults=_adam_defaults(lr=1.2e-3, iterations=50_000),
        prune_defaults=_layerwise_prune(),
        paper="Frankle & Carbin 2019 (ICLR), Fig. 2",
        description="MLP 784-300-100-10 for MNIST (LeNet-300-100)",
    )
)
def _lenet_300_100(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return LeNet(num_classes, in_channels, image_size, hidden=(300, 100))


# --------------------------------------------------------------------------------------------
# Conv-2/4/6 (Frankle & Carbin 2019 Fig. 2): VGG-like (Simonyan & Zisserman 2015) 3x3 conv
# stacks, no batch norm, then FC 256-256-out.

LayerPlan = list[int | str]  # conv widths, 'M' = 2x2 max pool


class ConvNet(nn.Module):
    """Conv-2/4/6: 3x3 conv+ReLU stacks with 2x2 max pools, then two 256-unit FC layers."""

    head_layer: ClassVar[str] = "fc"

    def __init__(
        self, plan: LayerPlan, num_classes: int, in_channels: int, image_size: int
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
            [nn.Linear(channels * side * side, 256), nn.Linear(256, 256)]
        )
        self.fc = nn.Linear(256, num_classes)
        _glorot_init(self)

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


def _register_conv(name: str, lr: float, iterations: int) -> None:
    # prune_defaults: F&C 2019 prune the FC layers at 0.2 and the output at 0.1, but the conv
    # layers more slowly (0.1 for Conv-2 and Conv-4, 0.15 for Conv-6); PruneSpec has a single
    # body rate, so it carries the FC rate, which covers >90% of the weights.
    info = ModelInfo(
        name=name,
        image_size=32,
        channels=3,
        train_defaults=_adam_defaults(lr=lr, iterations=iterations),
        prune_defaults=_layerwise_prune(),
        paper="Frankle & Carbin 2019 (ICLR), Fig. 2",
        description=f"Conv-{name[-1]} for CIFAR-10: 3x3 convs {_CONV_PLANS[name]}, FC 256-256",
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return ConvNet(_CONV_PLANS[name], num_classes, in_channels, image_size)


# Adam learning rates and lengths: F&C 2019 Fig. 2 (Conv-2 2e-4 / 20K it, Conv-4 3e-4 / 25K,
# Conv-6 3e-4 / 30K).
_register_conv("conv2", lr=2e-4, iterations=20_000)
_register_conv("conv4", lr=3e-4, iterations=25_000)
_register_conv("conv6", lr=3e-4, iterations=30_000)


# --------------------------------------------------------------------------------------------
# CIFAR VGG (open_lth `cifar_vgg`, used by Frankle & Carbin 2019 sec. 4 and Morcos et al. 2019).


class _ConvBN(nn.Module):
    """3x3 conv, batch norm, ReLU. The conv keeps its bias, as in open_lth."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


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
        _kaiming_init(self)

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
        train_defaults=_sgd_defaults(weight_decay=1e-4),
        prune_defaults=_global_prune(),
        paper="Frankle & Carbin 2019 (ICLR) sec. 4; open_lth cifar_vgg; Morcos et al. 2019",
        description=f"VGG-{name[3:]} with batch norm for CIFAR (open_lth cifar_vgg_{name[3:]})",
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return CifarVGG(_VGG_PLANS[name], num_classes, in_channels)


for _name in _VGG_PLANS:
    _register_vgg(_name)


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
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2): 3x3 stem, three stages of n blocks at 16/32/64 channels, global pool, fc."""

    head_layer: ClassVar[str] = "fc"

    def __init__(self, depth: int, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        channels = width
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_BasicBlock(channels, stage_width, stride))
                channels = stage_width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _register_cifar_resnet(depth: int) -> None:
    # He et al. 2016 sec. 4.2: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, lr /10 twice; the
    # 160ep / 80ep,120ep form is open_lth's cifar_resnet default.
    name = f"resnet{depth}"
    info = ModelInfo(
        name=name,
        image_size=32,
        channels=3,
        train_defaults=_sgd_defaults(weight_decay=1e-4),
        prune_defaults=_global_prune(),
        paper="He et al. 2016 (CVPR) sec. 4.2; open_lth cifar_resnet",
        description=f"CIFAR ResNet-{depth}: {(depth - 2) // 6} basic blocks per stage, 16/32/64 ch",
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels)


_register_cifar_resnet(20)
_register_cifar_resnet(56)


# --------------------------------------------------------------------------------------------
# torchvision ResNet-18/50 (He et al. 2016), with the usual CIFAR stem for small images.

# Up to this size the ImageNet stem (7x7 stride 2 + max pool: 4x downsampling) would leave the
# last stage with a 1x1 map at 32 px, so small images get a 3x3 stride-1 stem and no pool.
_CIFAR_STEM_MAX_SIZE = 64


def _torchvision_resnet(
    arch: str, num_classes: int, in_channels: int, image_size: int
) -> nn.Module:
    import torchvision  # imported where used: it is slow to import

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    stem: nn.Conv2d | None = None
    if image_size <= _CIFAR_STEM_MAX_SIZE:
        stem = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        stem = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    if stem is not None:
        # torchvision's own conv init, so the replaced stem matches the rest of the network.
        nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
        model.conv1 = stem
    # A plain attribute: torchvision's class has no output-layer marker of its own.
    setattr(model, _HEAD_ATTR, "fc")
    return model


def _register_torchvision_resnet(arch: str) -> None:
    # wd 5e-4 is the common CIFAR recipe for ImageNet-style ResNets (e.g. kuangliu/pytorch-cifar);
    # schedule as open_lth; global 0.2 with late resetting to 1ep as Morcos et al. 2019, whose
    # transfer study used ResNet-50.
    info = ModelInfo(
        name=arch,
        image_size=32,
        channels=3,
        train_defaults=_sgd_defaults(weight_decay=5e-4),
        prune_defaults=_global_prune(),
        paper="He et al. 2016 (CVPR); Morcos et al. 2019 (NeurIPS)",
        description=f"torchvision {arch}, 3x3 stride-1 stem without max pool at <= 64 px",
    )

    @register(info)
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return _torchvision_resnet(arch, num_classes, in_channels, image_size)


_register_torchvision_resnet("resnet18")
_register_torchvision_resnet("resnet50")


# --------------------------------------------------------------------------------------------
# timm models, by name: 'timm:<timm model name>'.


def _timm_info(name: str) -> ModelInfo:
    import timm  # imported where used: it is slow to import

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
    train, prune = _generic_defaults()
    return ModelInfo(
        name=name,
        image_size=int(image_size),
        channels=int(channels),
        train_defaults=train,
        prune_defaults=prune,
        paper="generic defaults (CIFAR ResNet recipe), not from a paper for this model",
        description=f"timm {arch}, randomly initialised",
    )


def _build_timm(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
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


# --------------------------------------------------------------------------------------------
# Input-size checks.


def _live_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """How many of a kernel's taps along one axis ever land on a real (non-padding) input pixel."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return sum(
        any(0 <= o * stride - padding + j * dilation < size for o in range(out))
        for j in range(kernel)
    )


def _dead_taps(conv: nn.Module, spatial: tuple[int, ...]) -> int:
    """Kernel taps per filter that only ever multiply zero padding for this input size.

    Such weights get no gradient and never train, so magnitude pruning would rank untrained
    values and count them in its density: a silent error, hence refused (e.g. a 3x3 conv on a
    1x1 map uses only its centre tap).
    """
    assert isinstance(conv, _CONV_TYPES)
    if conv.padding_mode != "zeros":  # reflect/circular padding repeats real pixels
        return 0
    live, total = 1, 1
    for axis, size in enumerate(spatial):
        k, s, d = conv.kernel_size[axis], conv.stride[axis], conv.dilation[axis]
        if isinstance(conv.padding, str):  # 'valid' or 'same' (stride 1, left pad = total // 2)
            p = 0 if conv.padding == "valid" else d * (k - 1) // 2
        else:
            p = conv.padding[axis]
        live *= _live_taps(size, k, s, p, d)
        total *= k
    return total - live


def _input_problem(
    model: nn.Module, in_channels: int, image_size: int
) -> tuple[bool, str] | None:
    """Dry-run one blank image through `model`; None if it takes this input, else (fatal, why).

    Fatal: the forward pass fails. Not fatal: it runs, but some conv weights would never train.
    """
    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            seen.append((name, module, tuple(args[0].shape[2:])))

        return hook

    hooks = [
        m.register_forward_pre_hook(record(n))
        for n, m in model.named_modules()
        if isinstance(m, _CONV_TYPES)
    ]
    first = next(model.parameters(), None)
    x = torch.zeros(
        1,
        in_channels,
        image_size,
        image_size,
        device=first.device if first is not None else None,
        dtype=first.dtype if first is not None and first.is_floating_point() else None,
    )
    was_training = model.training
    model.eval()  # no batch-norm statistics are updated by the dry run
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # any failure here means this input size does not fit the model
        return True, f"the forward pass fails: {(str(e) or type(e).__name__).splitlines()[0]}"
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, conv, spatial in seen:
        dead = _dead_taps(conv, spatial)
        if dead:
            assert isinstance(conv, _CONV_TYPES)
            kernel = "x".join(map(str, conv.kernel_size))
            side = "x".join(map(str, spatial))
            taps = math.prod(conv.kernel_size)
            return False, (
                f"layer {name!r} ({kernel} kernel) would see a {side} map, so {dead} of its "
                f"{taps} kernel taps would only ever touch padding and never train"
            )
    return None


def _smallest_size(name: str, in_channels: int, start: int, limit: int = 1024) -> int | None:
    """The smallest image size above `start` that a local model takes (built on the meta device:
    no memory, no random numbers drawn)."""
    for size in range(start + 1, limit + 1):
        try:
            with torch.device("meta"):
                model = _BUILDERS[name](2, in_channels, size)
        except (UsageError, ValueError, RuntimeError):
            continue
        if _input_problem(model, in_channels, size) is None:
            return size
    return None


# --------------------------------------------------------------------------------------------
# Public API.


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name` (a local model or 'timm:<name>'); a copy, safe to change."""
    if name.startswith(TIMM_PREFIX):
        return _timm_info(name)
    if name not in MODELS:
        hint = "timm models are named 'timm:<name>', e.g. 'timm:resnet18'"
        if not difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.5):
            import timm  # slow (~3 s): only when the name is not a near-miss of a local model

            if timm.is_model(name):
                hint = f"{name!r} is a timm model: use 'timm:{name}'"
        raise UsageError(did_you_mean(name, list(MODELS), "model"), hint=hint)
    return copy.deepcopy(MODELS[name])


def build_model(
    name: str, num_classes: int, in_channels: int, image_size: int | None = None
) -> nn.Module:
    """Build a freshly initialised model; `image_size=None` means the model's native size.

    Weights depend only on torch's global seed. Sizes a model cannot take (too small for its
    pools, or so small that conv kernels would hang over padding only) raise UsageError.
    """
    info = model_info(name)
    size = info.image_size if image_size is None else image_size
    checks = (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", size))
    for what, value in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{what} must be a positive integer, got {value!r}")

    if name.startswith(TIMM_PREFIX):
        model = _build_timm(name, num_classes, in_channels, size)
        found = _input_problem(model, in_channels, size)
        if found is not None:
            fatal, why = found
            if fatal:
                raise UsageError(f"{name} cannot take {size} px images: {why}")
            # timm architectures are the user's own choice: warn rather than refuse.
            warnings.warn(f"{name} at {size} px: {why}; consider a larger image_size", stacklevel=2)
        return model

    problem: str | None = None
    try:
        model = _BUILDERS[name](num_classes, in_channels, size)
        found = _input_problem(model, in_channels, size)
        problem = found[1] if found else None
    except UsageError as e:
        problem = str(e)
    if problem:
        smallest = _smallest_size(name, in_channels, size)
        hint = f"use image_size >= {smallest}" if smallest else None
        raise UsageError(f"{name} cannot take {size} px images: {problem}", hint=hint)
    return model


def prunable_names(model: nn.Module) -> list[str]:
    """Names of every conv and linear weight, in `model.named_parameters()` order.

    Biases, normalisation parameters, embeddings and position embeddings are never prunable; a
    linear weight tied to an embedding (shared input/output embeddings) counts as an embedding.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    wanted = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, _PRUNABLE_TYPES)
        and isinstance(getattr(m, "weight", None), nn.Parameter)
        and id(m.weight) not in embeddings
    }
    return [n for n, p in model.named_parameters() if id(p) in wanted]


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def prunable_names_of(name: str, in_channels: int, image_size: int) -> list[str] | None:
    """Prunable tensor names of model `name`, built on the meta device (no memory, no random
    numbers drawn); None when the model cannot be built at that size."""
    try:
        with torch.device("meta"):
            return prunable_names(build_model(name, 10, in_channels, image_size))
    except Exception:  # noqa: BLE001 - sizes a model cannot take are reported when it is built for real
        return None


def head_name(model: nn.Module) -> str:
    """Parameter name of the output layer's weight, e.g. 'fc.weight'."""
    params = dict(model.named_parameters())
    marked = getattr(model, _HEAD_ATTR, None)
    if isinstance(marked, str) and f"{marked}.weight" in params:
        return f"{marked}.weight"
    get_classifier = getattr(model, "get_classifier", None)  # timm's API
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, (tuple, list)):  # distilled timm models: (head, head_dist)
            head = head[0]
        name = _module_name(model, head) if isinstance(head, nn.Module) else None
        if name is not None:
            inside = prunable_names(head)
            if inside:  # the last prunable weight inside the classifier (it may be a block)
                return f"{name}.{inside[-1]}" if name else inside[-1]
    # Anything else (e.g. a plain nn.Sequential): the last prunable weight is the output layer.
    names = prunable_names(model)
    if not names:
        raise UsageError(f"{type(model).__name__} has no conv or linear weight to be its output")
    return names[-1]


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
