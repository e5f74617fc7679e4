"""The ``method:`` block of a `refusal` recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from editkit.methods.base import MethodParams
from editkit.refusal.atoms import ATOM_NAMES


class RefusalParams(MethodParams):
    name: str = "refusal"
    harmful: str = Field("harmful", description="data.sets name of harmful prompts (direction)")
    harmless: str = Field("harmless", description="data.sets name of harmless prompts (direction)")
    harmful_val: str = Field(
        "harmful_val", description="data.sets name for the layer score (default: the tail of 'harmful')"
    )
    harmless_val: str = Field(
        "harmless_val", description="data.sets name for the KL limit (default: the tail of 'harmless')"
    )
    harmful_test: str = Field("harmful_test", description="data.sets name for refusal_rate")
    harmless_test: str = Field(
        "harmless_test", description="data.sets name for over_refusal_rate and harmless_kl"
    )
    n_train: int = Field(128, ge=2, description="prompts per class for the difference of means")
    n_val: int = Field(16, ge=1, description="prompts per class for the layer score")
    positions: int = Field(1, ge=1, description="average the last N prompt tokens (1 = the last token)")
    project_off_harmless_mean: bool = Field(
        False, description="remove the harmless-mean component from the direction before normalising"
    )
    winsorize: float = Field(
        0.0, ge=0.0, lt=0.5, description="clip each coordinate to its [q, 1-q] quantiles first (0 = off)"
    )
    layer: int | None = Field(None, description="use this layer's direction (skips the layer search)")
    max_layer_frac: float = Field(
        0.8, gt=0.0, le=1.0, description="candidate layers are those below this fraction of depth"
    )
    min_layer: int = Field(1, ge=0, description="first candidate layer")
    kl_limit: float = Field(
        0.1, gt=0, description="first-token KL on harmless val prompts a candidate may cost"
    )
    refusal_tokens: list[str] = Field(
        default_factory=lambda: ["I", "Sorry", "As", "Unfortunately"],
        description="strings whose first token starts a refusal (the cheap layer score's log-odds)",
    )
    sra: bool | Literal["auto"] = Field(
        True,
        description="clean the direction against concept atoms (false = plain abliteration; 'auto': SRA and "
        "plain are both searched at the chosen layer and the validation score picks)",
    )
    compare_plain: bool = Field(
        True,
        description="with sra: also fit plain abliteration at the chosen layer under the same KL limit and "
        "evaluate it, so the card reports both",
    )
    atoms: list[str] = Field(
        default_factory=lambda: list(ATOM_NAMES),
        description=f"built-in concept atoms to protect ({', '.join(ATOM_NAMES)})",
    )
    atom_sets: list[str] = Field(
        default_factory=list, description="extra atoms: data.sets names with 'prompt' and 'contrast' columns"
    )
    pca_atoms: int = Field(
        0,
        ge=0,
        le=64,
        description="also protect the top-k principal components of the harmless train prompts' activations "
        "at each layer (the atoms abliterix builds; 0 = off; atoms: [] with pca_atoms: 8 is abliterix's choice)",
    )
    ridge_alpha: float = Field(0.01, ge=0, description="SRA ridge α (→ 0: exactly orthogonal to every atom)")
    norm_preserving: bool = Field(
        False, description="exact norm-preserving projection (keeps every writer column's norm)"
    )
    strength: float | Literal["auto"] = Field(
        1.0,
        description="s in W ← W − s·r·rᵀ·W (1 = remove r fully); 'auto': at full strength first, then for the "
        "strength_layers most promising candidates over kl_limit, the largest s whose val KL fits (searched)",
    )
    strength_steps: int = Field(
        4,
        ge=1,
        le=12,
        description="strength: auto evaluates this many strengths per weakened candidate",
    )
    strength_layers: int = Field(
        3,
        ge=1,
        description="strength: auto weakens this many candidates over kl_limit (those whose log-odds, scaled "
        "to the limit assuming KL ∝ s², promise most)",
    )
    strength_by_layer: dict[int, float] = Field(
        default_factory=dict, description="per-layer strength overrides {layer: s}"
    )
    edit_layers: list[int] | None = Field(None, description="layers whose writers are edited (default: all)")
    edit_from: int | Literal["auto"] | None = Field(
        None,
        description="first layer whose writers are edited (with edit_layers: the listed layers from it on); "
        "'auto': chosen together with the direction layer, from floor(f * layer) for f in edit_from_fracs",
    )
    edit_from_fracs: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 0.75, 1.0],
        description="edit_from: auto tries these fractions of the candidate direction layer",
    )
    embeddings: bool = Field(
        False,
        description="also orthogonalise the input embeddings (refused on tied embeddings: the output "
        "head would change too)",
    )
    eval_max_prompts: int = Field(50, ge=1, description="prompts per evaluation set (refusal, KL)")
    eval_max_new_tokens: int = Field(100, ge=1, description="generated tokens for the refusal rate")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="prompts per forward pass; default 16 on CPU, on an accelerator as many as fit in half "
        "its free memory, up to 64",
    )

    @field_validator("edit_from", mode="before")
    @classmethod
    def _edit_from(cls, v):
        if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError(f"must be a layer index >= 0 or 'auto', got {v!r}")

    @field_validator("edit_from_fracs")
    @classmethod
    def _fracs(cls, v):
        if not v or any(not 0.0 <= f <= 1.0 for f in v):
            raise ValueError(f"must be a non-empty list of fractions in [0, 1], got {v}")
        return v

    @field_validator("strength", mode="before")
    @classmethod
    def _strength(cls, v):
        if v == "auto" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0):
            return v
        raise ValueError(f"must be a number in [0, 1] or 'auto', got {v!r}")

    @field_validator("strength_by_layer")
    @classmethod
    def _strengths(cls, v):
        bad = {k: s for k, s in v.items() if not 0.0 <= s <= 1.0}
        if bad:
            raise ValueError(f"strengths must be in [0, 1], got {bad}")
        return v
