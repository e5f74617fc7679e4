"""A small, generic LoRA training loop shared by the LoRA methods (``scalpel``, ``sft``).

It owns only what every LoRA fit needs and what is easy to get wrong: AdamW on the trainable parameters,
gradient accumulation, step events, periodic validation with early stopping, and checkpoints that make a
resumed run bit-identical to an uninterrupted one. The method owns the model (a PEFT model), the loss and
the data. What a loss returns (``LossOut``) and the two loss helpers both LoRA methods use
(``encode_text``, ``kl_to_base``) are in ``editkit.methods.lora_loss``; the loop's settings and result
(``TrainConfig``, ``TrainResult``) in ``editkit.methods.lora_config``; checkpoints in
``editkit.methods.lora_checkpoint``.

Under ``accelerate launch`` the processes split each step's ``grad_accum`` micro-batches (process r takes
micro-batches r, r + N, ...) and add their gradients before the optimizer step, so N processes compute the
same step as one process, whatever N is (up to the order of float additions); only the main process
writes checkpoints.

Determinism on resume rests on two rules:

* batches are a pure function of ``(step, micro)`` — ``batch_fn(step, micro)`` — so no data-iterator state
  has to be saved;
* a checkpoint holds the trainable tensors, the optimizer state, the step, the RNG states (torch, CUDA,
  Python) and the loop's own history, and is written atomically (tmp file, fsync, rename), so a kill at any
  moment leaves the previous checkpoint or the new one, never a torn one under a checkpoint's name; a
  checkpoint that cannot be read all the same (a damaged disk, a partial copy) is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from editkit.errors import EditkitError
from editkit.methods.lora_checkpoint import _load_checkpoint, _save_checkpoint
from editkit.methods.lora_config import TrainConfig, TrainResult
from editkit.methods.lora_loss import LossOut
from editkit.run.distributed import rank_and_world, sum_gradients, sum_objects

__all__ = ["train_lora"]


def _sum_stats(total: float, terms: dict, metrics: dict, tokens: int) -> tuple[float, dict, dict, int]:
    """Add one step's loss, terms, metrics and token count over the processes that split its micro-batches."""
    flat = {"loss": total, "tokens": tokens}
    flat.update({f"t:{k}": v for k, v in terms.items()})
    flat.update({f"m:{k}": v for k, v in metrics.items()})
    s = sum_objects(flat)
    return (
        s["loss"],
        {k[2:]: v for k, v in s.items() if k.startswith("t:")},
        {k[2:]: v for k, v in s.items() if k.startswith("m:")},
        int(s["tokens"]),
    )


def _f(x) -> float:
    return float(x.detach().item()) if isinstance(x, torch.Tensor) else float(x)


