"""The transfer-seed axis (`transfer.seeds`): each ticket retrained once per seed (data order, new
output layer, random controls). Repeated measures of one ticket, paired across its arms."""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator, BeforeValidator, Field
from typing import Annotated

from ticketx.settings.base import comma_list, check_seeds
from ticketx.study.axes.base import Axis, Draft, axis

Seeds = Annotated[list[int], BeforeValidator(comma_list), AfterValidator(check_seeds)]


@axis
class Seed(Axis):
    name = "seed"
    phase = "transfer"
    role = "retrain"
    columns = ("seed",)
    fields = {"transfer": {"seeds": (Seeds, Field(default_factory=lambda: [0]))}}

    def values(self, draft: Draft) -> list[Any]:
        return list(draft.study.spec.transfer.seeds)

    def apply(self, value: Any, draft: Draft) -> None:
        draft.spec["seeds"] = [value]
        draft.config["seed"] = value
        draft.info["seed"] = value
        draft.ids.append((self.name, f"s{value}"))
        draft.titles.append(f"seed {value}")

    def search_row(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"seed": info["search_seed"]}  # a search's only seed is its own

    def phrase(self, value: Any) -> str:
        return f"seed {value}"
