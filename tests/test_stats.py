"""Paired intervals and verdicts, checked against hand computations."""

from __future__ import annotations

import math

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
    assert got.low == pytest.approx(mean - half) and got.high == pytest.approx(mean + half)


def test_t_quantiles_match_tables():
    assert stats.t975(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t975(10) == pytest.approx(2.228, abs=1e-3)
    assert stats.t975(40) == pytest.approx(2.021, abs=1e-3)  # beyond the table: Cornish-Fisher
    assert stats.t975(120) == pytest.approx(1.980, abs=1e-3)


def test_one_value_has_no_interval_and_is_inconclusive():
    d = stats.paired([0.9], [0.8])
    assert d.low is None and d.high is None
    assert stats.verdict("random-mask", "random mask", d) == "inconclusive vs random mask (n = 1)"


@pytest.mark.parametrize("arm,diffs,expected", [
    ("random-mask", [0.02, 0.03, 0.025], "beats random mask"),
    ("random-mask", [-0.02, -0.03, -0.025], "below random mask"),
    ("random-mask", [0.02, -0.03, 0.01], "no better than random mask (n = 3)"),
    ("dense", [0.001, -0.002, 0.0], "matches dense"),
    ("dense", [-0.05, -0.06, -0.055], "below dense"),
    ("dense", [0.0, -0.03, 0.02], "inconclusive vs dense (n = 3)"),
    ("own-ticket", [0.002, 0.001, 0.0], "matches own ticket"),
])
def test_verdicts(arm, diffs, expected):
    from ticketx.baselines import label

    d = stats.interval(diffs)
    assert stats.verdict(arm, label(arm), d) == expected


def test_n_needed_grows_as_the_effect_shrinks():
    big = stats.interval([0.02, 0.03, 0.01])
    small = stats.interval([0.002, 0.012, -0.004])
    # mean 2 points, sd 1 point: n = 3 gives 4.303 * 1 / sqrt(3) = 2.48 > 2; n = 4 gives 1.59 < 2
    assert stats.n_needed(big) == 4
    assert stats.n_needed(small) > 20


def test_resolution():
    assert stats.resolution(179) == pytest.approx(0.5587, abs=1e-4)
