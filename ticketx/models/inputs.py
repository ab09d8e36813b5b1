"""Input-size checks: does a model take images of this size, and if not, which size would it take?

A size is refused when the forward pass fails (too small for the model's pools or strides) or
when some conv kernel taps would only ever multiply zero padding (see `input_problem`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ticketx.errors import UsageError
from ticketx.models.prunable import CONV_TYPES


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
    assert isinstance(conv, CONV_TYPES)
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


def input_problem(
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
        if isinstance(m, CONV_TYPES)
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
            assert isinstance(conv, CONV_TYPES)
            kernel = "x".join(map(str, conv.kernel_size))
            side = "x".join(map(str, spatial))
            taps = math.prod(conv.kernel_size)
            return False, (
                f"layer {name!r} ({kernel} kernel) would see a {side} map, so {dead} of its "
                f"{taps} kernel taps would only ever touch padding and never train"
            )
    return None


def smallest_size(
    build: Callable[[int], nn.Module], in_channels: int, start: int, limit: int = 1024
) -> int | None:
    """The smallest image size above `start` that the model `build(image_size)` takes (each
    built on the meta device: no memory, no random numbers drawn)."""
    for size in range(start + 1, limit + 1):
        try:
            with torch.device("meta"):
                model = build(size)
        except (UsageError, ValueError, RuntimeError):
            continue
        if input_problem(model, in_channels, size) is None:
            return size
    return None
