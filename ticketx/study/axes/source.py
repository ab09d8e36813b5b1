"""The source axis (`sources:`): the data sets tickets are found on (`cifar10`, `digits[0-4]`,
`{data: digits, classes: 0-4}`); each item may carry its own search optimizers and seeds (the
search-optimizer and search-seed axes read them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from ticketx.settings.base import as_list, nonempty
from ticketx.settings.study import OfBlocks, data_name
from ticketx.study.axes.base import Axis, Draft, axis, slug

# The items are the `source` block, which the search axes extend (optimizer, seeds).
Sources = OfBlocks(lambda blocks: Annotated[list[blocks["source"]], BeforeValidator(as_list),  # type: ignore[misc]
                                            AfterValidator(nonempty("source"))])


def classes_of(name: str) -> str:
    """'digits[0-4]' -> '0-4'; '' for a whole data set."""
    return name[name.rfind("[") + 1:-1] if name.endswith("]") else ""


@axis
class Source(Axis):
    name = "source"
    phase = "search"
    columns = ("source", "source_classes")
    header = "ticket from"
    always_shown = True
    claim_key = "sources"
    fields = {"study": {"sources": (Sources, ...)}}

    def canonical(self, value: Any) -> str:
        from ticketx.data import parse_data
        from ticketx.errors import UsageError

        try:
            return parse_data(str(value)).name
        except UsageError:
            return str(value)

    def check(self, study: Any) -> None:
        study.sources = [data_name(study, ("sources", i), s) for i, s in enumerate(study.spec.sources)]

    def values(self, draft: Draft) -> list[Any]:
        return list(zip(draft.study.spec.sources, draft.study.sources))  # (the item as written, canonical name)

    def apply(self, value: Any, draft: Draft) -> None:
        _, data = value
        draft.spec["data"] = data
        draft.info.update(source=data, source_classes=classes_of(data))
        draft.ids.append((self.name, slug(data)))
        draft.titles.append(f"on {data}")

    def own(self, value: Any, draft: Draft) -> Any:
        return (None, draft.values["target"])  # the own ticket is found on the target

    def same(self, a: Any, b: Any) -> bool:
        return a[1] == b[1]  # the data set, whatever item of the file named it
