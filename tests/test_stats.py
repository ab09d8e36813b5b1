"""Paired margins: t distribution, the two-stage estimate over tickets (its coverage, simulated, against
the pooled interval), Benjamini-Hochberg and the verdicts read off the adjusted intervals."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from ticketx import stats


def test_paired_interval_by_hand():
    a, b = [0.90, 0.92, 0.91, 0.95], [0.88, 0.90, 0.90, 0.91]
    d = [0.02, 0.02, 0.01, 0.04]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    half = 3.1824 * sd / 2  # t_{0.975, 3} * sd / sqrt(4)
    got = stats.paired(a, b)
    assert got.n == 4 and got.mean == pytest.approx(mean) and got.sd == pytest.approx(sd)
    assert got.low == pytest.approx(mean - half, abs=1e-6) and got.high == pytest.approx(mean + half, abs=1e-6)


def test_t_distribution_matches_tables():
    assert stats.t975(1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t975(10) == pytest.approx(2.2281, abs=1e-4)
    assert stats.t975(40) == pytest.approx(2.0211, abs=1e-4)
    assert stats.t975(120) == pytest.approx(1.9799, abs=1e-4)
    assert stats.t_quantile(0.995, 4) == pytest.approx(4.6041, abs=1e-4)
    assert stats.t_quantile(0.9995, 2) == pytest.approx(31.5991, abs=1e-3)
    assert stats.t_sf(2.0, 5) == pytest.approx(0.05097, abs=1e-5)
    assert stats.t_sf(-1.0, 3) == pytest.approx(1 - 0.19550, abs=1e-5)


def test_t_distribution_matches_scipy_where_installed():
    sst = pytest.importorskip("scipy.stats").t
    for df in (1, 2, 3, 7, 30, 200):
        for t in (0.1, 1.0, 2.5, 6.0, 30.0):
            assert stats.t_sf(t, df) == pytest.approx(sst.sf(t, df), rel=1e-8, abs=1e-14)
        for p in (0.6, 0.975, 0.999, 0.99999):
            assert stats.t_quantile(p, df) == pytest.approx(sst.ppf(p, df), rel=1e-7)


def test_two_stage_estimate_by_hand():
    by = {"seed 0": [0.10, 0.12], "seed 1": [0.05], "seed 2": [0.20, 0.18, 0.22]}
    est = stats.replicated(by)
    means = [0.11, 0.05, 0.20]
    assert (est.tickets, est.retrains, est.df, est.scope) == (3, 6, 2, "tickets")
    assert est.mean == pytest.approx(statistics.fmean(means))
    assert est.se == pytest.approx(statistics.stdev(means) / math.sqrt(3))
    within = math.sqrt((1 * statistics.variance([0.10, 0.12]) + 2 * statistics.variance([0.20, 0.18, 0.22])) / 3)
    assert est.sd_within == pytest.approx(within)
    expect_between = math.sqrt(statistics.variance(means) - within**2 * statistics.fmean([1 / 2, 1, 1 / 3]))
    assert est.sd_between == pytest.approx(expect_between)
    iv = est.interval()
    assert iv.high - iv.low == pytest.approx(2 * 4.3027 * est.se, rel=1e-4)


def test_one_ticket_is_about_that_ticket_and_one_value_has_no_interval():
    est = stats.replicated({0: [0.02, 0.03, 0.025, 0.021]})
    assert (est.scope, est.tickets, est.retrains, est.df, est.sd_between) == ("ticket", 1, 4, 3, None)
    assert stats.verdict("random mask", est) == "this ticket beats random mask"
    one = stats.replicated({0: [0.1]})
    assert one.interval().low is None and one.p_difference() == 1.0
    assert stats.verdict("random mask", one) == "this ticket inconclusive vs random mask (one value: no interval)"


def _simulate(k_choices, retrains, rng, mu=0.02, sd_b=0.02, sd_w=0.01):
    k = rng.choice(k_choices)
    by = {}
    for t in range(k):
        effect = rng.gauss(mu, sd_b)  # this ticket's true margin
        by[t] = [effect + rng.gauss(0, sd_w) for _ in range(rng.choice(retrains))]
    return by


def _pooled(by):
    return stats.interval([x for v in by.values() for x in v])  # every retrain as if an independent ticket


@pytest.mark.parametrize("k_choices, retrains", [((3, 4, 5), (4,)), ((3, 4, 5), (1, 2, 4, 6)), ((8,), (2, 3))])
def test_coverage_of_the_two_stage_interval_is_95_and_the_pooled_one_undercovers(k_choices, retrains):
    """1,000 simulated studies with a known between-ticket sd (2 points) and within sd (1 point)."""
    rng = random.Random(20261203)
    mu = 0.02
    two, pooled = 0, 0
    sims = 1000
    for _ in range(sims):
        by = _simulate(k_choices, retrains, rng, mu)
        iv = stats.replicated(by).interval()
        two += iv.low <= mu <= iv.high
        p = _pooled(by)
        pooled += p.low <= mu <= p.high
    # binomial sd of a 95% coverage over 1,000 studies: 0.7 points
    assert 0.93 <= two / sims <= 0.97, two / sims
    assert pooled / sims < 0.85, pooled / sims


def test_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    assert stats.bh_adjusted(p) == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3 * 1.0, 0.20])
    assert stats.family(p, q=0.05).discoveries == 1  # 0.01 <= 0.05 / 4; 0.03 > 0.05 * 2 / 4; 0.04 > 0.05 * 3 / 4
    fam = stats.family([0.01, 0.02, 0.03, 0.5], q=0.05)  # 0.03 <= 0.05 * 3 / 4
    assert (fam.m, fam.discoveries) == (4, 3)
    assert fam.alpha == pytest.approx(3 * 0.05 / 4) and fam.level == pytest.approx(1 - 3 * 0.05 / 4)
    assert stats.family([0.5, 0.9]).discoveries == 0 and stats.family([0.5, 0.9]).alpha == pytest.approx(0.025)


def test_a_verdict_is_read_off_the_interval_at_its_level():
    est = stats.replicated({t: [d] * 2 for t, d in enumerate([0.02, 0.03, 0.025, 0.028])})
    for alpha in (0.05, 0.01, 0.001, 1e-5):
        iv = est.interval(1 - alpha)
        shown = stats.verdict("random mask", est, alpha)
        assert shown.startswith("beats") == (iv.low > 0)
        # the p-value and the interval agree at every level
        assert (est.p_difference() <= alpha) == (iv.low > 0 or iv.high < 0)
        assert (est.p_equivalence(0.05) <= alpha) == (-0.05 < iv.low and iv.high < 0.05)


@pytest.mark.parametrize("diffs, reference, expected", [
    ([0.02, 0.03, 0.025], False, "beats random mask"),
    ([-0.02, -0.03, -0.025], False, "below random mask"),
    ([0.001, -0.002, 0.0], True, "matches dense (within ±1.00 pt)"),
    ([-0.05, -0.06, -0.055], True, "below dense"),
    ([0.004, 0.005, 0.0045], True, "above dense, within ±1.00 pt"),
])
def test_verdict_words(diffs, reference, expected):
    label = "dense" if reference else "random mask"
    est = stats.replicated({i: [d] for i, d in enumerate(diffs)})
    assert stats.verdict(label, est, reference=reference) == expected


def test_an_inconclusive_verdict_says_how_many_tickets_would_decide_it():
    est = stats.replicated({i: [d] for i, d in enumerate([0.02, 0.03, 0.01])})  # mean 2, sd 1 point
    # n = 3: 4.303 / sqrt(3) = 2.48 > 2; n = 4: 3.182 / 2 = 1.59 < 2
    assert stats.n_needed(est, 0.0) == 4
    noisy = stats.replicated({i: [d] for i, d in enumerate([0.02, -0.03, 0.015])})
    assert "inconclusive vs random mask (about" in stats.verdict("random mask", noisy) and "tickets needed" in \
        stats.verdict("random mask", noisy)
    assert "no better" not in stats.verdict("random mask", noisy)


def test_resolution():
    assert stats.resolution(179) == pytest.approx(0.5587, abs=1e-4)
