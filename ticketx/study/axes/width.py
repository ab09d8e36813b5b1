"""The width axis (`width: [0.25, 1, 4]`): one ticket per width of the network it is found in, every
hidden layer's units or channels times the width (ticketx.models.width; 1 = the paper's network).
The x axis of model-wise double descent (Belkin et al. 2019; Nakkiran et al. 2020), and the seed's
question: are tickets from wider networks better (Frankle & Carbin 2019)? Default: width 1."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BeforeValidator

from ticketx.settings.base import comma_list
from ticketx.study.axes.base import Draft, NumberAxis, axis


def _widths(v: Optional[list[float]]) -> Optional[list[float]]:
    import math

    if v is None:
        return v
    if not v:
        raise ValueError("no cells: give at least one width")
    bad = [w for w in v if not (math.isfinite(w) and 0 < w <= 1024)]
    if bad:
        raise ValueError(f"a width multiplies the paper's hidden layers: a number in (0, 1024], got {bad[0]}")
    return [float(w) for w in dict.fromkeys(v)]


Widths = Annotated[Optional[list[float]], BeforeValidator(comma_list), AfterValidator(_widths)]


@axis
class Width(NumberAxis):
    name = "width"
    missing = 1.0
    phase = "search"
    columns = ("width",)
    claim_key = "widths"
    curve = "width"
    fields = {"study": {"width": (Widths, None)}}  # None: every network at its paper width

    def check(self, study: Any) -> None:
        from ticketx.models import width_problem

        for m in study.spec.model:
            problem = next(filter(None, (width_problem(m, w) for w in study.spec.width or ())), None)
            if problem:
                raise study.error(("width",), f"{problem}; drop it from `model`, or keep width 1")

    def values(self, draft: Draft) -> list[Any]:
        return list(draft.study.spec.width or [None])

    def apply(self, value: Any, draft: Draft) -> None:
        if value is not None:  # None: the cell is exactly what it was before widths existed
            draft.spec["width"] = value
            draft.ids.append((self.name, f"w{value:g}"))
            draft.titles.append(f"width {value:g}")
        draft.info["width"] = 1.0 if value is None else float(value)

    def text(self, value: Any) -> str:
        return "" if value in (None, "") else f"{float(value):g}"

    def phrase(self, value: Any) -> str:
        return "" if value in (None, "", 1, 1.0) else f"width {float(value):g}"  # the paper's network goes without saying

    def label_part(self, value: Any) -> str:
        return self.phrase(value)

    def describe(self, value: Any) -> str:
        return f"width {self.text(value)}"
