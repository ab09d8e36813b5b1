"""Paired margins with their uncertainty: two-level replication, multiplicity, verdicts. No scipy.

**The unit of replication is the ticket.** A comparison "ticket - control" is paired: the two
networks share the source ticket, its rewind weights, the target's data order and the seed, so
their difference removes what they share. Retrainings of one ticket (transfer seeds) are
repeated measures of that ticket; they say nothing about how much tickets from the same source
differ from one another. So a margin over several tickets (search seeds) is summarised as
the two-stage ("summary statistics") estimator: each ticket's mean margin over its retrains,
then the Student-t interval over the k ticket means (df = k - 1). It is exact for balanced
designs with normal errors and keeps its coverage with unequal retrains per ticket, because
each ticket mean's variance, sd_between^2 + sd_within^2 / n_i, is only ever estimated from the
spread of the ticket means themselves (tests/test_stats.py measures the coverage against the
pooled interval, which treats every retrain as an independent ticket and under-covers).
sd_between and sd_within are the method-of-moments variance components, reported beside it.
With one ticket there is no between-ticket variance to measure: the interval is over that
ticket's retrains (df = n - 1) and the verdict is about "this ticket" only.

**Multiplicity.** A summary makes many tests at once. Each row (comparison x control) is in the
family twice: a difference test (H0: margin = 0) and an equivalence test (H0: |margin| >= tol,
two one-sided tests at alpha/2 each). Benjamini-Hochberg at q = 0.05 over the whole family
controls the false discovery rate, the error rate of a screen over many comparisons (Holm's
family-wise control would leave a paper-size grid of 1,000+ tests with almost no power). Every
interval printed beside a verdict is the false-coverage-rate adjusted one of Benjamini &
Yekutieli (2005), at level 1 - R q / m for R discoveries of m tests: a difference is shown
exactly when that interval excludes 0, an equivalence exactly when it lies within +-tol, so the
verdict can be read off the interval printed. Unadjusted 95% intervals stay in the CSV files.
Pre-registered claims (`expect:`) are a separate, confirmatory family: `ticketx.study.expect`.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

CONFIDENCE = 0.95
FDR = 0.05  # Benjamini-Hochberg q of a summary's family of tests
# Two accuracies within this many points "match" (Frankle & Carbin 2019 call a ticket matching
# when it is within a point of the dense network on CIFAR-scale tests); an option everywhere.
MATCH_TOLERANCE = 0.01


# ---- Student's t, by the regularized incomplete beta function (Numerical Recipes' continued fraction) ----

def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _ibeta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError("Student's t needs df > 0")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _ibeta(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_sf`, to 1e-12)."""
    if not 0 < p < 1:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1 - p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf(mid, df) > 1 - p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values (1 degree of freedom)")
    return t_quantile(0.975, df)


# ---- intervals ----

@dataclass(frozen=True)
class Interval:
    """Mean of n values with a t interval at `level`; low/high are None when there is no interval."""

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None
    level: float = CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, scale: float = 100.0, digits: int = 2, sign: bool = False) -> str:
        """'+1.23 [0.40, 2.06]' (in points with scale 100); without an interval for n < 2."""
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        out = f.format(scale * self.mean)
        if self.low is not None and self.high is not None:
            out += f" [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"
        return out


def interval(values: Sequence[float], level: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of `values` at `level` (n >= 2 for an interval)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, None, None, n, None, level)
    sd = statistics.stdev(values)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level)


