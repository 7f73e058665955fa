"""The statistics every report uses: one summary of timings (median, p90, p99, mean, min, max, n),
a paired bootstrap interval for the difference of two runs' timings over the same requests, and,
for accuracy on a test set, bootstrap intervals and McNemar's test on paired predictions."""

from __future__ import annotations

import numpy as np

from tlcut.errors import TlcutError


def summary(values, scale: float = 1.0) -> dict:
    """Summary of ``values`` times ``scale`` (1e3 turns seconds into milliseconds)."""
    a = np.asarray(values, dtype=np.float64) * scale
    if a.size == 0:
        raise TlcutError("nothing was timed; ask for at least one timed run")
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def paired_difference(a, b, resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy of ``b`` minus that of ``a`` (per-item 0/1 on the same items), in points, with a 95%
    paired bootstrap interval and the count of items each gets right that the other does not."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise TlcutError("a paired comparison needs the same items, at least one")
    d = b - a
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return {"diff_pts": float(d.mean() * 100), "mcnemar_p": mcnemar_p(only_a, only_b), "ci95_pts": _bootstrap_ci(d, resamples, seed),
            "only_a_right": only_a, "only_b_right": only_b, "n": int(d.size)}


def percentile_difference(a, b, q: float = 50, resamples: int = 2000, seed: int = 0) -> dict:
    """The ``q``-th percentile of timings ``a`` less that of ``b`` (the same requests, in order: two
    runs over the same frames and links), with a 95% paired bootstrap interval (the same requests
    resampled for both). ``verdict``: "higher" or "lower" where the interval excludes 0, else
    "not distinguishable": two runs of one placement differ by about as much as a policy's choice
    does, and a point estimate alone would call that noise a loss or a win."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise TlcutError("a paired comparison needs the same requests, at least one")
    idx = np.random.default_rng(seed).integers(0, a.size, (resamples, a.size))
    boots = np.percentile(a[idx], q, axis=1) - np.percentile(b[idx], q, axis=1)
    lo, hi = float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))
    return {"diff": float(np.percentile(a, q) - np.percentile(b, q)), "ci95": [lo, hi], "n": int(a.size),
            "verdict": "higher" if lo > 0 else "lower" if hi < 0 else "not distinguishable"}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: the chance of a split of the discordant items at least this
    uneven if neither classifier were better (binomial, p = 1/2). 1.0 when they never disagree."""
    from math import comb

    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n))


def accuracy_interval(hits, resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy of per-item 0/1 ``hits`` in points with its 95% bootstrap interval."""
    h = np.asarray(hits, dtype=np.float64)
    if h.size == 0:
        raise TlcutError("an accuracy needs at least one item")
    return {"pts": float(h.mean() * 100), "ci95_pts": _bootstrap_ci(h, resamples, seed), "n": int(h.size)}


def _bootstrap_ci(items: np.ndarray, resamples: int, seed: int) -> list[float]:
    """95% percentile interval of the mean of ``items``, in points (x100), resampling the items."""
    boots = items[np.random.default_rng(seed).integers(0, items.size, (resamples, items.size))].mean(axis=1) * 100
    return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
