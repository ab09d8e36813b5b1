"""The transfer-noise axis (`transfer.label_noise: [0, 0.2]`): every ticket retrained on target labels
of which each fraction is wrong (ticketx.data.noise; mode and seed from `transfer.train`), every arm
of a comparison on the very same noisy labels (the noise seed is the transfer seed unless
transfer.train.noise_seed is given). Default: the transfer's `train.label_noise` (0)."""

from __future__ import annotations

from typing import Any

from ticketx.study.axes.base import Draft, NumberAxis, axis
from ticketx.study.axes.search_noise import NoiseLevels, noise_text


@axis
class TransferNoise(NumberAxis):
    name = "transfer_noise"
    missing = 0.0
    phase = "transfer"
    columns = ("transfer_noise",)
    header = "retrained at noise"
    claim_key = "transfer_noise"
    curve = "noise"
    fields = {"transfer": {"label_noise": (NoiseLevels, None)}}

    def check(self, study: Any) -> None:
        if study.spec.transfer.label_noise is not None and study.spec.transfer.train.label_noise is not None:
            raise study.error(("transfer", "train", "label_noise"), "give the transfer's noise levels in "
                                                                    "transfer.label_noise only (the axis)")

    def values(self, draft: Draft) -> list[Any]:
        return list(draft.study.spec.transfer.label_noise or [None])

    def apply(self, value: Any, draft: Draft) -> None:
        if value is not None:  # None: the transfer's train block decides (clean target labels unless it says)
            draft.spec["train"] = draft.spec["train"].model_copy(update={"label_noise": value})
            draft.config["train"] = draft.spec["train"].model_dump()
        if draft.study.spec.transfer.label_noise is not None:
            noise = draft.spec["train"].label_noise
            draft.ids.append((self.name, f"n{noise:g}"))
            draft.titles.append(f"at noise {noise_text(noise)}")
        draft.info["transfer_noise"] = draft.spec["train"].label_noise

    def search_row(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"transfer_noise": info.get("search_noise", "")}  # a search is trained at its own noise

    def text(self, value: Any) -> str:
        return noise_text(value)

    def phrase(self, value: Any) -> str:
        return "" if value in (None, "", 0, 0.0) else f"retrained at noise {noise_text(value)}"

    def label_part(self, value: Any) -> str:
        return f"target noise {noise_text(value)}"

    def describe(self, value: Any) -> str:
        return f"retrained at noise {noise_text(value)}"
