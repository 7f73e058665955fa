"""Intervals and tests that the accuracy reports stand on, checked against hand-computed values."""

import numpy as np
import pytest

from tlcut.errors import TlcutError
from tlcut.stats import accuracy_interval, mcnemar_p, paired_difference, percentile_difference


@pytest.mark.parametrize("a,b,p", [(0, 0, 1.0), (1, 0, 1.0), (5, 5, 1.0), (10, 2, 0.0385742), (0, 6, 0.03125),
                                   (7, 1, 0.0703125)])
def test_mcnemar_exact_p(a, b, p):
    assert mcnemar_p(a, b) == pytest.approx(p, abs=1e-6)
    assert mcnemar_p(b, a) == pytest.approx(p, abs=1e-6)  # two-sided


def test_paired_difference_counts_and_interval():
    base = np.array([1] * 80 + [0] * 20)
    other = base.copy()
    other[:6] = 0  # six the baseline got right, this one not
    other[80:82] = 1  # two the other way
    d = paired_difference(base, other)
    assert d["diff_pts"] == pytest.approx(-4.0)
    assert (d["only_a_right"], d["only_b_right"]) == (6, 2)
    assert -10.0 < d["ci95_pts"][0] < -4.0 < d["ci95_pts"][1] < 2.0
    assert d["mcnemar_p"] == pytest.approx(mcnemar_p(6, 2))
    same = paired_difference(base, base)
    assert same["ci95_pts"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0


def test_accuracy_interval_narrows_with_more_items():
    small, large = accuracy_interval([1, 0, 1, 1] * 25), accuracy_interval([1, 0, 1, 1] * 400)
    for r in (small, large):
        assert r["pts"] == pytest.approx(75.0)
        assert r["ci95_pts"][0] < 75.0 < r["ci95_pts"][1]
    assert np.diff(large["ci95_pts"])[0] < np.diff(small["ci95_pts"])[0] / 2
    with pytest.raises(TlcutError):
        accuracy_interval([])


def test_percentile_difference_tells_a_shift_from_noise():
    rng = np.random.default_rng(3)
    base = 120 + rng.normal(0, 5, 300)  # one run's request times
    again = 120 + rng.normal(0, 5, 300)  # the same placement run again: only noise apart
    same = percentile_difference(again, base)
    assert same["verdict"] == "not distinguishable" and same["ci95"][0] < 0 < same["ci95"][1]
    assert same["diff"] == pytest.approx(np.median(again) - np.median(base))
    slower = percentile_difference(base + 3.0, base)
    assert slower["verdict"] == "higher" and slower["diff"] == pytest.approx(3.0) and slower["ci95"][0] > 0
    faster = percentile_difference(base - 3.0, base, q=99)
    assert faster["verdict"] == "lower" and faster["diff"] == pytest.approx(-3.0)
    with pytest.raises(TlcutError):
        percentile_difference(base, base[:-1])
