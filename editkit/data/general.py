"""General text: the regulariser while fitting an edit (train split) and the perplexity probe (test split).

An edit that removes a capability must leave ordinary language alone; this module supplies the ordinary
language and the one number (perplexity) that says whether it was left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from editkit.errors import DataError
from editkit.eval.forward import right_padded

__all__ = ["BUILTIN_GENERAL_TEXT", "load_general_text", "perplexity", "nll_sum_and_count"]

BUILTIN_GENERAL_TEXT = Path(__file__).parent / "builtin" / "general_text.jsonl"

# File suffix -> datasets builder name.
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _looks_like_path(source: str) -> bool:
    """A source is a local file when it names one: a known suffix, a path separator prefix, or it exists."""
    if os.path.exists(source):
        return True
    if Path(source).suffix.lower() in _BUILDERS:
        return True
    return source.startswith((".", "/", "~"))


def load_general_text(
    source: str = "builtin", split: str | None = None, text_column: str = "text", limit: int | None = None
):
    """Load general text as a ``datasets.Dataset`` with a single ``text`` column.

    ``source`` is ``"builtin"`` (the hand-written paragraphs shipped with editkit), a local
    ``.txt`` (one row per non-empty line) / ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, or a Hub
    dataset id. For files, ``split`` filters on a ``split`` column (it is an error to ask for a split
    when the file has none, so test text never silently includes training text); for Hub ids it names
    the dataset split (default ``train``). Rows whose text is empty are dropped; ``limit`` keeps the first
    rows after that.
    """
    import datasets

    if limit is not None and limit < 1:
        raise DataError(f"general text: limit must be a positive integer, got {limit}")
    label = str(source)
    try:
        if source == "builtin":
            if not BUILTIN_GENERAL_TEXT.is_file():
                raise DataError(
                    f"built-in general text is missing from the installation: {BUILTIN_GENERAL_TEXT}"
                )
            ds = datasets.load_dataset("json", data_files=str(BUILTIN_GENERAL_TEXT), split="train")
            label = "built-in general text"
            ds = _filter_split(ds, split, label)
        elif _looks_like_path(str(source)):
            path = Path(os.path.expanduser(str(source)))
            if not path.is_file():
                raise DataError(f"general text file not found: {path}")
            builder = _BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise DataError(
                    f"general text file {path}: unsupported suffix {path.suffix!r} "
                    f"(use one of {', '.join(sorted(_BUILDERS))})"
                )
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
            ds = _filter_split(ds, split, str(path))
        else:
            ds = datasets.load_dataset(str(source), split=split or "train")
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one line naming the source
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"general text {label!r} could not be loaded: {first}") from exc

    if text_column not in ds.column_names:
        raise DataError(
            f"general text {label}: no column {text_column!r} (columns: {', '.join(ds.column_names)})"
        )
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    ds = ds.filter(lambda row: isinstance(row["text"], str) and row["text"].strip() != "")
    if len(ds) == 0:
        where = f" (split {split!r})" if split else ""
        raise DataError(f"general text {label}{where} has no non-empty rows in column {text_column!r}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


def _filter_split(ds, split: str | None, label: str):
    if split is None:
        return ds
    if "split" not in ds.column_names:
        raise DataError(f"general text {label}: asked for split {split!r} but the file has no 'split' column")
    out = ds.filter(lambda row: row["split"] == split)
    if len(out) == 0:
        found = sorted(set(ds["split"]))
        raise DataError(f"general text {label}: no rows with split {split!r} (splits present: {found})")
    return out


def _model_device(model) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


def nll_sum_and_count(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[float, int]:
    """Summed next-token NLL (nats, fp32 log-softmax) over all predicted tokens, and how many there were.

    Each text is tokenised on its own (the tokenizer's default special tokens), cut to ``max_length``
    tokens, and right-padded inside a batch; padded positions are neither attended to nor scored, so the
    result does not depend on ``batch_size``. A text's first token has no predictor and is not scored.
    """
    if max_length < 2:
        raise ValueError("max_length must be at least 2 (one token predicts the next)")
    encoded = [list(tokenizer(t, add_special_tokens=True)["input_ids"])[:max_length] for t in texts]
    encoded = [ids for ids in encoded if len(ids) >= 2]
    if not encoded:
        return 0.0, 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = int(pad) if pad is not None else 0
    device = _model_device(model)
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = [encoded[i] for i in order[start : start + batch_size]]
                input_ids, mask = right_padded(rows, pad)
                input_ids, mask = input_ids.to(device), mask.to(device)
                logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
                scored = mask[:, 1:].bool()  # target position t+1 is real text
                logprobs = torch.log_softmax(logits[:, :-1][scored].float(), dim=-1)
                targets = input_ids[:, 1:][scored]
                nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                total += nll.double().sum().cpu()
                count += int(scored.sum().item())
                if on_batch is not None:
                    on_batch(len(rows))
    finally:
        model.train(was_training)
    return float(total.item()), count


def perplexity(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> float:
    """exp(token-weighted mean NLL) over all texts: long texts weigh more, as in a corpus perplexity."""
    texts = list(texts)
    total, count = nll_sum_and_count(
        model, tokenizer, texts, batch_size=batch_size, max_length=max_length, on_batch=on_batch
    )
    if count == 0:
        raise DataError(f"perplexity: none of the {len(texts)} texts has two or more tokens to score")
    return math.exp(total / count)
