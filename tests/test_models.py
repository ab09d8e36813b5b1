"""Model registry: every model builds at any sensible size, trains, and names its prunable tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketx.errors import UsageError
from ticketx.models import (
    MODELS,
    build_model,
    head_name,
    model_info,
    model_rows,
    prunable_names,
)
from ticketx.models.inputs import _live_taps
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


# --------------------------------------------------------------------------------------------
# Width.

# Parameter counts (weights, biases, batch-norm affine) at width 1, 10 classes, native size and
# channels: computed from the code before the width option existed (ticketx/models.py at c960dd0),
# whose builds at torch.manual_seed(0) were checked bit-identical, tensor by tensor, to these.
WIDTH_1_PARAMS = {
    "lenet_300_100": 266_610, "conv2": 4_301_642, "conv4": 2_425_930, "conv6": 2_262_602,
    "vgg11": 9_231_114, "vgg16": 14_728_266, "vgg19": 20_040_522, "resnet20": 272_474,
    "resnet56": 855_770, "resnet18": 11_173_962, "resnet50": 23_520_842,
}  # fmt: skip


def _count(model: nn.Module, prunable: bool = False) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in (prunable_names(model) if prunable else params))


def _meta_width(name: str, width: float, **kw: int) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, 10, kw.get("channels", MODELS[name].channels), kw.get("size"), width=width)


@pytest.mark.parametrize("name", sorted(CANON))
def test_width_1_is_the_published_model(name: str) -> None:
    assert MODELS[name].widths
    default, one = _meta_build(name), _meta_width(name, 1)
    assert _count(default) == _count(one) == WIDTH_1_PARAMS[name]
    assert [(n, p.shape) for n, p in default.named_parameters()] == [(n, p.shape) for n, p in one.named_parameters()]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_resnets_at_width_1_are_torchvision_s(name: str) -> None:
    """At 96 px and 3 channels nothing is replaced: the very model torchvision builds, same seed."""
    import torchvision

    torch.manual_seed(0)
    ours = build_model(name, 10, 3, image_size=96, width=1.0).state_dict()
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None, num_classes=10).state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_width_scales_lenet_units() -> None:
    model = _meta_width("lenet_300_100", 2)
    assert [layer.out_features for layer in model.fc_layers] == [600, 200]
    assert _count(model, prunable=True) == 784 * 600 + 600 * 200 + 200 * 10
    assert _count(model) == 784 * 600 + 600 * 200 + 200 * 10 + 600 + 200 + 10


def test_width_scales_conv_channels_and_fc_units() -> None:
    model = _meta_width("conv2", 0.5)  # convs 32, 32; FC 128, 128; 16x16 map after the pool
    weights = 3 * 32 * 9 + 32 * 32 * 9 + 16 * 16 * 32 * 128 + 128 * 128 + 128 * 10
    assert _count(model, prunable=True) == weights == 1_076_320
    assert _count(model) == weights + 32 + 32 + 128 + 128 + 10
    # each count rounds on its own: 64 x 0.1 = 6.4 -> 6, 128 x 0.1 = 12.8 -> 13, 256 x 0.1 -> 26
    conv6 = _meta_width("conv6", 0.1)
    assert [m.out_channels for m in conv6.modules() if isinstance(m, nn.Conv2d)] == [6, 6, 13, 13, 26, 26]
    assert [m.out_features for m in conv6.fc_layers] == [26, 26]
    assert conv6.fc_layers[0].in_features == 26 * 4 * 4
    tiny = _meta_width("conv2", 0.001)  # never below one channel
    assert {m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)} == {1}
    assert tiny.fc.out_features == 10


def test_width_scales_vgg_channels() -> None:
    model = _meta_width("vgg11", 0.25)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [16, 32, 64, 64, 128, 128, 128, 128]
    assert (model.fc.in_features, model.fc.out_features) == (128, 10)


def test_width_scales_cifar_resnet_stages_as_wide_resnets() -> None:
    """ResNet-20 at width 2 is Zagoruyko & Komodakis's WRN-20-2 but for its stem (32 channels, not 16)."""
    model = _meta_width("resnet20", 2)
    def stage(c_in: int, c: int) -> int:  # 3 blocks of two 3x3 convs; a 1x1 shortcut where c changes
        return 9 * c_in * c + 9 * c * c + (c_in * c if c_in != c else 0) + 2 * (9 * c * c + 9 * c * c)

    weights = 3 * 32 * 9 + stage(32, 32) + stage(32, 64) + stage(64, 128) + 128 * 10
    assert _count(model, prunable=True) == weights == 1_081_440
    assert model.conv.out_channels == 32 and model.fc.in_features == 128