def paired(a: Sequence[float], b: Sequence[float]) -> Interval:
    """Interval of the paired differences a_i - b_i (same seed, same everything but the arm)."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs equal numbers of values, got {len(a)} and {len(b)}")
    return interval([x - y for x, y in zip(a, b)])


def welch(a: Sequence[float], b: Sequence[float], level: float = CONFIDENCE) -> tuple[Interval, float | None]:
    """(mean(a) - mean(b) with Welch's t interval, its Welch-Satterthwaite df): two independent samples
    (tickets of two widths are different tickets, with different spreads). No interval unless each has
    2 values."""
    na, nb = len(a), len(b)
    if not na or not nb:
        raise ValueError("no values")
    diff = statistics.fmean(a) - statistics.fmean(b)
    if na < 2 or nb < 2:
        return Interval(diff, None, None, na + nb, None, level), None
    va, vb = statistics.variance(a) / na, statistics.variance(b) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, na + nb, 0.0, level), float(na + nb - 2)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return Interval(diff, diff - half, diff + half, na + nb, se, level), df


@dataclass(frozen=True)
class Estimate:
    """A paired margin over tickets (the unit) and their retrains: the two-stage estimate.

    `scope` 'tickets': k >= 2 tickets, the t interval over their mean margins (df = k - 1);
    'ticket': one ticket, the t interval over its retrains (df = n - 1), a statement about that
    ticket only. `se` and `df` are None when there is no interval (one value).
    """

    mean: float
    se: float | None
    df: int | None
    tickets: int
    retrains: int
    sd_between: float | None  # method of moments; None when it cannot be separated from sd_within
    sd_within: float | None  # pooled sd of retrains within a ticket
    sd_unit: float | None  # sd of the unit (ticket means, or one ticket's retrains): what the interval uses
    scope: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def interval(self, level: float = CONFIDENCE) -> Interval:
        n = self.tickets if self.scope == "tickets" else self.retrains
        if self.se is None or self.df is None:
            return Interval(self.mean, None, None, n, None, level)
        half = t_quantile(0.5 + level / 2, self.df) * self.se
        return Interval(self.mean, self.mean - half, self.mean + half, n, self.sd_unit, level)

    def p_difference(self, null: float = 0.0) -> float:
        """Two-sided p of H0: margin = null (1.0 without an interval)."""
        if self.se is None or self.df is None:
            return 1.0
        if self.se == 0:
            return 0.0 if self.mean != null else 1.0
        return min(1.0, 2 * t_sf(abs(self.mean - null) / self.se, self.df))

    def p_above(self, null: float) -> float:
        """p of 'margin > null', on the two-sided scale: <= alpha exactly when the (1 - alpha) interval lies above."""
        if self.se is None or self.df is None:
            return 1.0
        if self.se == 0:
            return 0.0 if self.mean > null else 1.0
        return min(1.0, 2 * t_sf((self.mean - null) / self.se, self.df))

    def p_equivalence(self, tolerance: float) -> float:
        """Two one-sided tests of |margin| < tolerance, as 2 x the larger one-sided p: <= alpha
        exactly when the (1 - alpha) interval lies within +-tolerance."""
        return max(self.p_above(-tolerance), Estimate.p_above(self._mirror(), -tolerance))

    def _mirror(self) -> Estimate:
        return Estimate(-self.mean, self.se, self.df, self.tickets, self.retrains, self.sd_between, self.sd_within,
                        self.sd_unit, self.scope)


def replicated(by_ticket: Mapping[Any, Sequence[float]]) -> Estimate:
    """The two-stage estimate of a paired margin from each ticket's paired differences (its retrains)."""
    groups = [list(v) for v in by_ticket.values() if len(v)]
    if not groups:
        raise ValueError("no values")
    k, n = len(groups), sum(len(g) for g in groups)
    dof = sum(len(g) - 1 for g in groups)
    within = math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1) / dof) if dof else None
    if k == 1:
        g = groups[0]
        sd = statistics.stdev(g) if len(g) > 1 else None
        return Estimate(statistics.fmean(g), sd / math.sqrt(len(g)) if sd is not None else None,
                        len(g) - 1 if sd is not None else None, 1, n, None, sd, sd, "ticket")
    means = [statistics.fmean(g) for g in groups]
    sd_means = statistics.stdev(means)
    between = None
    if within is not None:
        # E[var of ticket means] = sd_between^2 + sd_within^2 * mean(1 / n_i)
        between = math.sqrt(max(0.0, sd_means**2 - within**2 * statistics.fmean(1 / len(g) for g in groups)))
    return Estimate(statistics.fmean(means), sd_means / math.sqrt(k), k - 1, k, n, between, within, sd_means, "tickets")


# ---- a family of tests: Benjamini-Hochberg and the intervals that go with it ----

