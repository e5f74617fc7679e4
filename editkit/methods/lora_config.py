"""The settings and the outcome of the shared LoRA training loop (``editkit.methods.lora_fit``):
``TrainConfig`` (steps, learning rate and warm-up, accumulation, clipping, validation and checkpoint
cadence, resume and its fingerprint) and ``TrainResult`` (steps run, why it stopped, the per-step history
and validations, time and tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TrainConfig", "TrainResult"]


@dataclass
class TrainConfig:
    steps: int
    lr: float
    grad_accum: int = 1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    eval_every: int = 0  # 0 = never call ``validate``
    checkpoint_every: int = 0  # 0 = never (a checkpoint is still written on Ctrl-C when a dir is given)
    checkpoint_dir: Path | None = None
    keep_checkpoints: int = 1
    resume: bool = False
    #: anything that must match between the run that wrote a checkpoint and the one resuming it
    fingerprint: str = ""
    stage: str = "fit"

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then constant."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr


@dataclass
class TrainResult:
    steps_run: int  # optimizer steps done in total (including those before a resume)
    stop_reason: str  # "steps", or the reason ``validate`` gave
    history: list[dict] = field(default_factory=list)  # one {"step", "loss", "terms", "metrics"} per step
    validations: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    seconds: float = 0.0
    tokens: int = 0
