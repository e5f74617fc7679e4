"""Forward-pass helpers every scorer shares: where a (possibly PEFT-wrapped) model lives, whether it can skip
the output head on leading positions, running the head on chosen positions only, and the name of its KV cache
argument."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def _unwrapped(model):
    """The transformers model inside a PEFT wrapper (or ``model`` itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def accepts_logits_to_keep(model) -> bool:
    """True when the (possibly PEFT-wrapped) model can skip computing logits for leading positions."""
    try:
        return "logits_to_keep" in inspect.signature(_unwrapped(model).forward).parameters
    except (TypeError, ValueError):
        return False


def output_head(model) -> torch.nn.Module | None:
    """The (possibly PEFT-wrapped) model's output projection (``lm_head``), or None."""
    get = getattr(_unwrapped(model), "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, torch.nn.Module) else None


def last_only(model) -> dict[str, int]:
    """``{"logits_to_keep": 1}`` where the model takes it, else ``{}``: logits at the last position only
    (the output head over a 49k vocabulary is a fifth of a small model's compute on every position)."""
    return {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}


@contextmanager
def head_input(model, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[bool]:
    """While active, the output head sees ``fn(hidden_states)`` instead of its input; yields whether it could.

    Used to run the vocabulary projection only on the positions that are scored. Besides the compute, this
    avoids a CPU trap: a causal LM slices its hidden states before the head (``logits_to_keep``), and for a
    non-contiguous 3-D input whose weight does not require grad (a frozen PEFT base, an attribution pass)
    ``torch.matmul`` takes the batched path with the weight *expanded* over the batch, which oneDNN makes
    contiguous: one full copy of the vocabulary matrix per row (466 MiB per row on a 1.5B Qwen).
    """
    head = output_head(model)
    if head is None:
        yield False
        return
    handle = head.register_forward_pre_hook(lambda _mod, args: (fn(args[0]), *args[1:]))
    try:
        yield True
    finally:
        handle.remove()


def model_device(model) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t.to(device)`` without a host sync for host→CUDA copies.

    A plain ``.to("cuda")`` waits for the copy (and so for every kernel queued before it); host→device
    copies with ``non_blocking`` are safe from pageable memory (CUDA stages the data before returning),
    so the host can keep queueing kernels. Device→host copies are never made non-blocking here.
    """
    device = torch.device(device)
    return t.to(device, non_blocking=t.device.type == "cpu" and device.type == "cuda")


def cache_kwarg(model) -> str:
    """The forward's name for a KV cache: ``cache`` from transformers 5.25, ``past_key_values`` before."""
    try:
        params = inspect.signature(_unwrapped(model).forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def with_positions(enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``enc`` (left-padded) with position ids counted from each row's first real token, as ``generate``
    counts them: without them a model with learned absolute positions (GPT-2) sees every real token of a
    padded row shifted by its padding, so a prompt's score would depend on the longest prompt beside it."""
    pos = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    return {**enc, "position_ids": pos}


def right_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows as one right-padded batch: ``(input_ids, attention_mask)``, both long, on the host."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, : len(r)] = 1
    return ids, mask
