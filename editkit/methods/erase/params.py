"""The ``method:`` block of an `erase` recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from editkit.data.capabilities import BUILTIN_CAPABILITIES
from editkit.methods.base import MethodParams

WRITERS = ("o", "down")


class EraseParams(MethodParams):
    name: str = "erase"
    layers: list[int] | None = Field(
        None,
        description="layers whose residual stream (the input of layer l; 0 = the embedding output) the class "
        "directions are estimated at (default: the layers at layer_fracs of the depth)",
    )
    layer_fracs: list[float] = Field(
        default_factory=lambda: [0.25, 0.5],
        description="with layers unset: estimate at floor(f * n_layers) for each fraction f",
    )
    rank: int = Field(
        2,
        ge=1,
        le=64,
        description="directions kept per estimated layer and round: the top eigenvectors of the between-class "
        "scatter of the frame-centred activations (2 classes in F frames span at most F directions)",
    )
    rounds: int = Field(
        1,
        ge=1,
        le=8,
        description="re-estimate on the model with the directions found so far removed and add the new ones "
        "(what is left separable after the first erasure; each round is one more pass over the train prompts)",
    )
    classes: Literal["answer", "pair"] = Field(
        "answer",
        description="'answer': a class per correct answer (stripped, lower-cased), means pooled over frames after "
        "each frame is centred (moral: bad/good, wrong/right, cruel/kind; capitals: one per city); 'pair': two "
        "classes per answer pair (which of the two is correct), as the separation AUC counts them",
    )
    frames: list[str] | None = Field(
        None, description="train frames ('frame' column) the statistics use (default: all of them)"
    )
    max_items: int | None = Field(
        None, ge=2, description="at most this many train items (stratified by frame, then class); default all"
    )
    positions: int = Field(
        1, ge=1, description="average the residual over the last N prompt tokens (1 = the last token)"
    )
    min_class_items: int = Field(
        1, ge=1, description="classes with fewer train items than this are left out of the statistics"
    )
    edit_layers: list[int] | None = Field(
        None, description="layers whose residual writers are edited (default: every layer)"
    )
    writers: list[Literal["o", "down"]] = Field(
        default_factory=lambda: list(WRITERS),
        description="which writers of the edited layers are orthogonalised: attention o_proj ('o'), MLP "
        "down_proj ('down'; on a mixture of experts every expert's and the shared one)",
    )
    embeddings: bool = Field(
        False,
        description="also orthogonalise the input embeddings (refused on tied embeddings: the output head "
        "would change too); without it the embedding's own component along the directions stays",
    )
    strength: float = Field(
        1.0, ge=0.0, le=1.0, description="s in W ← W − s·Σ r rᵀ·W (1 = every direction removed fully)"
    )
    batch_size: int = Field(16, ge=1, description="prompts per forward pass while collecting activations")
    protect: list[str] = Field(
        default_factory=list,
        description="capabilities to keep (built-in names or triplet files): their own class directions are "
        "estimated at the same layers from their train split, and the erased directions are made orthogonal "
        "to all of them (moral shares valence with sentiment: protect: [sentiment])",
    )
    protect_rank: int = Field(
        1, ge=1, le=16, description="class directions per protected capability and estimated layer"
    )

    @field_validator("protect")
    @classmethod
    def _protect(cls, v):
        for name in v:
            if name not in BUILTIN_CAPABILITIES and not Path(name).expanduser().is_file():
                known = ", ".join(BUILTIN_CAPABILITIES)
                raise ValueError(f"'{name}' is neither a built-in capability ({known}) nor a triplet file")
        return list(dict.fromkeys(v))

    @field_validator("layer_fracs")
    @classmethod
    def _fracs(cls, v):
        if not v or any(not 0.0 <= f < 1.0 for f in v):
            raise ValueError(f"must be a non-empty list of fractions in [0, 1), got {v}")
        return v

    @field_validator("writers")
    @classmethod
    def _writers(cls, v):
        if not v:
            raise ValueError("must name at least one writer ('o', 'down')")
        return list(dict.fromkeys(v))
