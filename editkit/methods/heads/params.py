"""The ``method:`` block of a `heads` recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from editkit.methods.base import MethodParams


class HeadsParams(MethodParams):
    name: str = "heads"
    heads: list[tuple[int, int]] | None = Field(
        None, description="explicit [layer, head] pairs to knock out (skips discovery)"
    )
    scale: float = Field(0.0, description="factor for the chosen heads' outputs (0 = knock out)")
    design: Literal["balanced", "exhaustive"] = Field(
        "balanced",
        description="balanced: m random trials of k heads (compressed sensing); exhaustive: one head per trial",
    )
    trials: int = Field(100, ge=2, description="m, the number of knockout trials of the balanced design")
    sparsity: float = Field(0.02, gt=0, le=1, description="s: each trial knocks out k = ceil(s*N) heads")
    knockouts: int | None = Field(None, ge=1, description="k heads per trial (overrides sparsity)")
    solver: Literal["lasso", "lasso_cv", "omp"] = Field("lasso", description="sparse recovery (scikit-learn)")
    alpha: float = Field(0.01, gt=0, description="Lasso L1 strength (on z-scored scores)")
    refine: int = Field(
        0,
        ge=0,
        description="balanced design: knock out the sparse fit's top-R candidates one at a time and rank "
        "them by their measured drop (R more evaluations; 0 = rank by the coefficients alone)",
    )
    top_k: int = Field(5, ge=1, description="how many heads (most negative coefficients) form the edit")
    score: Literal["logprob", "margin", "accuracy"] = Field(
        "margin",
        description="task score per trial: mean gold log-prob, mean margin l(correct)-l(incorrect), "
        "or pairwise accuracy",
    )
    items: int = Field(
        32, ge=1, description="size of the fixed subset of target train items scored per trial"
    )
    batch_rows: int | None = Field(
        None,
        ge=1,
        description="rows per forward (items x masks, at least one mask); default 128 on CPU (the measured "
        "sweet spot: larger forwards are slower per row, BENCHMARKS.md); on an accelerator as many as fit "
        "in half its free memory, up to 2048",
    )
    max_length: int = Field(128, ge=2, description="token limit per item")

    @field_validator("heads")
    @classmethod
    def _non_empty(cls, v):
        if v is not None and len(v) == 0:
            raise ValueError("must list at least one [layer, head] pair")
        return v
