"""Knockout designs: which units each trial removes.

The balanced random design gives every unit (almost) the same number of knockouts, so no head is
estimated from fewer measurements than another; random tie-breaking decorrelates the columns.
"""

from __future__ import annotations

import math

import numpy as np


def knockouts_per_trial(n_units: int, sparsity: float) -> int:
    """k = ⌈s·N⌉, at least 1 and at most N."""
    return max(1, min(n_units, math.ceil(sparsity * n_units - 1e-9)))


def balanced_design(n_units: int, n_trials: int, k: int, seed: int = 0) -> np.ndarray:
    """A [n_trials, n_units] 0/1 matrix; each row knocks out ``k`` distinct units, least-used first.

    Usage counts differ by at most one between any two units at every point of the design (ties are
    broken by noise in [0, 0.5), which never outweighs a usage difference of one).
    """
    if not 1 <= k <= n_units:
        raise ValueError(f"k must be in 1..{n_units}, got {k}")
    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    rng = np.random.default_rng(seed)
    usage = np.zeros(n_units, dtype=np.int64)
    design = np.zeros((n_trials, n_units), dtype=np.int8)
    for t in range(n_trials):
        key = usage + 0.5 * rng.random(n_units)
        pick = np.argpartition(key, k - 1)[:k]
        design[t, pick] = 1
        usage[pick] += 1
    return design


def exhaustive_design(n_units: int) -> np.ndarray:
    """One unit per trial: the reference that costs N evaluations."""
    return np.eye(n_units, dtype=np.int8)
