"""The search-seed axis (`search.seeds`, or `sources[i].seeds`): one independent ticket per seed
(its weight initialisation and data order). The unit of replication for claims about tickets."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import AfterValidator, BeforeValidator
from typing import Annotated

from ticketx.settings.base import as_list, check_seeds
from ticketx.study.axes.base import Axis, Draft, axis

Seeds = Annotated[list[int], BeforeValidator(as_list), AfterValidator(check_seeds)]
OptionalSeeds = Annotated[Optional[list[int]], BeforeValidator(as_list),
                          AfterValidator(lambda v: None if v is None else check_seeds(v))]


@axis
class SearchSeed(Axis):
    name = "search_seed"
    phase = "search"
    role = "ticket"
    columns = ("search_seed",)
    fields = {"search": {"seeds": (Seeds, [0])}, "source": {"seeds": (OptionalSeeds, None)}}  # None: search.seeds

    def values(self, draft: Draft) -> list[Any]:
        item, _ = draft.values["source"]
        return list((item.seeds if item is not None else None) or draft.study.spec.search.seeds)

    def apply(self, value: Any, draft: Draft) -> None:
        from ticketx.runtime import own_ticket_init

        draft.spec["seed"] = value
        if draft.role == "own" and draft.study.spec.transfer.own_ticket_init == "independent":
            # The own ticket's search starts from an initialisation independent of the source
            # ticket's, so "the transferred ticket matches the own ticket" is not built in.
            draft.spec["init_seed"] = own_ticket_init(value)
        draft.info["search_seed"] = value
        draft.ids.append((self.name, f"s{value}"))
        draft.titles.append(f"seed {value}")

    def own(self, value: Any, draft: Draft) -> Any:
        # The own ticket of a source ticket with seed s is searched with seed s (its init
        # derived from s unless own_ticket_init: shared), so ticket k pairs with own ticket k.
        return value

    def phrase(self, value: Any) -> str:
        return f"seed {value}"
