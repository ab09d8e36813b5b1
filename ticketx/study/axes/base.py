"""What a study axis is: one declaration of a dimension of the grid, from the study file to the report.

An axis says, once:

- its `name`, the `phase` whose cells it multiplies (a search axis gives one ticket per value,
  and every transfer of that ticket inherits it; a transfer axis multiplies the transfers of
  every ticket), and its `role` in the statistics: a `factor` (results are summarised per
  value), `x` (the point of each comparison: round or density, the x axis of plots), or a level of replication (`ticket`: the
  search seed, one independent ticket per value; `retrain`: the transfer seed, repeated
  measures of one ticket);
- its schema: the study-file keys it adds (`fields`, by block), validated with the file's
  `file:line: key.path: message` errors, and cross-field rules (`check`);
- its `values` at a point of the expansion (they may depend on the axes before it);
- where its value goes (`apply`: into the cell's settings, its key, its results columns, its
  folder name and its title);
- its `columns` in results.csv and summary.csv, and how reports lay it out (`table`: tables and
  figures split by it, else rows and lines; `figure`: plots split by it);
- for a search axis, the value the target's own ticket takes (`own`); for a factor, the
  `expect:` key that selects claims by it (`claim_key`), and its part in the over-parametrization
  curves (`curve`).

Adding an axis is one file in this package (plus its test) that registers an `Axis`; the
runner, results and reports iterate over `AXES` and never spell an axis's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from ticketx.registry import Registry

if TYPE_CHECKING:
    from ticketx.settings.study import Study

# The study-file blocks an axis may add keys to.
BLOCKS = ("study", "search", "transfer", "source")


def slug(text: str) -> str:
    """'digits[0-4]' -> 'digits0-4'; 'timm:resnet18' -> 'timm-resnet18' (readable folder names)."""
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("[", "").replace("]", "")).strip("-")
    return s[:40] or "x"


@dataclass
class Draft:
    """A cell being built: the axis values so far, and what they have put into it.

    `spec`: keyword arguments of the cell's settings (SearchSpec or TransferSpec); `config`: the
    fields of its key besides the settings; `info`: its results columns and other facts for
    reports; `ids` / `titles`: its folder name and title, in axis order. `role` is 'source' for
    a source ticket's search, 'own' for a target's own ticket, 'transfer' for a transfer.
    """

    study: "Study"
    role: str
    values: dict[str, Any] = field(default_factory=dict)
    first: dict[str, bool] = field(default_factory=dict)  # axis name -> its first value at this point
    spec: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    ids: list[tuple[str, str]] = field(default_factory=list)  # (axis name, folder-name part)
    titles: list[str] = field(default_factory=list)
    source: Any = None  # a transfer: the source ticket's search cell
    own: Any = None  # a transfer: the target's own ticket's search cell (None: none)

    def copy(self, **changes: Any) -> "Draft":
        new = Draft(self.study, self.role, dict(self.values), dict(self.first), dict(self.spec), dict(self.config),
                    dict(self.info), list(self.ids), list(self.titles), self.source, self.own)
        for k, v in changes.items():
            setattr(new, k, v)
        return new


class Axis:
    """One dimension of a study's grid (see the module docstring). Subclasses override what they need."""

    name: ClassVar[str] = ""
    phase: ClassVar[str] = "search"  # 'search' or 'transfer'
    role: ClassVar[str] = "factor"  # 'factor', 'x' (the point: round or density), 'ticket' (search seed), 'retrain' (transfer seed)
    columns: ClassVar[tuple[str, ...]] = ()  # results.csv / summary.csv columns (the first is the value's own)
    header: ClassVar[str] = ""  # a column header in tables ('' = the name)
    table: ClassVar[bool] = False  # tables split by it (else rows within a table)
    figure: ClassVar[bool] = False  # plots split by it (else lines within a plot)
    always_shown: ClassVar[bool] = False  # a row column even when the study has one value of it
    in_transfer_id: ClassVar[bool] = True  # a search axis: its part of the folder name also names transfers
    claim_key: ClassVar[Optional[str]] = None  # the `expect:` key selecting comparisons by it ('sources')
    # Its part in the over-parametrization curves (ticketx.study.curves): 'width' (the x of model-wise
    # double descent), 'noise' (a line per label-noise level), '' (none: figures split by it).
    curve: ClassVar[str] = ""
    fields: ClassVar[dict[str, dict[str, tuple[Any, Any]]]] = {}  # block -> {key: (annotation, default)}

    # ---- schema ----
    def check(self, study: "Study") -> None:
        """Cross-field rules and names, after the schema: raise `study.error(path, message)`."""

    # ---- expansion ----
    def values(self, draft: Draft) -> list[Any]:
        """This axis's values at `draft` (which holds the values of the axes before it)."""
        raise NotImplementedError

    def apply(self, value: Any, draft: Draft) -> None:
        """Put `value` where it goes: draft.spec / config / info / ids / titles."""
        raise NotImplementedError

    def own(self, value: Any, draft: Draft) -> Any:
        """A search axis: the value of the target's own ticket's search, for the transfer `draft`."""
        return value

    # ---- results ----
    def row(self, info: dict[str, Any]) -> dict[str, Any]:
        """This axis's results columns for a cell's `info`."""
        return {c: info.get(c, "") for c in self.columns}

    def search_row(self, info: dict[str, Any]) -> dict[str, Any]:
        """A transfer axis: its columns in the row of a search (a search's own data set is its 'target')."""
        return {c: "" for c in self.columns}

    def canonical(self, value: Any) -> str:
        """A value as a claim filter names it, in the form the cells record (`digits[0-4]`)."""
        return str(value)

    def same(self, a: Any, b: Any) -> bool:
        """Whether two values of this axis are the same (the own ticket's value vs the source's)."""
        return a == b

    def text(self, value: Any) -> str:
        """A value as reports print it."""
        return "" if value is None else str(value)

    def phrase(self, value: Any) -> str:
        """A value in a sentence about one comparison ('digits[0-4] (adam) -> digits[5-9] (adam)')."""
        return self.text(value)

    def label_part(self, value: Any) -> str:
        """A value in a plot's legend ('' leaves it out: the value everyone assumes)."""
        return self.text(value)

    def describe(self, value: Any) -> str:
        """A value in a title: 'lenet_300_100', 'retrained with adam'."""
        return self.text(value)

    def selects(self, wanted: tuple[Any, ...], info: dict[str, Any]) -> bool:
        """A claim's filter on this axis (`claim_key`): does the cell with `info` belong to it?"""
        return str(info.get(self.columns[0])) in wanted


