"""The ``method:`` block of a `scalpel` recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from editkit.methods.base import MethodParams
from editkit.methods.lora import Role


class ScalpelParams(MethodParams):
    name: str = "scalpel"
    rank: int = Field(2, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is (alpha/r)·B·A")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="LoRA dropout on the adapter input; its masks follow from the seed, step and micro-batch alone",
    )
    targets: list[Role] = Field(
        ["q", "k", "v", "o", "gate", "up", "down"],
        description="anatomy roles that get an adapter (fused qkv / gate_up stand in where the model has them; "
        "on a mixture of experts also router and experts)",
    )
    layers: Literal["all"] | list[int] = Field("all", description="'all' or a list of layer indices")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    steps: int = Field(200, ge=1, description="maximum optimizer steps")
    batch_size: int = Field(16, ge=1, description="target triplets per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up steps")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (null = off)")
    equalisation: Literal["squared", "absolute"] = Field(
        "squared", description="L_eq = mean (ℓ⁺ − ℓ⁻)² or mean |ℓ⁺ − ℓ⁻|"
    )
    text_reg: Literal["kl", "magnitude"] = Field(
        "kl", description="general-text regulariser: KL(p_base ‖ p_edit) or adapter output magnitude"
    )
    lambda_text: float = Field(1.0, ge=0, description="weight of the general-text regulariser")
    lambda_norm: float = Field(0.0, ge=0, description="weight of Σ‖(α/r)BA‖²_F")
    lambda_sparse: float = Field(0.0, ge=0, description="weight of the group lasso Σ‖(α/r)BA‖_F")
    lambda_repr: float = Field(
        0.0,
        ge=0,
        description="weight of the representation term: the answer classes' between-class share of the residual "
        "stream at the last prompt token (frames centred apart), at repr_layer_fracs of the depth, pushed to 0 — "
        "so no linear probe reads the class there (LEACE's condition); 0 = the paper's loss alone",
    )
    repr_layer_fracs: list[float] = Field(
        default_factory=lambda: [0.25, 0.5],
        description="with lambda_repr: the layers (fractions of the depth) whose input the term reads",
    )
    prompt_once: bool = Field(
        False,
        description="read each target prompt once for both answers (a KV cache shared by the two): the same loss, "
        "~10 % faster fits on short prompts (demo remove_moral: fit 303 → 272 s), but other kernel shapes, so the "
        "edit differs from the default's in the last digits (demo: edited perplexity 30.235 → 30.215); no effect "
        "with lambda_repr > 0, whose term reads one row per answer",
    )
    text_batch_size: int = Field(4, ge=1, description="general-text rows per micro-batch")
    text_max_length: int = Field(64, ge=2, description="tokens per general-text row")
    max_length: int = Field(128, ge=2, description="tokens per prompt+answer row")
    val_fraction: float = Field(
        0.15, ge=0, lt=1, description="share of the train split held out for validation / early stopping"
    )
    eval_every: int = Field(10, ge=0, description="validate every N steps (0 = never)")
    early_stop_gap: float | None = Field(
        0.05, gt=0, description="stop when mean |ℓ⁺ − ℓ⁻| on the validation slice is below this"
    )
    early_stop_accuracy_eps: float | None = Field(
        None, gt=0, description="stop when validation accuracy is within this of 0.5"
    )
    checkpoint_every: int = Field(
        25, ge=0, description="write a resumable checkpoint every N steps (0 = off)"
    )

    @field_validator("targets")
    @classmethod
    def _targets(cls, v):
        if not v:
            raise ValueError("must name at least one role (q, k, v, o, gate, up, down, qkv, gate_up)")
        return list(dict.fromkeys(v))

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("must list at least one layer index, or be 'all'")
            if any(i < 0 for i in v):
                raise ValueError("layer indices must be >= 0")
        return v
