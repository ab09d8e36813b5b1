"""The width option: one multiplier for every hidden layer's channel or unit count.

A model built at width w has `widen(base, w) = max(1, round(base * w))` channels (or units) in
each hidden layer whose count is `base` at width 1; the input and the output layer (num_classes)
keep their sizes. Width 1 is the model as published.
"""

from __future__ import annotations

import math

from ticketx.errors import UsageError

LayerPlan = list[int | str]  # conv widths at width 1, 'M' = 2x2 max pool


def check_width(width: object) -> float:
    """`width` as a float, or UsageError unless it is a positive finite number."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise UsageError(f"width must be a positive number, got {width!r}", hint="width 1 is the published model")
    return float(width)


def widen(base: int, width: float) -> int:
    """The channel or unit count of a layer that has `base` at width 1 (at least 1)."""
    return max(1, round(base * width))


def widen_plan(plan: LayerPlan, width: float) -> LayerPlan:
    """`plan` with every conv width widened; the pools stay where they are."""
    return [spec if isinstance(spec, str) else widen(spec, width) for spec in plan]
