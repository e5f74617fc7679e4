"""The ``method:`` block of a `neurons` recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from editkit.methods.base import MethodParams


class NeuronsParams(MethodParams):
    name: str = "neurons"
    neurons: list[tuple[int, int] | tuple[int, int | Literal["shared"], int]] | None = Field(
        None,
        description="explicit [layer, neuron] pairs to erase (skips discovery); on a mixture of experts "
        "[layer, expert, neuron] (expert: its index, or 'shared')",
    )
    scale: float = Field(0.0, description="factor for the chosen neurons (0 = erase, >1 = enhance)")
    attribution: Literal["ig", "act_x_grad"] = Field(
        "ig", description="integrated gradients over the activation, or activation x gradient (fast)"
    )
    steps: int = Field(20, ge=1, description="integrated-gradient steps m (activation scaled 0 -> value)")
    scope: Literal["joint", "layer"] = Field(
        "joint",
        description="joint: all layers' neurons scaled together (m rows per sample); "
        "layer: one layer at a time, others intact (layers*m rows per sample)",
    )
    target: Literal["prob", "logprob"] = Field("prob", description="F: gold answer probability or log-prob")
    threshold: float = Field(0.3, gt=0, le=1, description="t: keep neurons with attribution > t * sample max")
    top_q: int | None = Field(
        None, ge=1, description="keep each sample's top-q neurons instead of the threshold"
    )
    min_share: float = Field(
        0.5, gt=0, le=1, description="p: a dataset keeps neurons kept in >= p of its samples"
    )
    datasets: list[str] | None = Field(
        None,
        description="names of data.sets with triplets of the same capability (default: split target train)",
    )
    n_splits: int = Field(
        2, ge=2, description="disjoint parts of the target train sample when datasets is unset"
    )
    samples: int = Field(32, ge=2, description="samples attributed per dataset (default design: in total)")
    max_neurons: int = Field(
        200, ge=1, description="cap on the neurons erased (largest mean attribution kept)"
    )
    batch_rows: int = Field(40, ge=1, description="rows (sample x path point) per forward/backward")
    max_length: int = Field(128, ge=2, description="token limit per item")

    @field_validator("neurons")
    @classmethod
    def _non_empty(cls, v):
        if v is not None and len(v) == 0:
            raise ValueError("must list at least one [layer, neuron] pair")
        return v

    @field_validator("datasets")
    @classmethod
    def _two_sets(cls, v):
        if v is not None and len(set(v)) < 2:
            raise ValueError("CNL needs at least two different datasets of the same capability")
        return v
