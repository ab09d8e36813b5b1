"""Steps as strings (open_lth `foundations/step.py`): '160ep', '30000it', '0', one parser everywhere."""

from __future__ import annotations

import re

from ticketx.errors import UsageError

_STEP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ep|it)?\s*$")


def check_step(text: str | int) -> str:
    """Validate a step string and return it normalised ('0', '2ep', '500it')."""
    text = str(text)
    m = _STEP.match(text)
    if not m:
        raise UsageError(f"invalid step {text!r}: expected e.g. '160ep', '30000it' or '0'")
    value, unit = m.group(1), m.group(2)
    if unit is None:
        if float(value) != 0:
            raise UsageError(f"invalid step {text!r}: give a unit, e.g. '{value}ep' or '{value}it'")
        return "0"
    if unit == "it" and "." in value:
        raise UsageError(f"invalid step {text!r}: iterations must be a whole number")
    return f"{value}{unit}"


def to_iterations(text: str | int, iterations_per_epoch: int) -> int:
    """Turn a step string into a number of iterations (epochs may be fractional: '0.5ep')."""
    text = check_step(text)
    if text == "0":
        return 0
    value, unit = float(text[:-2]), text[-2:]
    if unit == "it":
        return int(value)
    return int(round(value * iterations_per_epoch))
