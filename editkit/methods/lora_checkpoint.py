"""Checkpoints of the shared LoRA training loop (``editkit.methods.lora_fit``): what makes a resumed run
bit-identical to an uninterrupted one. A checkpoint holds the trainable tensors, the optimizer state, the
step, the RNG states (torch, CUDA, Python) and the loop's history; it is written atomically (tmp file,
fsync, rename) by the main process only, and an unreadable one is skipped with a warning and moved aside.
``trainable_state`` reads the adapter tensors by name.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from editkit.errors import SHORT_WRITE, EditkitError, disk_full_error, disk_full_reason
from editkit.methods.lora_config import TrainConfig, TrainResult
from editkit.run.distributed import is_main_process

__all__ = ["latest_checkpoint", "trainable_state"]

CHECKPOINT_FORMAT = "editkit-lora-checkpoint-v1"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (detached clones): the whole adapter, nothing of the base model."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(o):
    return tuple(_tuplify(x) for x in o) if isinstance(o, (list, tuple)) else o


def latest_checkpoint(directory: Path | None) -> Path | None:
    if directory is None or not Path(directory).is_dir():
        return None
    found = sorted(Path(directory).glob("step-*.pt"))
    return found[-1] if found else None


def _save_checkpoint(cfg: TrainConfig, model, optimizer, step: int, result: TrainResult) -> Path | None:
    if cfg.checkpoint_dir is None or not is_main_process():
        return None
    d = Path(cfg.checkpoint_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step-{step:07d}.pt"
    tmp = d / f".step-{step:07d}.pt.tmp"
    try:
        _write_checkpoint_file(tmp, cfg, model, optimizer, step, result)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError of its writer
        tmp.unlink(missing_ok=True)
        if disk_full_reason(e):
            raise disk_full_error(e, path) from None
        if isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "PytorchStreamWriter" in str(e)):
            raise disk_full_error(e, path, reason=SHORT_WRITE) from None
        raise
    tmp.replace(path)
    _fsync_dir(d)
    for old in sorted(d.glob("step-*.pt"))[: -max(1, cfg.keep_checkpoints)]:
        old.unlink(missing_ok=True)
    return path


def _write_checkpoint_file(
    tmp: Path, cfg: TrainConfig, model, optimizer, step: int, result: TrainResult
) -> None:
    with open(tmp, "wb") as fh:
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": cfg.fingerprint,
                "step": step,
                "adapter": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(),
                "history": result.history,
                "validations": result.validations,
                "tokens": result.tokens,
            },
            fh,
        )
        fh.flush()
        os.fsync(fh.fileno())  # the bytes are on disk before the name is: a power cut cannot tear it either


def _fsync_dir(d: Path) -> None:
    """Persist a rename in ``d`` (POSIX; where a directory cannot be opened this is a no-op)."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_checkpoint(directory: Path | None, warn: Callable[[str], None]) -> tuple[Path, dict] | None:
    """The newest checkpoint that can be read. An unreadable one is named in a warning and moved aside
    (``.step-….pt.unreadable``): left in place, it would outrank, and so outlive, every new checkpoint."""
    if directory is None or not Path(directory).is_dir():
        return None
    for path in sorted(Path(directory).glob("step-*.pt"), reverse=True):
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as e:  # truncated or damaged: torch raises RuntimeError, EOFError, UnpicklingError...
            aside = path.with_name(f".{path.name}.unreadable")
            if is_main_process():
                with contextlib.suppress(OSError):
                    path.replace(aside)
            why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"
            warn(f"{path}: unreadable checkpoint skipped ({why}); moved aside to {aside.name}")
            continue
        return path, ck
    return None


def _load_checkpoint(cfg: TrainConfig, model, optimizer, result: TrainResult, events=None) -> int:
    def warn(message: str) -> None:
        if events is not None:
            events.log(message, level="warning")

    found = _read_checkpoint(cfg.checkpoint_dir, warn)
    if found is None:
        return 0
    path, ck = found
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise EditkitError(f"{path}: not an editkit LoRA checkpoint")
    if ck.get("fingerprint") != cfg.fingerprint:
        raise EditkitError(
            f"{path}: this checkpoint was written with different method parameters or data; "
            "resume with the same recipe, or start a new run (--overwrite)"
        )
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in ck["adapter"]]
    if missing:
        raise EditkitError(f"{path}: checkpoint lacks adapter tensor {missing[0]} (different targets?)")
    with torch.no_grad():
        for n, t in ck["adapter"].items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    optimizer.load_state_dict(ck["optimizer"])
    _set_rng_state(ck["rng"])
    result.history = list(ck.get("history", []))
    result.validations = list(ck.get("validations", []))
    result.tokens = int(ck.get("tokens", 0))
    return int(ck["step"])
