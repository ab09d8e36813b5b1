"""The search-optimizer axis (`sources[i].optimizer: [sgd, adam]`): tickets found with each optimizer
(Morcos et al. 2019 sec. 4.3); default the study's or the model's paper optimizer."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BeforeValidator
from typing import Annotated

from ticketx.settings.base import as_list
from ticketx.study.axes.base import Axis, Draft, axis

Optimizers = Annotated[Optional[list[Literal["sgd", "adam"]]], BeforeValidator(as_list)]


@axis
class SearchOptimizer(Axis):
    name = "search_optimizer"
    phase = "search"
    columns = ("search_optimizer",)
    header = "found with"
    fields = {"source": {"optimizer": (Optimizers, None)}}  # None: the study's / the model's

    def values(self, draft: Draft) -> list[Any]:
        from ticketx.settings.study import train_spec

        item, _ = draft.values["source"]
        if item is not None and item.optimizer:
            return list(item.optimizer)
        return [train_spec(draft.study, draft.values["model"], "search", None).optimizer]  # the study's or the paper's

    def apply(self, value: Any, draft: Draft) -> None:
        from ticketx.settings.study import check_lengths, train_spec

        model = draft.spec["model"]
        train = train_spec(draft.study, model, "search", value)
        check_lengths(draft.study, model, train, draft.spec["prune"])
        draft.spec["train"] = train
        draft.info["search_optimizer"] = train.optimizer
        draft.ids.append((self.name, train.optimizer))
        draft.titles.append(f"with {train.optimizer}")

    def own(self, value: Any, draft: Draft) -> Any:
        return draft.values["transfer_optimizer"]  # the own ticket is found with the transfer optimizer

    def phrase(self, value: Any) -> str:
        return f"({value})"
