"""The model axis (`model:`, one name or a list): one ticket per architecture, each with its paper's defaults."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from ticketx.errors import UsageError
from ticketx.settings.base import as_list, nonempty
from ticketx.study.axes.base import Axis, Draft, axis, slug

Models = Annotated[list[str], BeforeValidator(as_list), AfterValidator(nonempty("model"))]  # one model or a list


@axis
class Model(Axis):
    name = "model"
    phase = "search"
    columns = ("model",)
    table = True
    figure = True
    fields = {"study": {"model": (Models, ...)}}

    def check(self, study: Any) -> None:
        from ticketx.models import model_info

        models = study.spec.model
        for i, m in enumerate(models):
            try:
                model_info(m)
            except UsageError as err:
                raise study.error(("model", i) if len(models) > 1 else ("model",), str(err)) from None

    def values(self, draft: Draft) -> list[Any]:
        return list(dict.fromkeys(draft.study.spec.model))

    def apply(self, value: Any, draft: Draft) -> None:
        from ticketx.settings.study import prune_spec

        draft.spec.update(model=value, prune=prune_spec(draft.study, value))
        draft.info["model"] = value
        draft.ids.append((self.name, slug(value)))
        draft.titles.append(value)
