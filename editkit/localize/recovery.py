"""Sparse recovery of per-unit effects from knockout trials (compressed sensing).

y_t (a task score of trial t) ≈ b + Σ_j x_tj·β_j with x_tj = 1 when unit j was knocked out; a capability
head has a large negative β_j. With few heads that matter, an L1 fit recovers β from far fewer trials
than units.
"""

from __future__ import annotations

import warnings

import numpy as np

SOLVERS = ("lasso", "lasso_cv", "omp")


def zscore(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    sd = y.std()
    return (y - y.mean()) / sd if sd > 0 else np.zeros_like(y)


def sparse_recovery(
    X: np.ndarray,
    y: np.ndarray,
    solver: str = "lasso",
    alpha: float = 0.01,
    n_nonzero: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, float, dict]:
    """Fit z-scored ``y`` on the 0/1 knockout matrix ``X``; return (coefficients, R², extra info)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso, LassoCV, OrthogonalMatchingPursuit

    X = np.asarray(X, dtype=np.float64)
    yz = zscore(y)
    extra: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if solver == "lasso":
            model = Lasso(alpha=alpha, max_iter=50_000, tol=1e-6)
        elif solver == "lasso_cv":
            model = LassoCV(cv=min(5, len(yz)), max_iter=50_000, random_state=seed)
        elif solver == "omp":
            model = OrthogonalMatchingPursuit(
                n_nonzero_coefs=min(n_nonzero or 10, X.shape[0] - 1, X.shape[1])
            )
        else:
            raise ValueError(f"unknown solver '{solver}' (one of {', '.join(SOLVERS)})")
        model.fit(X, yz)
    if solver == "lasso_cv":
        extra["alpha"] = float(model.alpha_)
    coef = np.asarray(model.coef_, dtype=np.float64)
    r2 = float(model.score(X, yz)) if yz.std() > 0 else 0.0
    return coef, r2, extra
