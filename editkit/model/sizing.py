"""Default batch sizes from the device and its free memory.

On the CPU the defaults stay the measured sweet spots (128 rows per head-knockout forward, 16 rows per
evaluation batch), so CPU numbers do not move. On an accelerator a forward of a few hundred rows leaves
most of the device idle (batched head masks: 1.98x over one mask per forward at 256 rows, 4.22x at 2048 rows
on a 1B Llama shape; refusal activations: 4.42 s at batch 16, 0.94 s at 64; BENCHMARKS.md), so the defaults
there are as many rows as fit in a share of the free memory, up to a cap.

Everything is a pure function of numbers (:func:`rows_that_fit`, :func:`head_batch_rows`,
:func:`eval_batch_size`) plus thin wrappers that read them off a model (:func:`for_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editkit.eval.forward import model_device

#: CPU defaults (unchanged from before sizing existed; the numbers in BENCHMARKS.md were made with them)
CPU_HEAD_BATCH_ROWS = 128
CPU_EVAL_BATCH = 16
#: caps on an accelerator: 2048 rows = 32 masks x 64 rows, the largest batch measured (4.22x on a 1B
#: shape); 64 prompts per evaluation batch, where the refusal activations stopped getting faster per row
HEAD_ROWS_CAP = 2048
EVAL_BATCH_CAP = 64
#: share of the free memory a default batch may plan to use (the rest is headroom: allocator
#: fragmentation, the attention kernels' workspace, other processes)
MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Shape:
    """What one row's activation memory depends on."""

    hidden: int
    intermediate: int
    vocab: int
    bytes_per_value: int = 2  # bf16/fp16 activations; 4 for fp32


def row_bytes(shape: Shape, tokens: int, logit_positions: int) -> int:
    """Peak bytes one row of a no-grad forward holds: the residual stream and attention outputs
    (a few copies of ``hidden``), the MLP's gate/up/activation (3 x ``intermediate``) per token, and the
    logits over the vocabulary at ``logit_positions`` positions (model dtype, plus the fp32 log-softmax
    and its input cast)."""
    per_token = (6 * shape.hidden + 3 * shape.intermediate) * shape.bytes_per_value
    per_logit = shape.vocab * (shape.bytes_per_value + 8)
    return tokens * per_token + max(1, logit_positions) * per_logit


def rows_that_fit(free_bytes: int, per_row: int, cap: int, share: float = MEMORY_SHARE) -> int:
    """How many rows of ``per_row`` bytes fit in ``share`` of ``free_bytes``: at least 1, at most ``cap``."""
    if per_row <= 0:
        return cap
    return max(1, min(cap, int(free_bytes * share) // per_row))


def head_batch_rows(
    device_type: str, free_bytes: int | None, shape: Shape, tokens: int, logit_positions: int, rows: int
) -> int:
    """Rows per forward for batched head knockouts (items x masks).

    CPU (or unknown free memory): 128. Elsewhere: what fits, capped at 2048, rounded down to a whole
    number of masks (``rows`` encoded rows each) and never below one mask.
    """
    if device_type == "cpu" or free_bytes is None:
        return CPU_HEAD_BATCH_ROWS
    fit = rows_that_fit(free_bytes, row_bytes(shape, tokens, logit_positions), HEAD_ROWS_CAP)
    rows = max(1, rows)
    return max(rows, fit // rows * rows)


def eval_batch_size(
    device_type: str,
    free_bytes: int | None,
    shape: Shape,
    tokens: int = 256,
    cpu_default: int = CPU_EVAL_BATCH,
    cap: int = EVAL_BATCH_CAP,
) -> int:
    """Prompts per evaluation forward (pairwise scores, perplexity, drift, refusal activations).

    CPU (or unknown free memory): ``cpu_default``. Elsewhere: what fits with logits at every one of
    ``tokens`` positions (perplexity's worst case), at most ``cap`` (or ``cpu_default`` if that is larger).
    """
    if device_type == "cpu" or free_bytes is None:
        return cpu_default
    return rows_that_fit(free_bytes, row_bytes(shape, tokens, tokens), max(cap, cpu_default))


# ------------------------------------------------------------------------------------------------------
# reading the numbers off a model
# ------------------------------------------------------------------------------------------------------


def free_memory(device: torch.device) -> int | None:
    """Free bytes on an accelerator (None on the CPU or when the backend cannot say)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "mps":
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    except (RuntimeError, AttributeError):
        return None
    return None


def shape_of(model) -> Shape:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0) or 0)
    inter = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    dtype = next(model.parameters()).dtype
    return Shape(hidden, inter, vocab, 4 if dtype == torch.float32 else 2)


def for_model(model) -> tuple[str, int | None, Shape]:
    """(device type, free bytes, shape) of ``model``: the inputs of the sizing functions."""
    dev = model_device(model)
    return dev.type, free_memory(dev), shape_of(model)


def model_eval_batch_size(model, tokens: int = 256, cpu_default: int = CPU_EVAL_BATCH) -> int:
    """:func:`eval_batch_size` for ``model`` where it lives now."""
    device_type, free, shape = for_model(model)
    return eval_batch_size(device_type, free, shape, tokens=tokens, cpu_default=cpu_default)


def model_head_batch_rows(model, tokens: int, logit_positions: int, rows: int) -> int:
    """:func:`head_batch_rows` for ``model`` where it lives now."""
    device_type, free, shape = for_model(model)
    return head_batch_rows(device_type, free, shape, tokens, logit_positions, rows)
