"""The criterion axis (`search.criteria: [magnitude, movement]`): one ticket per mask criterion
(Zhou et al. 2019), each transferred next to its own baselines and an own ticket found the same
way; default `search.prune.criterion`."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import AfterValidator, BeforeValidator
from typing import Annotated

from ticketx.errors import UsageError
from ticketx.settings.base import as_list
from ticketx.study.axes.base import Axis, Draft, axis, slug


def _known(v: Optional[list[str]]) -> Optional[list[str]]:
    from ticketx.criteria import CRITERIA

    if v is None:
        return v
    if not v:
        raise ValueError("no cells: give at least one criterion")
    try:
        return CRITERIA.check(v)
    except UsageError as err:
        raise ValueError(str(err)) from None


Criteria = Annotated[Optional[list[str]], BeforeValidator(as_list), AfterValidator(_known)]


@axis
class Criterion(Axis):
    name = "criterion"
    phase = "search"
    columns = ("criterion",)
    in_transfer_id = False  # transfer folders are named without it (their keys differ)
    fields = {"search": {"criteria": (Criteria, None)}}

    def label_part(self, value: Any) -> str:
        return "" if value == "magnitude" else str(value)  # the lottery-ticket rule goes without saying

    def values(self, draft: Draft) -> list[Any]:
        return list(draft.study.spec.search.criteria or [draft.spec["prune"].criterion])

    def apply(self, value: Any, draft: Draft) -> None:
        draft.spec["prune"] = draft.spec["prune"].model_copy(update={"criterion": value})
        draft.info["criterion"] = value
        if value != "magnitude":  # folder names from before criteria existed stay
            draft.ids.append((self.name, slug(value)))
        if value != "magnitude":
            draft.titles.append(f"by {value}")

    def phrase(self, value: Any) -> str:
        return "" if value == "magnitude" else f"by {value}"