def bh_adjusted(p: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (the q at which each test would be a discovery)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        out[i] = min(1.0, running)
    return out


@dataclass(frozen=True)
class Family:
    """A family of m tests under Benjamini-Hochberg at q: R discoveries, and the level of the
    FCR-adjusted intervals (1 - alpha, alpha = max(R, 1) q / m) that every verdict reads."""

    m: int
    discoveries: int
    q: float

    @property
    def alpha(self) -> float:
        return max(self.discoveries, 1) * self.q / self.m if self.m else self.q

    @property
    def level(self) -> float:
        return 1 - self.alpha

    def describe(self) -> str:
        return (f"{self.m} tests (difference and equivalence per row), Benjamini-Hochberg q = {self.q:g}: "
                f"{self.discoveries} shown; intervals at {100 * self.level:.2f}% (FCR-adjusted)")


def family(p: Sequence[float], q: float = FDR) -> Family:
    return Family(len(p), sum(a <= q for a in bh_adjusted(p)), q)


def n_needed(est: Estimate, edge: float, alpha: float = 1 - CONFIDENCE, limit: int = 1000) -> int | None:
    """How many units (tickets; retrains for one ticket) the interval at 1 - alpha would need to
    clear `edge`, if the mean and the unit's sd stayed as measured (None: never, or unknown)."""
    if est.sd_unit is None or est.mean == edge:
        return None
    if est.sd_unit == 0:
        return 2
    clears = lambda n: t_quantile(1 - alpha / 2, n - 1) * est.sd_unit / math.sqrt(n) < abs(est.mean - edge)  # noqa: E731
    hi = 2
    while not clears(hi):  # the half-width shrinks as n grows: double, then bisect
        if hi >= limit:
            return None
        hi = min(limit, 2 * hi)
    lo = hi // 2  # does not clear (or is below 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid >= 2 and clears(mid):
            hi = mid
        else:
            lo = mid
    return hi


def verdict(label: str, est: Estimate, alpha: float = 1 - CONFIDENCE, tolerance: float = MATCH_TOLERANCE,
            reference: bool = False) -> str:
    """What the interval at 1 - alpha shows about ticket - `label`, in words.

    'beats X' (a control; 'above X' for a reference: dense, the own ticket) when the interval lies
    above 0; 'below X' when below 0; 'matches X (within +-tol)' when it lies within +-tolerance
    (both can hold: 'beats X, within +-tol'); otherwise 'inconclusive vs X (about N tickets
    needed)'. With one ticket every verdict starts 'this ticket': it is about that ticket only.
    """
    iv = est.interval(1 - alpha)
    who = "this ticket " if est.scope == "ticket" else ""
    tol = f"±{100 * tolerance:.2f} pt"
    unit = "tickets" if est.scope == "tickets" else "retrains of it"
    if iv.low is None or iv.high is None:
        return f"{who}inconclusive vs {label} (one value: no interval)".strip()
    equivalent = -tolerance < iv.low and iv.high < tolerance
    if iv.low > 0 or iv.high < 0:
        word = ("above" if reference else "beats") if iv.low > 0 else "below"
        return f"{who}{word} {label}" + (f", within {tol}" if equivalent else "")
    if equivalent:
        return f"{who}matches {label} (within {tol})"
    need = min(filter(None, [n_needed(est, 0.0, alpha), n_needed(est, tolerance if est.mean >= 0 else -tolerance, alpha)]),
               default=None)
    return f"{who}inconclusive vs {label}" + (f" (about {need} {unit} needed)" if need else "")


def judge(items: Sequence[tuple[str, Estimate, bool]], tolerance: float = MATCH_TOLERANCE, q: float = FDR
          ) -> tuple[Family, list[dict[str, Any]]]:
    """Verdicts on a family of (label, estimate, is a reference) margins under Benjamini-Hochberg.

    Each item adds its difference and its equivalence test to the family; each gets back its
    p-values (raw and BH-adjusted), its unadjusted 95% interval, the adjusted interval its
    verdict reads, and the verdict.
    """
    p_diff = [est.p_difference() for _, est, _ in items]
    p_eq = [est.p_equivalence(tolerance) for _, est, _ in items]
    fam = family(p_diff + p_eq, q)
    adjusted = bh_adjusted(p_diff + p_eq)
    out = []
    for i, (label, est, reference) in enumerate(items):
        out.append({
            "estimate": est, "interval_95": est.interval(CONFIDENCE), "interval": est.interval(fam.level),
            "p": p_diff[i], "p_equivalence": p_eq[i], "q": adjusted[i], "q_equivalence": adjusted[len(items) + i],
            "verdict": verdict(label, est, fam.alpha, tolerance, reference),
        })
    return fam, out


def resolution(num_test: int) -> float:
    """Accuracy points one test image is worth ('1 image = 0.56 points' for 179 images)."""
    return 100.0 / num_test if num_test else float("nan")
