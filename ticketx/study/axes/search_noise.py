"""The search-noise axis (`search.label_noise: [0, 0.2]`): tickets found on training labels of which
each fraction is wrong (ticketx.data.noise; the mode and seed from `search.train`: noise_mode,
noise_seed). Sparse double descent is IMP under label noise (He et al. 2022). Default: the search's
`train.label_noise` (0: clean labels). The target's own ticket is found at the target's noise."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BeforeValidator

from ticketx.settings.base import comma_list
from ticketx.study.axes.base import Draft, NumberAxis, axis


def noise_levels(v: Optional[list[float]]) -> Optional[list[float]]:
    """A list of label-noise fractions: each in [0, 1), distinct, in the order given."""
    if v is None:
        return v
    if not v:
        raise ValueError("no cells: give at least one noise level")
    bad = [f for f in v if not 0 <= f < 1]
    if bad:
        raise ValueError(f"label noise is the fraction of training labels replaced, in [0, 1); got {bad[0]}")
    return [float(f) for f in dict.fromkeys(v)]


NoiseLevels = Annotated[Optional[list[float]], BeforeValidator(comma_list), AfterValidator(noise_levels)]


def noise_text(value: Any) -> str:
    return "" if value in (None, "") else f"{100 * float(value):g}%"


@axis
class SearchNoise(NumberAxis):
    name = "search_noise"
    missing = 0.0
    phase = "search"
    columns = ("search_noise",)
    header = "found at noise"
    claim_key = "search_noise"
    curve = "noise"
    fields = {"search": {"label_noise": (NoiseLevels, None)}}

    def check(self, study: Any) -> None:
        if study.spec.search.label_noise is not None and study.spec.search.train.label_noise is not None:
            raise study.error(("search", "train", "label_noise"), "give the search's noise levels in "
                                                                  "search.label_noise only (the axis)")

    def values(self, draft: Draft) -> list[Any]:
        # Not listed: the one level the search's train block gives (0: clean labels), as it is.
        return list(draft.study.spec.search.label_noise or [draft.spec["train"].label_noise])

    def apply(self, value: Any, draft: Draft) -> None:
        if value != draft.spec["train"].label_noise:
            draft.spec["train"] = draft.spec["train"].model_copy(update={"label_noise": value})
        if draft.study.spec.search.label_noise is not None:
            noise = draft.spec["train"].label_noise
            draft.ids.append((self.name, f"n{noise:g}"))
            draft.titles.append(f"at noise {noise_text(noise)}")
        draft.info["search_noise"] = draft.spec["train"].label_noise

    def own(self, value: Any, draft: Draft) -> Any:
        return draft.spec["train"].label_noise  # the own ticket is found as the target is trained

    def text(self, value: Any) -> str:
        return noise_text(value)

    def phrase(self, value: Any) -> str:
        return "" if value in (None, "", 0, 0.0) else f"at noise {noise_text(value)}"  # clean labels go without saying

    def label_part(self, value: Any) -> str:
        return f"noise {noise_text(value)}"

    def describe(self, value: Any) -> str:
        return f"found at noise {noise_text(value)}"
