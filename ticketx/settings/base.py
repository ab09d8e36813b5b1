"""What every schema shares: strict models, list parsing, seed rules, one-line validation errors."""

from __future__ import annotations

import os
import reprlib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_validator

from ticketx.errors import UsageError


class Strict(BaseModel):
    """Unknown keys are errors; assignments are validated (a partial override is checked field by field)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Short(reprlib.Repr):
    """reprlib's bounded repr, with a long collection as its size alone: `[…43046721 items]`."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 8, 8, 6, 8
        self.maxstring, self.maxother, self.maxlong = 60, 60, 40

    def repr_list(self, x: list[Any], level: int) -> str:
        return f"[…{len(x)} items]" if len(x) > self.maxlist else super().repr_list(x, level)

    def repr_tuple(self, x: tuple[Any, ...], level: int) -> str:
        return f"(…{len(x)} items)" if len(x) > self.maxtuple else super().repr_tuple(x, level)

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        return f"{{…{len(x)} keys}}" if len(x) > self.maxdict else super().repr_dict(x, level)


_SHORT = _Short()


def shorten(value: Any) -> str:
    """A value for an error message, bounded whatever its size: `[0, 1]`, `[…43046721 items]`, `'abc...xyz'`.

    A value from a study file may be huge (an alias bomb expands to millions of items): the
    message that quotes it must cost O(1), not O(size).
    """
    return _SHORT.repr(value)


def shorten_text(text: str, limit: int = 1000) -> str:
    """A message cut to `limit` characters, its middle elided (the start names the key, the end the rule)."""
    if len(text) <= limit:
        return text
    half = (limit - 20) // 2
    return f"{text[:half]} …({len(text) - 2 * half} characters)… {text[-half:]}"


def env_limit(name: str, default: int) -> int:
    """A size limit: `default`, or the positive integer in the environment variable `name`."""
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise UsageError(f"{name} must be a positive whole number, got {shorten(os.environ[name])}")
    return int(raw)


def as_list(v: Any) -> Any:
    """A scalar where a list is expected is a list of one: `seeds: 0` == `seeds: [0]`; 'a, b' -> ['a', 'b']."""
    if isinstance(v, str):
        return [s for s in v.replace(" ", "").split(",") if s]
    return [v] if v is not None and not isinstance(v, (list, tuple)) else v


def comma_list(v: Any) -> Any:
    """`as_list`, and 'sgd, adam' (a comma list written as one string) -> ['sgd', 'adam']."""
    if isinstance(v, str) and "," in v:
        return [s.strip() for s in v.split(",") if s.strip()]
    return as_list(v)


def round_list(v: Any) -> Any:
    """`rounds:` as written -> None, 'all' or a sorted list of distinct round numbers (>= 0)."""
    if v is None or v == "all":
        return v
    v = as_list(v)
    if not isinstance(v, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in v):
        raise ValueError(f"expected 'all', a round number or a list of round numbers, got {shorten(v)}")
    if not v:
        raise ValueError("no cells: give at least one round (or 'all')")
    if min(v) < 0:
        raise ValueError(f"rounds are 0 (dense) or more, got {min(v)}")
    return sorted(set(v))


def nonempty(what: str) -> Any:
    """A validator: a list that must not be empty ('no cells: give at least one source')."""

    def check(v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError(f"no cells: give at least one {what}")
        return v

    return check


def check_seeds(v: list[int]) -> list[int]:
    """Seeds are distinct non-negative integers, at least one (each seed is one paired sample)."""
    if not v:
        raise ValueError("no cells: give at least one seed")
    if min(v) < 0 or len(set(v)) != len(v):
        raise ValueError(f"seeds must be distinct non-negative integers, got {shorten(v)}")
    return v


def error_message(e: dict[str, Any], with_input: bool = False) -> str:
    """The message of one pydantic error, in our words (no 'Value error, ' prefix)."""
    kind = e.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing (required)"
    msg = str(e.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    value = e.get("input")
    if with_input and kind != "value_error" and isinstance(value, (str, int, float, bool)):
        msg += f" (got {shorten(value)})"
    return shorten_text(msg)


def describe_validation_error(err: ValidationError, source: str = "") -> str:
    """One line from a pydantic ValidationError: 'source: key.path: message'."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = error_message(first)
    loc = shorten_text(loc, 200)
    prefix = f"{source}: " if source else ""
    return f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}"


def partial(spec: type[Strict], name: str, base: type[BaseModel] = Strict) -> type[BaseModel]:
    """A model with `spec`'s fields, each optional (an override), checked by `spec`'s own validators.

    Each given value is assigned to a default `spec` with validation, so ranges, literals and
    field validators are the very same ones, written once in `spec`.
    """

    def check(cls: Any, v: Any, info: Any) -> Any:
        if v is None or info.field_name not in spec.model_fields:  # a subclass's own fields validate themselves
            return v
        target = spec.model_construct()
        try:
            spec.__pydantic_validator__.validate_assignment(target, info.field_name, v)
        except ValidationError as err:
            raise ValueError(error_message(err.errors()[0], with_input=True)) from None
        return getattr(target, info.field_name)

    fields: dict[str, Any] = {n: (Any, None) for n in spec.model_fields}
    return create_model(name, __base__=base, __validators__={"_check": field_validator("*")(check)}, **fields)


def given(block: BaseModel | None, exclude: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """The keys a partial block sets (None = not given)."""
    if block is None:
        return {}
    return {k: v for k, v in block.model_dump(exclude=exclude).items() if v is not None}


def density_list(text: Any, option: str = "--densities") -> list[float]:
    """'0.5,0.2,0.1' (or a list) -> target densities, strictly decreasing within (0, 1]; else a one-line UsageError."""
    try:
        dens = [float(d) for d in as_list(text)]
    except (TypeError, ValueError):
        raise UsageError(f"{option} expects numbers like '0.5,0.2,0.1', got {text!r}") from None
    if not dens or any(not 0 < d <= 1 for d in dens) or any(a <= b for a, b in zip(dens, dens[1:])):
        raise UsageError(f"{option} must decrease within (0, 1], got {text!r}")
    return dens

