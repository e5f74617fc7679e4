"""Event-writing helpers for the monitor tests: realistic events.jsonl files with fixed timestamps.

Timestamps are fixed (T0 + offsets) so everything the monitor derives from them (elapsed, ETA, log
times) is reproducible and the SVG snapshots stay stable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

T0 = 1_750_000_000.0
STAGES = ["load", "data", "eval_base", "fit", "eval_edited", "control", "checks", "export", "card"]


class EventWriter:
    """Appends events to run_dir/events.jsonl the way a run does (one line, flushed, fsync'd)."""

    def __init__(self, run_dir: Path, t0: float = T0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "events.jsonl"
        self.t = t0

    def emit(self, type_: str, dt: float = 1.0, **fields: Any) -> dict[str, Any]:
        self.t += dt
        event = {"ts": self.t, "type": type_, "run_id": self.run_dir.name, **fields}
        self.write_raw(json.dumps(event) + "\n")
        return event

    def write_raw(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    # ------------------------------------------------------------- building blocks

    def start(
        self, name: str = "remove_moral", method: str = "scalpel", pid: int | None = None, **kw
    ) -> None:
        self.emit(
            "run_start",
            dt=0.0,
            name=name,
            method=method,
            model=kw.get("model", "SmolLM2-135M-Instruct"),
            seed=kw.get("seed", 1234),
            recipe_hash=kw.get("recipe_hash", "3f9a0c1d2e4b5a6978abcdef01234567"),
            recipe={"name": name, "method": {"name": method}},
            editkit_version="0.1.0",
            pid=pid if pid is not None else 2_000_000_000,  # above pid_max: never alive
            stages=kw.get("stages", STAGES),
        )

    def stage(self, stage: str, total: int | None = None, seconds: float = 2.0) -> None:
        self.emit("stage_start", stage=stage, total=total)
        if total:
            for done in range(1, total + 1):
                self.emit("progress", dt=seconds / total, stage=stage, done=done, total=total)
        self.emit("stage_end", dt=0.0, stage=stage, seconds=seconds)

    def steps(self, first: int, last: int, total: int) -> None:
        for i in range(first, last + 1):
            eq = round(1.0 / i, 6)
            kl = round(0.01 * i, 6)
            self.emit(
                "step",
                dt=2.0,
                stage="fit",
                step=i,
                total=total,
                loss=round(eq + kl, 6),
                terms={"L_eq": eq, "text_kl": kl},
                metrics={"target_acc": 0.8 - 0.01 * i},
                lr=1e-4,
            )


def write_full_run(run_dir: Path, name: str = "remove_moral", method: str = "scalpel") -> EventWriter:
    """A finished, successful run touching every event type the monitor shows."""
    w = EventWriter(run_dir)
    w.start(name=name, method=method)
    w.emit("log", level="info", message="loaded SmolLM2-135M-Instruct (30 layers, 9 heads)")
    w.stage("load", seconds=1.5)
    w.stage("data", total=4, seconds=2.0)
    w.stage("eval_base", total=2)
    w.emit("eval", phase="base", metrics={"target_acc": 0.825, "ppl": 10.8, "kl": 0.0})
    w.emit("stage_start", stage="fit", total=10)
    w.steps(1, 10, 10)
    w.emit("log", level="warning", message="grad norm clipped at step 7")
    w.emit("stage_end", stage="fit", seconds=21.0)
    w.stage("eval_edited", total=2)
    w.emit("eval", phase="edited", metrics={"target_acc": 0.5, "ppl": 10.95, "kl": 0.031})
    w.stage("control", total=2)
    w.emit("eval", phase="control", metrics={"target_acc": 0.81, "ppl": 10.83, "kl": 0.004})
    heads = [[round(((i * 9 + j) % 7 - 3) / 3.0, 4) for j in range(9)] for i in range(6)]
    w.emit(
        "heatmap",
        name="head_effect",
        values=heads,
        xlabel="head",
        ylabel="layer",
        title="Head knockout effect",
    )
    w.emit(
        "heatmap",
        name="lora_norm",
        values=[[round(0.1 * i, 3)] for i in range(6)],
        xlabel="‖BA‖",
        ylabel="layer",
        title="LoRA update norm per layer",
    )
    w.emit("stage_start", stage="checks", total=None)
    w.emit(
        "families",
        check="robustness",
        capability="moral",
        families=[
            {"family": "original", "n": 40, "before": 0.825, "after": 0.5},
            {"family": "paraphrase", "n": 40, "before": 0.8, "after": 0.55},
            {"family": "negated", "n": 20, "before": 0.7, "after": 0.6},
        ],
    )
    w.emit("stage_end", stage="checks", seconds=3.0)
    w.emit("stage_start", stage="export")
    w.emit(
        "export",
        path=str(Path(run_dir) / "model"),
        dtype="float32",
        max_abs_logit_diff=2.3e-5,
        files=["model.safetensors", "config.json"],
    )
    w.emit("stage_end", stage="export", seconds=4.0)
    w.stage("card", seconds=0.5)
    w.emit("run_end", status="ok", seconds=w.t - T0)
    return w


def write_crashed_run(run_dir: Path) -> EventWriter:
    """A run that failed in fit: an error event and run_end status error."""
    w = EventWriter(run_dir)
    w.start(name="remove_refusal", method="refusal")
    w.stage("load", seconds=1.0)
    w.emit("stage_start", stage="fit", total=10)
    w.steps(1, 3, 10)
    w.emit("error", stage="fit", message="CUDA out of memory while computing means", exc_type="RuntimeError")
    w.emit("run_end", status="error", seconds=w.t - T0)
    return w
