"""Paired comparisons with their uncertainty: Student-t intervals on paired differences, verdicts.

A comparison in ticketx is always paired: the ticket and its control share the source, the
rewind weights, the target's data order and the seed, so their difference per seed removes
what they share. The summary of n such differences is their mean with a 95% Student-t
interval (mean ± t_{0.975, n-1} · sd / √n). Pure functions on lists of floats; no scipy.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

CONFIDENCE = 0.95
# Two accuracies within this many points "match" (Frankle & Carbin 2019 call a ticket matching
# when it is within a point of the dense network on CIFAR-scale tests); an option everywhere.
MATCH_TOLERANCE = 0.01

# t_{0.975, df} for df = 1..30 (standard tables); larger df use the Cornish-Fisher expansion.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values (1 degree of freedom)")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a 95% t interval; low/high are None for n < 2 (no interval)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, scale: float = 100.0, digits: int = 2, sign: bool = False) -> str:
        """'+1.23 [0.40, 2.06]' (in points with scale 100); without an interval for n < 2."""
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        out = f.format(scale * self.mean)
        if self.low is not None and self.high is not None:
            out += f" [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"
        return out


def interval(values: Sequence[float]) -> Interval:
    """Mean and 95% Student-t interval of `values` (n >= 2 for an interval)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, None, None, n, None)
    sd = statistics.stdev(values)
    half = t975(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def paired(a: Sequence[float], b: Sequence[float]) -> Interval:
    """Interval of the paired differences a_i - b_i (same seed, same everything but the arm)."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs equal numbers of values, got {len(a)} and {len(b)}")
    return interval([x - y for x, y in zip(a, b)])


def n_needed(diff: Interval, margin: float = 0.0, limit: int = 1000) -> int | None:
    """Smallest n whose interval would exclude `margin` if mean and sd stayed as measured (None: never)."""
    if diff.sd is None or diff.mean == margin:
        return None
    if diff.sd == 0:
        return 2
    for n in range(2, limit + 1):
        if t975(n - 1) * diff.sd / math.sqrt(n) < abs(diff.mean - margin):
            return n
    return None


def beats(diff: Interval, margin: float = 0.0) -> str:
    """'above' when the interval lies above `margin`, 'below' when below, else 'inconclusive'."""
    if diff.low is None or diff.high is None:
        return "inconclusive"
    if diff.low > margin:
        return "above"
    if diff.high < margin:
        return "below"
    return "inconclusive"


def matches(diff: Interval, tolerance: float = MATCH_TOLERANCE) -> str:
    """'matches' when the interval lies within ±tolerance, 'above'/'below' when wholly outside it."""
    if diff.low is None or diff.high is None:
        return "inconclusive"
    if -tolerance <= diff.low and diff.high <= tolerance:
        return "matches"
    if diff.low > tolerance:
        return "above"
    if diff.high < -tolerance:
        return "below"
    return "inconclusive"


def verdict(arm: str, label: str, diff: Interval, tolerance: float = MATCH_TOLERANCE) -> str:
    """A short verdict on ticket - arm: against dense or the own ticket, 'matches'; against a control, 'beats'.

    Rules (documented in the README, "Reading the results"):
    - dense, own ticket: "matches X" if the interval of the paired difference lies within
      ±tolerance; "above/below X" if it lies wholly outside; else "inconclusive vs X (n = k)".
    - every other baseline (a control): "beats X" if the interval lies above 0; "below X" if
      it lies below 0; else "no better than X (n = k)" when the interval holds 0.
    """
    if diff.n < 2:
        return f"inconclusive vs {label} (n = {diff.n})"
    if arm in ("dense", "own-ticket"):
        v = matches(diff, tolerance)
        return {"matches": f"matches {label}", "above": f"above {label}", "below": f"below {label}"}.get(
            v, f"inconclusive vs {label} (n = {diff.n})")
    v = beats(diff)
    return {"above": f"beats {label}", "below": f"below {label}"}.get(v, f"no better than {label} (n = {diff.n})")


def resolution(num_test: int) -> float:
    """Accuracy points one test image is worth ('1 image = 0.56 points' for 179 images)."""
    return 100.0 / num_test if num_test else float("nan")
