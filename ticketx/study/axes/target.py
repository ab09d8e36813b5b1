"""The target axis (`targets:`): the data sets every ticket is retrained on."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from ticketx.settings.base import as_list, nonempty
from ticketx.settings.study import Target as TargetItem
from ticketx.settings.study import data_name
from ticketx.study.axes.base import Axis, Draft, axis, slug

Targets = Annotated[list[TargetItem], BeforeValidator(as_list), AfterValidator(nonempty("target"))]
from ticketx.study.axes.source import classes_of


@axis
class Target(Axis):
    name = "target"
    phase = "transfer"
    columns = ("target", "target_classes")
    header = "to"
    figure = True
    always_shown = True
    claim_key = "targets"
    fields = {"study": {"targets": (Targets, ...)}}

    def canonical(self, value: Any) -> str:
        from ticketx.data import parse_data
        from ticketx.errors import UsageError

        try:
            return parse_data(str(value)).name
        except UsageError:
            return str(value)

    def check(self, study: Any) -> None:
        from ticketx.data import DATASETS, parse_data

        study.targets = [data_name(study, ("targets", i), t) for i, t in enumerate(study.spec.targets)]
        if study.spec.channels is None:
            # A ticket's first layer is sized by its data set's channels: when the sets differ, use RGB
            # everywhere (grayscale replicated), as Morcos et al. 2019 did for Fashion-MNIST.
            known = {DATASETS[d.base].channels for n in study.sources + study.targets
                     if (d := parse_data(n)).base in DATASETS}
            study.channels = 3 if len(known) > 1 else None

    def values(self, draft: Draft) -> list[Any]:
        return list(dict.fromkeys(draft.study.targets))

    def apply(self, value: Any, draft: Draft) -> None:
        draft.spec["target"] = value
        draft.config["target"] = value
        draft.info.update(target=value, target_classes=classes_of(value))
        draft.ids.append((self.name, f"to-{slug(value)}"))
        draft.titles.append(f"-> {value}")

    def search_row(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"target": info["source"], "target_classes": info["source_classes"]}  # a search is on its own data

    def phrase(self, value: Any) -> str:
        return f"-> {value}"
