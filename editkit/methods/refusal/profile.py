"""Ablation weight per layer: the strength profile of a refusal edit, one for attention writers and one for
MLP writers.

A profile maps a layer index to the weight ``s`` of its writers' projection (W ← W − s·r·rᵀ·W; 0 = the layer
is not edited). Two kinds:

* ``tent``: ``peak`` at layer ``position`` (a fractional layer index), falling linearly to ``floor`` at
  ``width`` layers either side, zero beyond — the kernel heretic searches (its max_weight, max_weight_position,
  min_weight, min_weight_distance); ``floor: 1`` with ``peak`` s is a flat window of strength s.
* ``free``: one weight per layer (``values``, as many as the model has layers).

A profile only says *how much* each layer is edited; the direction (which layer's, interpolated, per layer)
and the search over profiles live elsewhere (editkit.methods.refusal.direction, editkit.methods.refusal.optuna_search).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_WEIGHT = 2.0  # s = 2 reflects r instead of removing it; beyond that the edit only grows the component


class TentProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["tent"] = "tent"
    peak: float = Field(1.0, ge=0.0, le=MAX_WEIGHT, description="weight at `position` (0 = writers off)")
    position: float = Field(..., ge=0.0, description="layer index of the peak (may be fractional)")
    floor: float = Field(
        0.0, ge=0.0, le=MAX_WEIGHT, description="weight at `width` layers from the peak (linear in between)"
    )
    width: float = Field(
        ...,
        gt=0.0,
        description="half-width in layers: layers farther than this from `position` are not edited",
    )

    def weight(self, layer: int) -> float:
        dist = abs(layer - self.position)
        if dist > self.width:
            return 0.0
        return self.peak + (self.floor - self.peak) * dist / self.width


class FreeProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["free"] = "free"
    values: list[float] = Field(..., min_length=1, description="one weight per layer, in [0, 2]")

    @model_validator(mode="after")
    def _range(self):
        bad = [v for v in self.values if not 0.0 <= v <= MAX_WEIGHT]
        if bad:
            raise ValueError(f"values must be in [0, {MAX_WEIGHT}], got {bad[0]}")
        return self

    def weight(self, layer: int) -> float:
        return float(self.values[layer])


Profile = Annotated[TentProfile | FreeProfile, Field(discriminator="kind")]


def layer_weights(profile: TentProfile | FreeProfile, n_layers: int) -> list[float]:
    """The weight of every layer 0..n_layers-1 (checks a free profile's length)."""
    if isinstance(profile, FreeProfile) and len(profile.values) != n_layers:
        raise ValueError(f"a free profile needs {n_layers} values (one per layer), got {len(profile.values)}")
    return [profile.weight(li) for li in range(n_layers)]