class _StepStats:
    """One step's losses, terms, metrics and gradient norm, brought to the host in a single copy.

    Reading each value with ``.item()`` as it is made waits for the GPU about ten times per step; here
    they are stacked on the device and copied without blocking, and read back (``read``) once the next
    step's forward and backward are queued, so the GPU never runs dry while the host bookkeeps. The
    numbers are exactly those ``.item()`` gives (bf16/fp32 values are exact in fp64).
    """

    def __init__(self, step: int, lr: float, parts: list, grad_norm, tokens: int):
        self.step, self.lr, self.tokens = step, lr, tokens
        tensors: list[torch.Tensor] = []

        def slot(v):
            if isinstance(v, torch.Tensor):
                tensors.append(v.detach().reshape(()))
                return ("t", len(tensors) - 1)
            return ("f", float(v))

        self.parts = [
            (slot(loss), {k: slot(v) for k, v in terms.items()}, {k: slot(v) for k, v in metrics.items()})
            for loss, terms, metrics in parts
        ]
        self.grad_norm = slot(grad_norm) if grad_norm is not None else None
        self._host: list[float] | torch.Tensor = []
        self._event = None
        if tensors:
            dev = tensors[0].device
            dt = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
            flat = torch.stack([t.to(device=dev, dtype=dt) for t in tensors])
            if dev.type == "cuda":
                self._host = flat.to("cpu", non_blocking=True)  # pinned; valid once the event has passed
                self._event = torch.cuda.Event()
                self._event.record()
            else:
                self._host = flat.cpu()

    def read(self, grad_accum: int) -> tuple[float, dict, dict, float | None]:
        """(loss, terms, metrics, grad norm): the step's values averaged over its micro-batches."""
        if self._event is not None:
            self._event.synchronize()
        vals = self._host.tolist() if isinstance(self._host, torch.Tensor) else []

        def get(slot) -> float:
            return vals[slot[1]] if slot[0] == "t" else slot[1]

        total = 0.0
        terms: dict[str, float] = {}
        metrics: dict[str, float] = {}
        for loss_slot, term_slots, metric_slots in self.parts:
            loss = get(loss_slot)
            if not math.isfinite(loss):
                raise EditkitError(
                    f"training diverged at step {self.step}: the loss is {loss} "
                    "(lower the learning rate or the regulariser weights)"
                )
            total += loss / grad_accum
            for k, v in term_slots.items():
                terms[k] = terms.get(k, 0.0) + get(v) / grad_accum
            for k, v in metric_slots.items():
                metrics[k] = metrics.get(k, 0.0) + get(v) / grad_accum
        return total, terms, metrics, get(self.grad_norm) if self.grad_norm is not None else None


def _accumulate(step: int, cfg: TrainConfig, batch_fn, loss_fn, count_tokens):
    """Backward over this process's micro-batches of ``step``: ([(loss, terms, metrics)], tokens), the
    values still on the device (nothing here waits for the GPU)."""
    rank, world = rank_and_world()
    parts = []
    step_tokens = 0
    for micro in range(cfg.grad_accum):
        if micro % world != rank:
            continue  # another process's micro-batch (data parallel under accelerate launch)
        batch = batch_fn(step, micro)
        if batch is None:  # an empty micro-batch (a short last batch split into grad_accum parts)
            continue
        out = loss_fn(batch)
        (out.loss / cfg.grad_accum).backward()
        parts.append((out.loss, dict(out.terms), dict(out.metrics)))
        if count_tokens is not None:
            step_tokens += int(count_tokens(batch))
    return parts, step_tokens


def _validate(step: int, cfg: TrainConfig, validate, metrics: dict, result: TrainResult):
    """Run ``validate`` when it is due after ``step``; its numbers go into ``metrics``; returns a stop reason."""
    if validate is None or cfg.eval_every <= 0 or not (step % cfg.eval_every == 0 or step == cfg.steps):
        return None
    v = dict(validate(step))
    stop = v.pop("stop", None)
    metrics.update({f"val_{k}": _f(x) for k, x in v.items() if isinstance(x, (int, float))})
    result.validations.append({"step": step, **v, **({"stop": stop} if stop else {})})
    return stop


def _read_now(step: int, cfg: TrainConfig, validate, world: int) -> bool:
    """Whether ``step``'s numbers are read at once: it validates, checkpoints or ends the run, or several
    processes must add them up together; any other step is read while the next one runs."""
    validating = (
        validate is not None and cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.steps)
    )
    checkpointing = cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0
    return world > 1 or validating or checkpointing or step == cfg.steps


def _record(stats: _StepStats, cfg: TrainConfig, validate, result: TrainResult, events, model, optimizer):
    """A finished step into the history and the event log (validated and checkpointed when due)."""
    total, terms, metrics, gn = stats.read(cfg.grad_accum)
    step_tokens = stats.tokens
    if rank_and_world()[1] > 1:
        total, terms, metrics, step_tokens = _sum_stats(total, terms, metrics, step_tokens)
    result.tokens += step_tokens
    if gn is not None:
        metrics["grad_norm"] = gn
    stop = _validate(stats.step, cfg, validate, metrics, result)  # due only on steps read at once
    record = {"step": stats.step, "loss": total, "terms": terms, "metrics": metrics, "lr": stats.lr}
    result.history.append(record)
    if events is not None:
        events.emit("step", stage=cfg.stage, total=cfg.steps, **record)
    if cfg.checkpoint_every > 0 and (stats.step % cfg.checkpoint_every == 0 or stop):
        _save_checkpoint(cfg, model, optimizer, stats.step, result)
    return stop


