"""The ``method:`` block of a `sft` recipe."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from editkit.methods.base import MethodParams


class SftParams(MethodParams):
    name: str = "sft"
    sets: list[str] = Field(
        default_factory=lambda: ["train"], description="names of data.sets whose prompts are trained on"
    )
    templates: dict[str, list[str]] = Field(
        default_factory=dict, description="set name -> responses cycled over that set's prompts"
    )
    base_answers: list[str] = Field(
        default_factory=list,
        description="set names answered with the base model's own greedy chat answer (keeps them unchanged)",
    )
    distill: list[str] = Field(
        default_factory=list,
        description="set names learned by matching the base model's next-token distribution on the response "
        "tokens (KL to base) instead of cross-entropy on them; use with base_answers to leave those prompts unchanged",
    )
    distill_weight: float = Field(1.0, gt=0, description="weight of the KL term of the distill sets")
    kl_general: float = Field(
        0.0,
        ge=0,
        description="weight of KL(base ‖ model) on general-text rows (data.general, train split) per step; "
        "0 = off. Keeps perplexity where it was",
    )
    text_batch_size: int = Field(4, ge=1, description="general-text rows per step when kl_general > 0")
    text_max_length: int = Field(128, ge=8, description="max tokens per general-text row")
    max_per_set: int = Field(128, ge=1, description="prompts used from each set")
    base_answer_tokens: int = Field(64, ge=1, description="max new tokens of a cached base answer")
    rank: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (merged scale = alpha / rank)")
    targets: list[str] = Field(
        default_factory=lambda: ["q", "k", "v", "o", "gate", "up", "down"],
        description="anatomy roles to adapt (q, k, v, o, qkv, gate, up, gate_up, down; router, experts on a MoE)",
    )
    layers: list[int] | None = Field(None, description="layers to adapt (default: all)")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate")
    epochs: float = Field(2.0, gt=0, description="passes over the pairs")
    batch_size: int = Field(8, ge=1, description="pairs per optimizer step")
    grad_accum: int = Field(
        1,
        ge=1,
        description="micro-batches the step's batch is split into (under accelerate launch the processes share "
        "them: use a multiple of the process count)",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_length: int = Field(256, ge=8, description="max tokens per pair (prompt + response; truncated)")
    eval_harmful: str | None = Field(
        None, description="data.sets name whose prompts give 'refusal_rate' (greedy, chat template)"
    )
    eval_harmless: str | None = Field(
        None, description="data.sets name whose prompts give 'over_refusal_rate' and 'harmless_kl'"
    )
    eval_max_prompts: int = Field(50, ge=1, description="prompts per evaluation set")
    eval_max_new_tokens: int = Field(100, ge=1, description="generated tokens per evaluated prompt")

    @field_validator("sets")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("must name at least one data set")
        return v

    @model_validator(mode="after")
    def _distill_in_sets(self):
        extra = [s for s in self.distill if s not in self.sets]
        if extra:
            raise ValueError(f"distill: '{extra[0]}' is not one of sets {self.sets}")
        return self
