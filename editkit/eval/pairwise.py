"""Pairwise scoring: how much more likely is the correct answer than the incorrect one?

Every method (SCALPEL's training loss, the heads/neurons task score) and the eval suite rank answers with
the same quantity: the length-normalised log-probability of an answer given its prompt. Keeping it in one
place guarantees that "accuracy before" and "accuracy after" are measured identically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from editkit.errors import DataError
from editkit.eval.forward import (
    accepts_logits_to_keep,
    cache_kwarg,
    head_input,
    model_device,
    right_padded,
    to_device,
)

__all__ = [
    "encode_prompt_answers",
    "mean_answer_logprob",
    "score_answers",
    "score_answer_pairs",
    "encode_pair_items",
    "pair_answer_logprobs",
    "pairwise_margins",
    "pairwise_correctness",
    "pairwise_accuracy",
]


def pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        return 0  # any id works: padded positions are masked out of attention and of the score
    return int(pad)


def _token_ids(tokenizer, i: int, prompt: str, *answers: str) -> tuple[list[int], list[list[int]]]:
    """Item ``i``'s prompt ids (with special tokens) and each answer's own ids, tokenised separately; an
    empty answer, or an empty prompt (nothing would predict the answer), is a DataError."""
    ids = [list(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    for answer, a_ids in zip(answers, ids, strict=True):
        if not a_ids:
            raise DataError(f"item {i}: the answer {answer!r} is empty after tokenisation")
    p_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if not p_ids:
        raise DataError(
            f"item {i}: the prompt {prompt!r} is empty after tokenisation, so nothing predicts the answer"
        )
    return p_ids, ids


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
    return _right_padded(_encoded_rows(tokenizer, prompts, answers, max_length), pad_id(tokenizer))


def _encoded_rows(
    tokenizer, prompts: Sequence[str], answers: Sequence[str], max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) of every item, cut to ``max_length`` as ``encode_prompt_answers`` says."""
    if max_length < 2:
        raise ValueError("max_length must be at least 2 (one prompt token and one answer token)")
    rows: list[tuple[list[int], list[int]]] = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        p_ids, (a_ids,) = _token_ids(tokenizer, i, prompt, answer)
        a_ids = a_ids[: max_length - 1]
        p_ids = p_ids[-(max_length - len(a_ids)) :]
        rows.append((p_ids, a_ids))
    return rows


