"""A small, generic LoRA training loop shared by the LoRA methods (``scalpel``, ``sft``).

It owns only what every LoRA fit needs and what is easy to get wrong: AdamW on the trainable parameters,
gradient accumulation, step events, periodic validation with early stopping, and checkpoints that make a
resumed run bit-identical to an uninterrupted one. The method owns the model (a PEFT model), the loss and
the data. Two loss helpers both LoRA methods use live here too: ``encode_text`` (general-text rows) and
``kl_to_base`` (KL to the same model with its adapter disabled).

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
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from editkit.errors import SHORT_WRITE, EditkitError, disk_full_error, disk_full_reason
from editkit.eval.pairwise import to_device
from editkit.run.distributed import is_main_process, rank_and_world, sum_gradients, sum_objects

__all__ = [
    "LossOut",
    "TrainConfig",
    "TrainResult",
    "encode_text",
    "kl_to_base",
    "latest_checkpoint",
    "train_lora",
    "trainable_state",
]

CHECKPOINT_FORMAT = "editkit-lora-checkpoint-v1"


@dataclass
class LossOut:
    """What a loss callable returns: the scalar to minimise, its named terms and extra metrics."""

    loss: torch.Tensor
    terms: Mapping[str, float | torch.Tensor] = field(default_factory=dict)
    metrics: Mapping[str, float | torch.Tensor] = field(default_factory=dict)


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


def encode_text(tokenizer, rows: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded token ids and mask, each row cut to ``max_length`` tokens."""
    ids = [list(tokenizer(r, add_special_tokens=True)["input_ids"])[:max_length] for r in rows]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids = torch.full((len(ids), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def kl_to_base(
    peft_model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean KL(p_base ‖ p_adapted) of the next-token distribution over the kept positions.

    The base distribution is the same PEFT model with its adapter disabled (no second copy of the weights);
    ``keep`` (bool, same shape as ``input_ids``) selects the positions, by default every real token.
    """
    dev = peft_model.get_input_embeddings().weight.device
    # the kept positions as indices worked out where the mask lives (the host), so nothing waits on the GPU
    sel = (attention_mask if keep is None else keep).bool().nonzero(as_tuple=True)
    ids, mask = to_device(input_ids, dev), to_device(attention_mask, dev)
    sel = tuple(to_device(i, dev) for i in sel)
    with torch.no_grad(), peft_model.disable_adapter():
        base = torch.log_softmax(
            peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1
        )
    edit = torch.log_softmax(
        peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1
    )
    kl = (base.exp() * (base - edit)).sum(-1)
    return kl[sel].mean()


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