def test_width_scales_torchvision_resnet_planes() -> None:
    r18 = _meta_width("resnet18", 0.5)
    assert r18.conv1.out_channels == r18.bn1.num_features == 32
    assert [r18.layer1[0].conv1.in_channels] + [getattr(r18, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)] == [32, 32, 64, 128, 256]
    assert (r18.fc.in_features, r18.fc.out_features) == (256, 10)
    r50 = _meta_width("resnet50", 0.5, size=96)  # ImageNet stem, widened
    assert r50.conv1.kernel_size == (7, 7) and r50.conv1.out_channels == 32
    assert r50.layer4[-1].conv3.out_channels == r50.fc.in_features == 256 * 4


@pytest.mark.parametrize("name", sorted(CANON))
def test_width_keeps_the_tensor_names(name: str) -> None:
    """A model has the same tensors at every width (only their sizes change)."""
    names = [n for n, _ in _meta_build(name).named_parameters()]
    for width in (0.5, 2):
        model = _meta_width(name, width)
        assert [n for n, _ in model.named_parameters()] == names
        assert head_name(model) == head_name(_meta_build(name))


@pytest.mark.parametrize(("name", "width"), [("lenet_300_100", 0.5), ("conv4", 1.5), ("vgg11", 0.25), ("resnet20", 0.5), ("resnet18", 0.25)])
def test_forward_backward_at_other_widths(name: str, width: float) -> None:
    channels, size = MODELS[name].channels, MODELS[name].image_size
    builds = []
    for _ in range(2):
        torch.manual_seed(0)
        builds.append(build_model(name, num_classes=7, in_channels=channels, width=width))
    a, b = (m.state_dict() for m in builds)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the weights depend only on the seed
    model = builds[0]
    assert _train_step(model, channels, size, classes=7).shape == (2, 7)
    params = dict(model.named_parameters())
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in prunable_names(model))


@pytest.mark.parametrize("width", [0, -1, 0.0, float("nan"), float("inf"), True, "2", None])
def test_width_must_be_a_positive_number(width: object) -> None:
    with pytest.raises(UsageError, match="width must be a positive number"):
        build_model("conv2", 10, 3, width=width)  # type: ignore[arg-type]


def test_timm_models_have_no_width() -> None:
    assert not model_info("timm:resnet10t").widths
    with pytest.raises(UsageError, match=r"^timm:resnet10t has no width option: ") as err:
        build_model("timm:resnet10t", 10, 3, width=2)
    assert "\n" not in str(err.value)
    with torch.device("meta"):
        build_model("timm:resnet10t", 10, 3, image_size=64, width=1.0)  # width 1 is fine


def test_too_small_at_another_width_names_the_smallest_size() -> None:
    with pytest.raises(UsageError, match="vgg16 cannot take 16 px") as err:
        build_model("vgg16", num_classes=10, in_channels=3, image_size=16, width=0.5)
    assert err.value.hint == "use image_size >= 32"


def test_a_registered_builder_without_width_builds_at_width_1_only() -> None:
    """A builder registered as before the width option (the README's example) keeps working."""
    from ticketx.models import ModelInfo, register, registry

    info = ModelInfo("mlp_test", image_size=8, channels=1, train_defaults=dict(model_info("conv2").train_defaults),
                     prune_defaults=dict(model_info("conv2").prune_defaults), paper="-", description="8x8 MLP")
    assert not info.widths
    try:
        @register(info)
        def _mlp(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 4), nn.ReLU(), nn.Linear(4, num_classes))

        assert build_model("mlp_test", 3, 1)[-1].out_features == 3
        assert build_model("mlp_test", 3, 1, width=1.0)[-1].out_features == 3
        with pytest.raises(UsageError, match="^mlp_test has no width option: its builder takes none$"):
            build_model("mlp_test", 3, 1, width=2)
    finally:
        MODELS.pop("mlp_test", None)
        registry._BUILDERS.pop("mlp_test", None)