def _right_padded(rows: Sequence[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    input_ids, attention_mask = right_padded([p + a for p, a in rows], pad)
    answer_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    for r, (p_ids, a_ids) in enumerate(rows):
        answer_mask[r, len(p_ids) : len(p_ids) + len(a_ids)] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}


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

    Items are sorted by their length in tokens before batching so padding stays small (the prompts and
    answers are tokenised once); the result is in input order.
    ``on_batch(rows)`` is called after each batch (progress reporting).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    n = len(prompts)
    out = torch.empty(n, dtype=torch.float32)
    if n == 0:
        return out
    rows = _encoded_rows(tokenizer, prompts, answers, max_length)
    order = sorted(range(n), key=lambda i: len(rows[i][0]) + len(rows[i][1]))  # stable: ties keep input order
    pad = pad_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                batch = _right_padded([rows[i] for i in idx], pad)
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


def encode_pair_items(
    tokenizer,
    prompts: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    max_length: int = 256,
) -> list[tuple[list[int], list[int], list[int]] | None]:
    """(prompt ids, a ids, b ids) of every item for :func:`pair_answer_logprobs`; None for an item too long to
    share one prompt (``encode_prompt_answers`` cuts its prompt per answer)."""
    return [
        _pair_item(tokenizer, i, *x, max_length)
        for i, x in enumerate(zip(prompts, answers_a, answers_b, strict=True))
    ]


def _pair_item(tokenizer, i: int, prompt: str, a: str, b: str, max_length: int):
    """(prompt ids, a ids, b ids) of one item, or None when it is too long to share one prompt (then
    ``encode_prompt_answers`` cuts the prompt per answer, and the item is scored that way)."""
    p_ids, (a_ids, b_ids) = _token_ids(tokenizer, i, prompt, a, b)
    if len(p_ids) + max(len(a_ids), len(b_ids)) > max_length:
        return None
    return p_ids, a_ids, b_ids


def _gathered_logprobs(model, kwargs: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """fp32 log-softmax of the logits at (row, col) positions of one forward, the output head run only on
    those positions (``head_input``: also the CPU matmul trap); returns [n_positions, vocab] and the
    forward's output (for its cache)."""
    device = model_device(model)
    r, c = to_device(rows, device), to_device(cols, device)
    with head_input(model, lambda h: h[r.to(h.device), c.to(h.device)].unsqueeze(0)) as gathered:
        out = model(**kwargs)
    logits = out.logits
    if gathered and tuple(logits.shape[:2]) == (1, int(rows.numel())):
        picked = logits[0]
    else:  # a model that does not run its head once on its hidden states: the plain way
        if gathered:
            out = model(**kwargs)
        picked = out.logits[r, c]
    return torch.log_softmax(picked.float(), dim=-1), out


def pair_answer_logprobs(
    model, pad: int, items: Sequence[tuple[list[int], list[int], list[int]]]
) -> torch.Tensor:
    """Mean log p of answers a and b of every item ``(prompt ids, a ids, b ids)`` (from
    :func:`encode_pair_items`), [n, 2] on the model's device, the prompt read once: the prompts (left-padded)
    run with a KV cache, which is repeated for the two answers; only answers longer than one token need the
    second forward (the first answer token is predicted by the prompt's last position).

    Differentiable (SCALPEL trains on it: the shared prompt is about half of a moral item's tokens)."""
    n = len(items)
    answers = [ans for _, a, b in items for ans in (a, b)]  # row 2r: a of item r, 2r + 1: b
    longest = max(len(x) for x in answers)
    kwargs, mask = _prompt_pass([p for p, _, _ in items], pad, model, longest > 1)
    lp, device = mask.shape[1], model_device(model)
    first, out = _gathered_logprobs(model, kwargs, torch.arange(n), torch.full((n,), lp - 1))
    first_ids = torch.tensor([x[0] for x in answers]).view(n, 2)
    totals = first.gather(1, to_device(first_ids, device))  # [n, 2]: log p of each answer's first token
    if longest > 1:  # feed each answer but its last token; position j predicts token j + 1
        kwargs, _ = _continue_both(model, out, mask, pad, [x[:-1] for x in answers])
        rows = [k for k, x in enumerate(answers) for _ in x[1:]]
        cols = [j for x in answers for j in range(len(x) - 1)]
        targets = [t for x in answers for t in x[1:]]
        rest, _ = _gathered_logprobs(model, kwargs, torch.tensor(rows), torch.tensor(cols))
        picked = rest.gather(1, to_device(torch.tensor(targets)[:, None], device)).squeeze(1)
        totals = totals.reshape(-1).index_add(0, to_device(torch.tensor(rows), device), picked).view(n, 2)
    lengths = torch.tensor([len(x) for x in answers], dtype=torch.float32).view(n, 2)
    return totals / to_device(lengths, device)


def _prompt_pass(prompts: Sequence[list[int]], pad: int, model, cache: bool) -> tuple[dict, torch.Tensor]:
    """The forward kwargs of left-padded ``prompts`` (position ids counted from each row's first real token)
    and their attention mask (on the host)."""
    device = model_device(model)
    lp = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), lp), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), lp), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, lp - len(p) :] = torch.tensor(p)
        mask[r, lp - len(p) :] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    kwargs = {
        "input_ids": to_device(ids, device),
        "attention_mask": to_device(mask, device),
        "position_ids": to_device(pos, device),
        "use_cache": cache,
    }
    return kwargs, mask


