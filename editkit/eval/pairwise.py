"""Pairwise scoring: how much more likely is the correct answer than the incorrect one?

Every method (SCALPEL's training loss, the heads/neurons task score) and the eval suite rank answers with
the same quantity: the length-normalised log-probability of an answer given its prompt. Keeping it in one
place guarantees that "accuracy before" and "accuracy after" are measured identically.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from editkit.errors import DataError

__all__ = [
    "encode_prompt_answers",
    "mean_answer_logprob",
    "score_answers",
    "pairwise_margins",
    "pairwise_correctness",
    "pairwise_accuracy",
]


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        return 0  # any id works: padded positions are masked out of attention and of the score
    return int(pad)


def encode_prompt_answers(
    tokenizer, prompts: Sequence[str], answers: Sequence[str], max_length: int = 256
) -> dict[str, torch.Tensor]:
    """Tokenise prompt and answer separately and concatenate them, right-padded.

    Tokenising the two halves separately means the scored tokens are exactly the answer's own tokens
    (a joint tokenisation could merge the prompt's last characters with the answer's first). When an item
    is longer than ``max_length`` the prompt loses tokens from the left; the answer is never cut unless it
    alone would not fit.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    if max_length < 2:
        raise ValueError("max_length must be at least 2 (one prompt token and one answer token)")
    rows: list[tuple[list[int], list[int]]] = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        p_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        a_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        if not a_ids:
            raise DataError(f"item {i}: the answer {answer!r} is empty after tokenisation")
        if not p_ids:
            raise DataError(
                f"item {i}: the prompt {prompt!r} is empty after tokenisation, so nothing predicts the answer"
            )
        a_ids = a_ids[: max_length - 1]
        p_ids = p_ids[-(max_length - len(a_ids)) :]
        rows.append((p_ids, a_ids))

    width = max(len(p) + len(a) for p, a in rows)
    pad = _pad_id(tokenizer)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (p_ids, a_ids) in enumerate(rows):
        n_p, n = len(p_ids), len(p_ids) + len(a_ids)
        input_ids[r, :n] = torch.tensor(p_ids + a_ids, dtype=torch.long)
        attention_mask[r, :n] = 1
        answer_mask[r, n_p:n] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}


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


