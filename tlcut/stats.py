"""The one summary of a sample of timings that every report uses: median, p90, p99, mean, min, max, n."""

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