AXES: Registry[Axis] = Registry("study axis")


def axis(cls: type[Axis]) -> type[Axis]:
    """Register an axis; the registration order is the expansion order (search axes, then transfer axes)."""
    AXES.add(cls.name, cls())
    return cls


def search_axes() -> list[Axis]:
    return [a for a in AXES.values() if a.phase == "search"]


def transfer_axes() -> list[Axis]:
    return [a for a in AXES.values() if a.phase == "transfer"]


def with_role(role: str, phase: Optional[str] = None) -> list[Axis]:
    return [a for a in AXES.values() if a.role == role and (phase is None or a.phase == phase)]


def factors(phase: Optional[str] = None) -> list[Axis]:
    """The axes results are summarised per value of (everything but the point and the replication)."""
    return with_role("factor", phase)


def factor_columns() -> list[str]:
    return [c for a in factors() for c in a.columns]


def all_columns() -> list[str]:
    """Every axis's results columns, in the order the axes are declared."""
    return [c for a in AXES.values() for c in a.columns]


class NumberAxis(Axis):
    """An axis whose values are numbers (a width, a noise level): claim filters name them in any
    numeric spelling (`0.2`, `.2`), and a cell recorded before the axis existed has `missing`."""

    missing: float = 0.0

    def canonical(self, value: Any) -> str:
        try:
            return str(float(value))
        except (TypeError, ValueError):
            return str(value)

    def selects(self, wanted: tuple[Any, ...], info: dict[str, Any]) -> bool:
        return self.canonical(info.get(self.columns[0], self.missing)) in wanted

