"""The retraining axis (`search.retrain: [rewind, lr-rewind]`): one ticket per retraining mode of the
search (Renda, Frankle & Carbin, ICLR 2020): weight rewinding (the lottery ticket), learning-rate
rewinding, fine-tuning. Each ticket stores its mask with the rewind weights θ_k of round 0, so its
transfers start from θ_k in every mode: they test the mask each mode found (transfer.ticket_start).
Default `search.prune.retrain` (rewind); a rewind ticket's cell is what it was before the axis."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BeforeValidator

from ticketx.settings.base import as_list
from ticketx.study.axes.base import Axis, Draft, axis


def _nonempty(v: Optional[list[str]]) -> Optional[list[str]]:
    if v is not None and not v:
        raise ValueError("no cells: give at least one retraining mode (rewind, lr-rewind, finetune)")
    return None if v is None else list(dict.fromkeys(v))


Modes = Annotated[Optional[list[Literal["rewind", "lr-rewind", "finetune"]]], BeforeValidator(as_list),
                  AfterValidator(_nonempty)]


@axis
class Retrain(Axis):
    name = "retrain_mode"  # not the 'retrain' role (a transfer seed's repeated measure)
    phase = "search"
    columns = ("retrain_mode",)
    in_transfer_id = False  # transfer folders are named without it (their keys differ)
    claim_key = "retrain_modes"
    fields = {"search": {"retrain": (Modes, None)}}

    def label_part(self, value: Any) -> str:
        return "" if value == "rewind" else str(value)  # the lottery-ticket rule goes without saying

    def values(self, draft: Draft) -> list[Any]:
        return list(draft.study.spec.search.retrain or [draft.spec["prune"].retrain])

    def apply(self, value: Any, draft: Draft) -> None:
        draft.spec["prune"] = draft.spec["prune"].model_copy(update={"retrain": value})
        draft.info["retrain_mode"] = value
        if value != "rewind":  # folder names and titles of rewind tickets stay
            draft.ids.append((self.name, value))
            draft.titles.append(f"retrained by {value}")

    def phrase(self, value: Any) -> str:
        return "" if value == "rewind" else f"retrained by {value}"
