"""The ``method:`` block of a `refusal` recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from editkit.methods.base import MethodParams
from editkit.methods.refusal.atoms import ATOM_NAMES
from editkit.methods.refusal.profile import Profile


class SearchSpace(BaseModel):
    """Ranges of the Optuna search (``search: optuna``). Layer positions are fractions of the last layer
    index; weights are projection strengths (1 = remove r fully, up to 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    direction: tuple[float, float] = Field(
        (0.4, 0.9),
        description="fractional direction index, as fractions of depth (widened to hold the grid's layer)",
    )
    per_layer: bool = Field(
        False,
        description="also try each edited layer's own direction (a categorical beside the global index)",
    )
    attn_peak: tuple[float, float] = Field((0.5, 1.5), description="attention writers' peak weight")
    mlp_peak: tuple[float, float] = Field(
        (0.0, 1.5), description="MLP writers' peak weight (0: MLP not edited)"
    )
    position: tuple[float, float] = Field((0.4, 1.0), description="peak position, fractions of depth")
    floor: tuple[float, float] = Field((0.0, 1.0), description="floor weight as a fraction of the peak")
    width: tuple[float, float] = Field(
        (0.05, 1.0), description="half-width as fractions of depth (at least one layer)"
    )

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("direction", "attn_peak", "mlp_peak", "position", "floor", "width"):
            lo, hi = getattr(self, name)
            top = 2.0 if name.endswith("peak") else 1.0
            if not 0.0 <= lo <= hi <= top:
                raise ValueError(f"{name}: needs 0 <= low <= high <= {top}, got [{lo}, {hi}]")
        return self


#: where a search trial's refusal objective is stored, per ``search_objective``, and how it reads in words
OBJECTIVE_KEYS = {"log_odds": "refusal_log_odds", "generated": "val_refusal_rate"}
OBJECTIVE_LABELS = {
    "refusal_log_odds": "refusal log-odds",
    "val_refusal_rate": "refusal rate (generated, markers)",
}


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
    norm_preserving: bool | Literal["column", "row"] = Field(
        False,
        description="restore norms after the projection: true/'column' keeps every writer column's norm "
        "exactly (the residual vector each input feature writes; biprojected abliteration); 'row' every "
        "row's (heretic's approximation; r is then not removed exactly)",
    )
    harmless_mean_per_layer: bool = Field(
        False,
        description="project the direction off the harmless mean of each *edited* layer before removing it "
        "there (so no layer's ordinary activation is shrunk); the layer search still uses one direction",
    )
    null_space: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="AlphaEdit-style constraint: keep each writer's update off the principal subspace of its "
        "harmless inputs that holds this fraction of their energy (e.g. 0.99; null = off)",
    )
    null_space_prompts: int = Field(
        32, ge=1, description="harmless train prompts whose every token's writer inputs define that subspace"
    )
    attn_profile: Profile | None = Field(
        None,
        description="ablation weight per layer for attention out-projections: {kind: tent, peak, position, "
        "floor, width} or {kind: free, values: [...]}; null = `strength` on every edited layer (today's edit)",
    )
    mlp_profile: Profile | None = Field(
        None, description="the same for MLP down-projections (peak 0 = MLP not edited); null = attn_profile"
    )
    direction_index: float | None = Field(
        None,
        ge=0.0,
        description="take the direction at this fractional layer index (linear interpolation of the two "
        "neighbouring layers' directions); skips the layer search",
    )
    direction_per_layer: bool = Field(
        False, description="with a profile: remove each edited layer's own direction (not one direction)"
    )
    search: Literal["grid", "optuna"] = Field(
        "grid",
        description="grid: the layer/strength search above; optuna: that grid first, then a seeded "
        "multi-objective TPE over direction index and attention/MLP tent profiles (validation log-odds, KL)",
    )
    search_objective: Literal["log_odds", "generated"] = Field(
        "log_odds",
        description="search: optuna: the refusal objective of a trial: 'log_odds' (mean first-token refusal "
        "log-odds on the validation harmful prompts: one forward) or 'generated' (the share of them refused "
        "in objective_max_new_tokens greedy tokens, by keyword markers, as heretic counts: a generation per "
        "trial, but what the log-odds only promise)",
    )
    objective_max_new_tokens: int = Field(
        16, ge=1, description="search_objective: generated: greedy tokens per validation harmful prompt"
    )
    trials: int = Field(40, ge=1, description="search: optuna: trials (the grid optimum is the first)")
    startup_trials: int = Field(10, ge=1, description="search: optuna: random trials before TPE models")
    search_minutes: float | None = Field(
        None,
        gt=0,
        description="search: optuna: a wall-clock budget: no trial starts after this many minutes of the "
        "search (the grid optimum is always scored; the trial running then finishes); with it the number of "
        "trials depends on the machine's speed, so set it for a budget, leave it out for a reproducible run",
    )
    refusal_target: float | Literal["grid"] = Field(
        "grid",
        description="search: optuna: the pick is the lowest validation KL among trials whose refusal "
        "objective (log-odds, or the generated refusal rate) is at most this ('grid': the grid optimum's, so "
        "the pick is never worse on both)",
    )
    confirm: int = Field(
        3,
        ge=0,
        description="search: optuna: before the pick, generate (greedy, chat template, keyword markers) on the "
        "validation harmful prompts with this many lowest-KL eligible trials and the grid optimum; the pick is "
        "the lowest validation KL among them whose refusal rate is at most the grid optimum's (0: the "
        "log-odds rule alone)",
    )
    confirm_max_new_tokens: int = Field(
        32, ge=1, description="search: optuna: generated tokens per prompt when confirming"
    )
    search_space: SearchSpace = Field(default_factory=SearchSpace, description="search: optuna: ranges")
    compare_grid: bool = Field(
        True, description="search: optuna: also evaluate the grid optimum (today's edit) so the card has both"
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

    @model_validator(mode="after")
    def _search(self):
        if self.startup_trials > self.trials:
            raise ValueError(f"startup_trials ({self.startup_trials}) exceeds trials ({self.trials})")
        if self.direction_per_layer and self.attn_profile is None:
            raise ValueError(
                "direction_per_layer needs attn_profile (or search: optuna with search_space.per_layer)"
            )
        return self

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
