"""The Bjontegaard delta rate of the encode bench (bench/bdrate.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bdrate import bd_quality, bd_rate

# A realistic curve: kbit/s and SSIM dB of an encoder at five quantizers.
RATES = [1800.0, 900.0, 420.0, 190.0, 95.0]
QUALITY = [21.0, 18.2, 15.1, 12.4, 10.3]


def test_identical_curves_give_zero():
    assert bd_rate(RATES, QUALITY, RATES, QUALITY) == pytest.approx(0.0, abs=1e-9)
    assert bd_quality(RATES, QUALITY, RATES, QUALITY) == pytest.approx(0.0, abs=1e-9)


def test_half_the_rate_at_every_quality_is_minus_50_percent():
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, QUALITY, half, QUALITY) == pytest.approx(-50.0, abs=1e-9)
    # and the reference against the test: twice the rate, +100%
    assert bd_rate(half, QUALITY, RATES, QUALITY) == pytest.approx(100.0, abs=1e-9)


def test_quality_shift_at_equal_rates_is_the_delta_quality():
    better = [q + 0.7 for q in QUALITY]
    assert bd_quality(RATES, QUALITY, RATES, better) == pytest.approx(0.7, abs=1e-9)
    # More quality for the same bits means fewer bits for the same quality.
    assert bd_rate(RATES, QUALITY, RATES, better) < 0


def test_only_the_shared_quality_range_counts():
    # The test curve covers only the upper part of the reference's range, at 80% of its rate
    # there (log-rate a straight line of quality on both, so the fits are exact).
    ref_q = [10.0, 12.0, 14.0, 16.0, 18.0]
    ref_r = [math.exp(0.3 * q) for q in ref_q]
    test_q = [14.0, 15.0, 16.0, 17.0, 18.0]
    test_r = [0.8 * math.exp(0.3 * q) for q in test_q]
    assert bd_rate(ref_r, ref_q, test_r, test_q) == pytest.approx(-20.0, abs=1e-9)


def test_a_hand_integrated_case():
    # log-rate = q on the reference, 2q - 10 on the test, both over q in [10, 13]: the mean
    # difference of (q - 10) over [10, 13] is 1.5, so BD-rate = e^1.5 - 1.
    q = [10.0, 11.0, 12.0, 13.0]
    ref = [math.exp(x) for x in q]
    test = [math.exp(2 * x - 10) for x in q]
    assert bd_rate(ref, q, test, q) == pytest.approx((math.exp(1.5) - 1) * 100, rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.05, 20.0), st.permutations(range(5)))
def test_a_constant_rate_factor_is_found_whatever_the_point_order(factor, order):
    r = [RATES[i] * factor for i in order]
    q = [QUALITY[i] for i in order]
    assert bd_rate(RATES, QUALITY, r, q) == pytest.approx((factor - 1) * 100, rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("ref_q,test_q,match", [
    (QUALITY, [q + 30 for q in QUALITY], "share no quality range"),
    (QUALITY[:3], QUALITY[:3], "at least 4"),
    (QUALITY, [21.0, 21.0, 15.1, 12.4, 10.3], "distinct"),
])
def test_curves_that_cannot_be_compared_raise(ref_q, test_q, match):
    with pytest.raises(ValueError, match=match):
        bd_rate(RATES[:len(ref_q)], ref_q, RATES[:len(test_q)], test_q)


def test_non_positive_or_non_finite_rates_raise():
    with pytest.raises(ValueError, match="positive"):
        bd_rate(RATES, QUALITY, [0.0] + RATES[1:], QUALITY)
    with pytest.raises(ValueError, match="finite"):
        bd_rate(RATES, QUALITY, RATES, [np.inf] + QUALITY[1:])
