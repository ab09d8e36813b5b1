"""Model registry: every model builds at any sensible size, trains, and names its prunable tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketx.errors import UsageError
from ticketx.models import (
    MODELS,
    _live_taps,
    build_model,
    head_name,
    model_info,
    model_rows,
    prunable_names,
)
from ticketx.settings import PruneSpec, TrainSpec

CANON = {
    "lenet_300_100", "conv2", "conv4", "conv6", "vgg11", "vgg16", "vgg19",
    "resnet20", "resnet56", "resnet18", "resnet50",
}  # fmt: skip
TRAIN_KEYS = {
    "optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size",
    "length", "milestones", "gamma", "warmup",
}  # fmt: skip


def _meta_build(name: str, num_classes: int = 10, channels: int | None = None) -> nn.Module:
    """Shapes only: fast, and the tests below do not need the weights."""
    with torch.device("meta"):
        return build_model(name, num_classes, channels or MODELS[name].channels)


def _train_step(model: nn.Module, channels: int, size: int, classes: int) -> torch.Tensor:
    x = torch.randn(2, channels, size, size)
    out = model(x)
    F.cross_entropy(out, torch.tensor([0, classes - 1])).backward()
    return out


def test_registry_holds_the_canon() -> None:
    assert set(MODELS) == CANON
    for name, info in MODELS.items():
        assert info.name == name
        assert info.paper and info.description


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(CANON))
def test_forward_backward_at_native_size(name: str, channels: int) -> None:
    torch.manual_seed(0)
    size = model_info(name).image_size
    model = build_model(name, num_classes=7, in_channels=channels)
    assert model.training  # the build-time dry run must not leave the model in eval mode
    out = _train_step(model, channels, size, classes=7)
    assert out.shape == (2, 7)
    params = dict(model.named_parameters())
    for n in prunable_names(model):
        grad = params[n].grad
        assert grad is not None and grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", sorted(CANON))
def test_prunable_names_are_exactly_conv_and_linear_weights(name: str) -> None:
    model = _meta_build(name, num_classes=7)
    names = prunable_names(model)
    # In these models every tensor with more than one axis is a conv or linear weight; biases
    # and batch-norm parameters are vectors.
    assert names == [n for n, p in model.named_parameters() if p.ndim > 1]
    modules = dict(model.named_modules())
    for n in names:
        assert n.endswith(".weight")
        assert isinstance(modules[n.removesuffix(".weight")], (nn.Conv2d, nn.Linear))
    head = head_name(model)
    assert head in names and head == names[-1]
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert modules[head.removesuffix(".weight")] is last_linear
    assert last_linear.out_features == 7


def test_prunable_names_skip_embeddings_norms_and_biases() -> None:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
            self.conv1d = nn.Conv1d(4, 4, 3)
            self.depthwise = nn.Conv2d(4, 4, 3, groups=4)
            self.norm = nn.LayerNorm(4)
            self.bn = nn.BatchNorm2d(4)
            self.conv3d = nn.Conv3d(1, 1, 1)
            self.proj = nn.Linear(4, 4)
            self.out = nn.Linear(4, 10)
            self.out.weight = self.emb.weight  # tied input/output embedding

    assert prunable_names(Toy()) == [
        "conv1d.weight",
        "depthwise.weight",
        "conv3d.weight",
        "proj.weight",
    ]


def test_head_name_falls_back_to_the_last_layer() -> None:
    assert head_name(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))) == "2.weight"
    with pytest.raises(UsageError):
        head_name(nn.Sequential(nn.ReLU()))


def test_weight_counts_match_the_papers() -> None:
    counts = {row["name"]: row["prunable_weights"] for row in model_rows()}
    assert set(counts) == CANON
    assert counts["lenet_300_100"] == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    # Frankle & Carbin 2019 Fig. 2: Conv-2 4.3M, Conv-4 2.4M, VGG-19 20.0M weights.
    assert counts["conv2"] == 3 * 64 * 9 + 64 * 64 * 9 + 16 * 16 * 64 * 256 + 256 * 256 + 2560
    assert round(counts["conv2"] / 1e6, 1) == 4.3
    assert round(counts["conv4"] / 1e6, 1) == 2.4
    assert round(counts["vgg19"] / 1e6, 1) == 20.0


def test_model_rows_leave_the_random_stream_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    rows = model_rows()
    assert torch.equal(torch.rand(4), expected)
    assert [r["name"] for r in rows] == list(MODELS)
    assert {"name", "image_size", "channels", "prunable_weights", "paper"} <= set(rows[0])


def test_layers_follow_the_input_size() -> None:
    lenet = build_model("lenet_300_100", num_classes=10, in_channels=1, image_size=8)
    assert lenet.fc_layers[0].in_features == 64
    assert _train_step(lenet, 1, 8, 10).shape == (2, 10)

    conv4 = build_model("conv4", num_classes=10, in_channels=1, image_size=28)
    assert conv4.fc_layers[0].in_features == 128 * 7 * 7  # 28 -> 14 -> 7 after two pools
    assert _train_step(conv4, 1, 28, 10).shape == (2, 10)

    resnet20 = build_model("resnet20", num_classes=5, in_channels=3, image_size=48)
    assert _train_step(resnet20, 3, 48, 5).shape == (2, 5)


def test_torchvision_resnet_stem_depends_on_size() -> None:
    small = _meta_build("resnet18", channels=1)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert small.conv1.in_channels == 1
    assert isinstance(small.maxpool, nn.Identity)
    with torch.device("meta"):
        big = build_model("resnet18", 10, 1, image_size=96)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.in_channels == 1
    assert isinstance(big.maxpool, nn.MaxPool2d)


def test_too_small_images_are_refused_with_the_smallest_size() -> None:
    with pytest.raises(UsageError, match="vgg16 cannot take 16 px images.*never train") as err:
        build_model("vgg16", num_classes=10, in_channels=3, image_size=16)
    assert err.value.hint == "use image_size >= 32"
    with pytest.raises(UsageError, match="conv6 cannot take 4 px"):
        build_model("conv6", num_classes=10, in_channels=3, image_size=4)
    with pytest.raises(UsageError, match="image_size must be a positive integer"):
        build_model("conv2", num_classes=10, in_channels=3, image_size=0)
    with pytest.raises(UsageError, match="num_classes"):
        build_model("conv2", num_classes=0, in_channels=3)


def test_live_taps() -> None:
    assert _live_taps(size=1, kernel=3, stride=1, padding=1, dilation=1) == 1  # centre only
    assert _live_taps(size=2, kernel=3, stride=1, padding=1, dilation=1) == 3
    assert _live_taps(size=2, kernel=3, stride=2, padding=1, dilation=1) == 2  # one output
    assert _live_taps(size=32, kernel=3, stride=2, padding=1, dilation=1) == 3
    assert _live_taps(size=32, kernel=16, stride=16, padding=0, dilation=1) == 16


@pytest.mark.parametrize("name", ["conv4", "resnet20", "resnet18"])
def test_build_is_deterministic_under_the_seed(name: str) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name, num_classes=10, in_channels=3).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(UsageError, match="did you mean 'vgg19'"):
        build_model("vgg91", num_classes=10, in_channels=3)
    with pytest.raises(UsageError, match="did you mean 'timm:resnet10t'"):
        model_info("timm:resnt10t")
    with pytest.raises(UsageError) as err:
        model_info("vit_tiny_patch16_224")
    assert err.value.hint == "'vit_tiny_patch16_224' is a timm model: use 'timm:vit_tiny_patch16_224'"


@pytest.mark.parametrize("name", sorted(CANON) + ["timm:resnet10t"])
def test_defaults_are_valid_specs(name: str) -> None:
    info = model_info(name)
    assert set(info.train_defaults) == TRAIN_KEYS
    TrainSpec(**info.train_defaults)
    PruneSpec(**info.prune_defaults)


def test_model_info_is_a_copy() -> None:
    model_info("vgg19").train_defaults["milestones"].append("150ep")
    assert model_info("vgg19").train_defaults["milestones"] == ["80ep", "120ep"]


def test_timm_vit_at_a_small_size() -> None:
    info = model_info("timm:vit_tiny_patch16_224")
    assert (info.image_size, info.channels) == (224, 3)
    torch.manual_seed(0)
    model = build_model("timm:vit_tiny_patch16_224", num_classes=7, in_channels=1, image_size=32)
    assert _train_step(model, 1, 32, 7).shape == (2, 7)
    names = prunable_names(model)
    assert head_name(model) == "head.weight" == names[-1]
    assert names[0] == "patch_embed.proj.weight"
    assert not any("pos_embed" in n or "cls_token" in n or "norm" in n for n in names)
    params = dict(model.named_parameters())
    assert all(params[n].grad is not None for n in names)


def test_timm_resnet() -> None:
    torch.manual_seed(0)
    model = build_model("timm:resnet10t", num_classes=7, in_channels=3, image_size=64)
    assert head_name(model) == "fc.weight"
    assert _train_step(model, 3, 64, 7).shape == (2, 7)
    # At 32 px its last stage sees 2x2 maps that a stride-2 3x3 conv cannot cover: warned about.
    with pytest.warns(UserWarning, match="never train"):
        build_model("timm:resnet10t", num_classes=7, in_channels=3, image_size=32)