def _continue_both(model, out, mask: torch.Tensor, pad: int, conts: Sequence[list[int]]) -> tuple[dict, list]:
    """Forward kwargs that feed ``conts`` (two per prompt: rows 2r and 2r + 1 continue prompt r) after the
    prompts' KV cache in ``out``, repeated for the two; and each continuation's length."""
    device = model_device(model)
    feed, feed_mask = right_padded(list(conts), pad)
    width = feed.shape[1]
    cache = getattr(out, "cache", None) or out.past_key_values  # transformers ≥ 5.25 calls it `cache`
    cache.batch_repeat_interleave(2)
    prompt_len = mask.sum(1).repeat_interleave(2)
    kwargs = {
        "input_ids": to_device(feed, device),
        "attention_mask": to_device(torch.cat([mask.repeat_interleave(2, 0), feed_mask], 1), device),
        "position_ids": to_device(prompt_len[:, None] + torch.arange(width)[None, :], device),
        cache_kwarg(model): cache,
        "use_cache": True,
    }
    return kwargs, [len(x) for x in conts]


def split_shared_prefix(a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """(the tokens ``a`` and ``b`` share at the start, the rest of ``a``, the rest of ``b``), each rest keeping at
    least one token (the input of :func:`shared_prefix_next_logprobs`)."""
    k = 0
    while k < min(len(a), len(b)) - 1 and a[k] == b[k]:
        k += 1
    return list(a[:k]), list(a[k:]), list(b[k:])


def shared_prefix_next_logprobs(
    model, pad: int, items: Sequence[tuple[list[int], list[int], list[int]]]
) -> torch.Tensor:
    """[n, 2, vocab] fp32 log-probs of the next token after ``prefix + a`` and after ``prefix + b`` for every
    item ``(prefix ids, a ids, b ids)`` (``a`` and ``b`` at least one token each), the prefix read once: the
    prefixes run (left-padded) with a KV cache, which is repeated for the two continuations. Two prompts that
    differ only in their last part (a judge's two questions about one long response) cost one prompt plus
    the two tails."""
    n = len(items)
    if any(not a or not b for _, a, b in items):
        raise ValueError("shared_prefix_next_logprobs: every continuation needs at least one token")
    kwargs, mask = _prompt_pass([p for p, _, _ in items], pad, model, True)
    out = model(**kwargs)
    kwargs, lengths = _continue_both(model, out, mask, pad, [c for _, a, b in items for c in (a, b)])
    rows = torch.arange(2 * n)
    picked, _ = _gathered_logprobs(model, kwargs, rows, torch.tensor(lengths) - 1)
    return picked.view(n, 2, -1)


def score_answer_pairs(
    model,
    tokenizer,
    prompts: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    batch_size: int = 16,
    max_length: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Length-normalised log p(a | prompt) and log p(b | prompt) of every item, each prompt read once.

    The same quantity as :func:`score_answers` on (prompt, a) and (prompt, b) — the prompt runs once with a
    KV cache instead of once per answer, which on short prompts with one-token answers (the built-in
    capabilities) halves the work; numbers agree to float rounding (other kernel shapes). Items longer
    than ``max_length`` are scored by :func:`score_answers` (their prompt is cut per answer).
    ``on_batch(rows)`` counts scored answers (two per item)."""
    n = len(prompts)
    if not (n == len(answers_a) == len(answers_b)):
        raise ValueError(f"got {n} prompts, {len(answers_a)} and {len(answers_b)} answers")
    a_out, b_out = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.float32)
    encoded = encode_pair_items(tokenizer, prompts, answers_a, answers_b, max_length)
    long = [i for i, e in enumerate(encoded) if e is None]
    if long:
        both = score_answers(
            model,
            tokenizer,
            [prompts[i] for i in long] * 2,
            [answers_a[i] for i in long] + [answers_b[i] for i in long],
            batch_size=batch_size,
            max_length=max_length,
            on_batch=on_batch,
        )
        a_out[long], b_out[long] = both[: len(long)], both[len(long) :]
    order = sorted((i for i, e in enumerate(encoded) if e is not None), key=lambda i: len(encoded[i][0]))
    pad = pad_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                scores = pair_answer_logprobs(model, pad, [encoded[i] for i in idx]).float().cpu()
                a_out[idx], b_out[idx] = scores[:, 0], scores[:, 1]
                if on_batch is not None:
                    on_batch(2 * len(idx))
    finally:
        model.train(was_training)
    return a_out, b_out


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
    right, wrong = score_answer_pairs(
        model, tokenizer, prompts, correct, incorrect, batch_size, max_length, on_batch=on_batch
    )
    return right - wrong


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
