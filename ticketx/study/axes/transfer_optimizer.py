"""The transfer-optimizer axis (`transfer.optimizer: [same, sgd, adam]`): 'same' retrains each ticket
with the optimizer it was found with; a list crosses them (Morcos et al. 2019 sec. 4.3: tickets
found with Adam trained with SGD and vice versa)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BeforeValidator, Field
from typing import Annotated

from ticketx.settings.base import comma_list, as_list
from ticketx.study.axes.base import Axis, Draft, axis




Optimizers = Annotated[list[Literal["same", "sgd", "adam"]], BeforeValidator(comma_list)]


@axis
class TransferOptimizer(Axis):
    name = "transfer_optimizer"
    phase = "transfer"
    columns = ("transfer_optimizer",)
    table = True
    figure = True
    fields = {"transfer": {"optimizer": (Optimizers, Field(default_factory=lambda: ["same"]))}}

    def check(self, study: Any) -> None:
        # One place says how tickets are retrained, so that 'same' cannot be silently overridden.
        t = study.spec.transfer.train
        if t.optimizer is not None or any(b is not None and b.optimizer is not None for b in (t.sgd, t.adam)):
            where = ("transfer", "train", "optimizer") if t.optimizer is not None else ("transfer", "train")
            raise study.error(where, "choose the transfer optimizer with transfer.optimizer (same, sgd, adam), "
                                     "not in transfer.train")

    def values(self, draft: Draft) -> list[Any]:
        found = draft.source.info["search_optimizer"]
        return list(dict.fromkeys(found if o == "same" else o for o in draft.study.spec.transfer.optimizer))

    def apply(self, value: Any, draft: Draft) -> None:
        from ticketx.settings.study import train_spec

        train = train_spec(draft.study, draft.values["model"], "transfer", value)
        draft.spec["train"] = train
        memo = draft.study.memo
        dumped = ("transfer_train", draft.values["model"], value)  # one dict shared by every cell of it
        if dumped not in memo:
            memo[dumped] = train.model_dump()
        draft.config["train"] = memo[dumped]
        draft.info["transfer_optimizer"] = value
        draft.ids.append((self.name, value))
        draft.titles.append(f"({value})")

    def describe(self, value: Any) -> str:
        return f"retrained with {value}"

    def phrase(self, value: Any) -> str:
        return f"({value})"
