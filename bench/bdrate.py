"""Bjontegaard delta rate (BD-rate) and delta quality between two rate-quality curves.

G. Bjontegaard, "Calculation of average PSNR differences between RD-curves", ITU-T SG16 Q.6
VCEG-M33 (2001): fit each curve's log-rate as a cubic polynomial of its quality, integrate both
fits over the quality range the two curves share, and turn the mean log-rate difference into a
percentage. A BD-rate of -10% means the test encoder needs 10% fewer bits than the reference for
the same quality, on average over the shared range; +15% means 15% more. The delta quality is the
same construction with the axes swapped (quality as a cubic of log-rate, over the shared log-rate
range).

With exactly four points per curve the cubic passes through every point (VCEG-M33 used four);
with more it is the least-squares cubic. Quality is any measure where higher is better, on a
scale where equal steps mean roughly equal improvements (PSNR in dB, or SSIM in dB,
``-10 log10(1 - SSIM)``, as the encode bench uses).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Points a curve needs: a cubic has four coefficients.
MIN_POINTS = 4


def _curve(rates: Sequence[float], quality: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, np.float64)
    q = np.asarray(quality, np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"{name}: rates and qualities must be two lists of one length")
    if len(r) < MIN_POINTS:
        raise ValueError(f"{name}: {len(r)} points, a cubic fit needs at least {MIN_POINTS}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise ValueError(f"{name}: rates and qualities must be finite")
    if np.any(r <= 0):
        raise ValueError(f"{name}: rates must be positive")
    if len(np.unique(q)) < len(q) or len(np.unique(r)) < len(r):
        raise ValueError(f"{name}: two points share a rate or a quality; the fit needs distinct ones")
    return np.log(r), q


def _mean_over(coeffs: np.ndarray, lo: float, hi: float) -> float:
    """Mean value of the polynomial ``coeffs`` (numpy order, highest power first) over [lo, hi]."""
    anti = np.polyint(coeffs)
    return float((np.polyval(anti, hi) - np.polyval(anti, lo)) / (hi - lo))


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise ValueError(f"the two curves share no {what} range ({a.min():g}..{a.max():g} and "
                         f"{b.min():g}..{b.max():g}): no Bjontegaard delta")
    return float(lo), float(hi)


def bd_rate(ref_rates: Sequence[float], ref_quality: Sequence[float],
            test_rates: Sequence[float], test_quality: Sequence[float]) -> float:
    """The test curve's average rate difference from the reference at equal quality, in percent
    (negative: the test needs fewer bits). Raises ``ValueError`` for curves that cannot be fitted
    or that share no quality range."""
    ref_lr, ref_q = _curve(ref_rates, ref_quality, "reference")
    test_lr, test_q = _curve(test_rates, test_quality, "test")
    lo, hi = _overlap(ref_q, test_q, "quality")
    ref_fit = np.polyfit(ref_q, ref_lr, 3)
    test_fit = np.polyfit(test_q, test_lr, 3)
    diff = _mean_over(test_fit, lo, hi) - _mean_over(ref_fit, lo, hi)
    return (math.exp(diff) - 1.0) * 100.0


def bd_quality(ref_rates: Sequence[float], ref_quality: Sequence[float],
               test_rates: Sequence[float], test_quality: Sequence[float]) -> float:
    """The test curve's average quality difference from the reference at equal rate, in the
    quality's own unit (positive: the test is better)."""
    ref_lr, ref_q = _curve(ref_rates, ref_quality, "reference")
    test_lr, test_q = _curve(test_rates, test_quality, "test")
    lo, hi = _overlap(ref_lr, test_lr, "rate")
    ref_fit = np.polyfit(ref_lr, ref_q, 3)
    test_fit = np.polyfit(test_lr, test_q, 3)
    return _mean_over(test_fit, lo, hi) - _mean_over(ref_fit, lo, hi)