def _resume(cfg: TrainConfig, model, optimizer, result: TrainResult, events) -> int:
    """Load the latest checkpoint (if any): its step; a run it shows stopped early is marked finished."""
    start = _load_checkpoint(cfg, model, optimizer, result, events)
    if start:
        result.resumed_from = start
        if events is not None:
            events.log(f"resumed from checkpoint at step {start}")
        last_val = result.validations[-1] if result.validations else {}
        if last_val.get("stop"):
            result.steps_run, result.stop_reason = start, str(last_val["stop"])
    return start


def train_lora(
    model: torch.nn.Module,
    loss_fn: Callable[[Any], LossOut],
    batch_fn: Callable[[int, int], Any],
    cfg: TrainConfig,
    *,
    events=None,
    validate: Callable[[int], dict] | None = None,
    count_tokens: Callable[[Any], int] | None = None,
) -> TrainResult:
    """Train ``model``'s trainable parameters (the adapter) with AdamW and return what happened.

    ``loss_fn(batch) -> LossOut`` is called once per micro-batch; ``batch_fn(step, micro)`` must be a pure
    function of its arguments (resume relies on it) and may return None for an empty micro-batch.
    ``validate(step) -> dict`` runs after every ``eval_every``-th step; a ``"stop"`` key with a reason ends
    training early. On Ctrl-C a checkpoint of the last finished step is written before the interrupt propagates.
    """
    if cfg.steps < 0 or cfg.grad_accum < 1:
        raise ValueError("steps must be >= 0 and grad_accum >= 1")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise EditkitError("nothing to train: the model has no trainable (adapter) parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    result = TrainResult(steps_run=0, stop_reason="steps")
    start = _resume(cfg, model, optimizer, result, events) if cfg.resume else 0
    if result.stop_reason != "steps":  # the checkpoint's run had already stopped early
        return result
    rank, world = rank_and_world()
    if world > cfg.grad_accum and events is not None:
        events.log(
            f"{world} processes share {cfg.grad_accum} micro-batch(es) per step: {world - cfg.grad_accum} stay "
            "idle; set grad_accum to a multiple of the process count",
            level="warning",
        )
    t0 = time.time()
    step = start
    done = start
    pending: list[_StepStats] = []  # the last step, read back while the next one's forward/backward runs

    def record(stats: _StepStats):
        pending.clear()
        return _record(stats, cfg, validate, result, events, model, optimizer)

    try:
        while step < cfg.steps:
            lr = cfg.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            parts, step_tokens = _accumulate(step, cfg, batch_fn, loss_fn, count_tokens)
            if pending:  # read before the update below, so a Ctrl-C in its event checkpoints that step
                record(pending[0])
            if world > 1:
                sum_gradients(params)
            gn = (
                None
                if cfg.max_grad_norm is None
                else torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            )
            optimizer.step()
            step += 1
            done = step
            stats = _StepStats(step, lr, parts, gn, step_tokens)
            if not _read_now(step, cfg, validate, world):
                pending.append(stats)
                continue
            stop = record(stats)
            if stop:
                result.stop_reason = str(stop)
                break
    except KeyboardInterrupt:
        if pending:
            with contextlib.suppress(KeyboardInterrupt):
                record(pending[0])
        if done > start:
            _save_checkpoint(cfg, model, optimizer, done, result)
        raise
    result.steps_run = step
    result.seconds = time.time() - t0
    return result