def mean_answer_logprob(model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean over answer tokens of log p(token | everything before it), one value per row.

    Differentiable (SCALPEL trains on it). The output head only runs on the positions that predict an
    answer token (:func:`head_input`; models that do not allow it get logits from the first such position
    onward), so the vocabulary projection and the fp32 log-softmax cost the answer length, not the prompt.

    Everything that needs values (the first predicting position, which tokens are scored) is worked out
    on the batch's own device (the host, for encoded batches) before the forward, so on a GPU this
    function queues its kernels without waiting for any of them.
    """
    device = model_device(model)
    answer_mask = batch["answer_mask"].bool()
    n_rows, width = answer_mask.shape

    # Position t predicts token t+1, so the predictors of the answer tokens are answer_mask shifted left.
    predictor_mask = torch.zeros_like(answer_mask)
    predictor_mask[:, :-1] = answer_mask[:, 1:]
    if bool(answer_mask[:, 0].any()):
        raise DataError("an answer starts at position 0, so no prompt token predicts it")
    cols = predictor_mask.any(dim=0).nonzero()
    first = int(cols[0].item()) if len(cols) else width - 1

    input_ids = batch["input_ids"]
    kwargs = {
        "input_ids": to_device(input_ids, device),
        "attention_mask": to_device(batch["attention_mask"], device),
        "use_cache": False,
    }
    keep = width - first
    if keep < width and accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
        offset = first
    else:
        offset = 0
    # The last kept position never predicts an answer token (nothing follows it), so it is not gathered.
    # (row, position) pairs in row-major order: the same tokens, in the same order, as a boolean mask.
    sel = predictor_mask[:, offset:-1]
    row_of_token, pos_of_token = sel.nonzero(as_tuple=True)
    targets = input_ids[:, offset + 1 :][row_of_token, pos_of_token]
    counts = answer_mask.sum(dim=1)

    n_tokens = int(row_of_token.numel())
    row_of_token, pos_of_token = to_device(row_of_token, device), to_device(pos_of_token, device)
    targets, counts = to_device(targets, device), to_device(counts, device)

    def scored_positions(hidden: torch.Tensor) -> torch.Tensor:  # [rows, kept, h] -> [1, n_tokens, h]
        return hidden[row_of_token.to(hidden.device), pos_of_token.to(hidden.device)].unsqueeze(0)

    with head_input(model, scored_positions) as gathered:
        logits = model(**kwargs).logits
    if gathered and tuple(logits.shape[:2]) == (1, n_tokens):
        picked_logits = logits[0]  # [n_answer_tokens, vocab]: the head only ran on the scored positions
    else:
        if gathered:  # a model that does not call its output head once on its hidden states: the plain way
            logits = model(**kwargs).logits
        picked_logits = logits[row_of_token, pos_of_token]  # logits: [rows, width - offset, vocab]
    token_logprob = torch.log_softmax(picked_logits.float(), dim=-1)
    token_logprob = token_logprob.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    totals = torch.zeros(n_rows, dtype=token_logprob.dtype, device=device).index_add(
        0, row_of_token, token_logprob
    )
    return totals / counts.to(token_logprob.dtype)


def score_answers(
    model,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
    max_length: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Length-normalised log p(answer | prompt) for many items, batched, without gradients (CPU fp32 out).

    Items are sorted by length before batching so padding stays small; the result is in input order.
    ``on_batch(rows)`` is called after each batch (progress reporting).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    n = len(prompts)
    out = torch.empty(n, dtype=torch.float32)
    if n == 0:
        return out
    order = sorted(range(n), key=lambda i: len(prompts[i]) + len(answers[i]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                batch = encode_prompt_answers(
                    tokenizer, [prompts[i] for i in idx], [answers[i] for i in idx], max_length=max_length
                )
                out[torch.tensor(idx)] = mean_answer_logprob(model, batch).float().cpu()
                if on_batch is not None:
                    on_batch(len(idx))
    finally:
        model.train(was_training)
    return out


def _triplet_fields(triplets: Iterable[Mapping]) -> tuple[list[str], list[str], list[str]]:
    prompts, correct, incorrect = [], [], []
    for i, item in enumerate(triplets):
        missing = [k for k in ("prompt", "correct", "incorrect") if k not in item]
        if missing:
            raise DataError(f"triplet {i} has no {', '.join(missing)} field")
        prompts.append(item["prompt"])
        correct.append(item["correct"])
        incorrect.append(item["incorrect"])
    return prompts, correct, incorrect


def pairwise_margins(
    model,
    tokenizer,
    triplets: Iterable[Mapping],
    batch_size: int = 16,
    max_length: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """ℓ(correct) − ℓ(incorrect) per triplet (length-normalised log-probs); positive means right.

    ``on_batch`` counts scored answers (two per triplet)."""
    prompts, correct, incorrect = _triplet_fields(triplets)
    scores = score_answers(
        model,
        tokenizer,
        prompts + prompts,
        correct + incorrect,
        batch_size=batch_size,
        max_length=max_length,
        on_batch=on_batch,
    )
    n = len(prompts)
    return scores[:n] - scores[n:]


def pairwise_correctness(
    model, tokenizer, triplets: Iterable[Mapping], batch_size: int = 16, max_length: int = 256
) -> torch.Tensor:
    """Bool per triplet: is the correct answer strictly more likely? Ties count as wrong."""
    return pairwise_margins(model, tokenizer, triplets, batch_size=batch_size, max_length=max_length) > 0


def pairwise_accuracy(
    model,
    tokenizer,
    triplets: Iterable[Mapping],
    batch_size: int = 16,
    max_length: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> float:
    """Share of triplets where the correct answer beats the incorrect one (0.0 for no triplets)."""
    right = (
        pairwise_margins(
            model, tokenizer, triplets, batch_size=batch_size, max_length=max_length, on_batch=on_batch
        )
        > 0
    )
    return float(right.float().mean().item()) if right.numel() else 0.0
