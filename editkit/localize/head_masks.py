"""Per-row query-head knockouts, so one forward evaluates many knockout masks.

A forward pre-hook on every layer's o_proj multiplies its input, viewed as [rows, seq, n_heads, head_dim],
by a per-row, per-head factor. The o_proj input is the concatenation of the query heads' outputs, so this
removes exactly one query head (correct under GQA, unlike masking v_proj or o_proj's output). Each batch
row carries its own mask: a trial batch is one forward over (items × masks) with the model loaded once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from editkit.eval.pairwise import encode_prompt_answers, mean_answer_logprob
from editkit.localize.layer_hooks import LayerPreHooks

SCORES = ("logprob", "margin", "accuracy")


class HeadMasker(LayerPreHooks):
    """Context manager: ``with HeadMasker(model, anatomy) as hm: hm.set(masks); model(...)``.

    ``masks`` is [rows, n_layers, n_heads] (1 = keep, 0 = knock out, other values scale), or
    [n_layers, n_heads] for the same mask on every row; ``None`` turns the hooks into no-ops.
    """

    role = "o"

    def __init__(self, model, anatomy):
        super().__init__(model, anatomy)
        self._masks: torch.Tensor | None = None
        self._active: list[bool] = [False] * anatomy.n_layers

    def set(self, masks: torch.Tensor | None) -> None:
        if masks is None:
            self._masks, self._active = None, [False] * self.anatomy.n_layers
            return
        if masks.dim() == 2:
            masks = masks.unsqueeze(0)
        shape = (self.anatomy.n_layers, self.anatomy.n_heads)
        if masks.dim() != 3 or tuple(masks.shape[1:]) != shape:
            raise ValueError(f"head masks must be [rows, {shape[0]}, {shape[1]}], got {tuple(masks.shape)}")
        self._masks = masks
        # layers whose mask is all ones cost nothing
        self._active = (masks != 1).any(dim=2).any(dim=0).tolist()

    def _hook(self, layer: int):
        n_heads, head_dim = self.anatomy.n_heads, self.anatomy.head_dim

        def pre(mod, args):
            if not self._active[layer]:
                return None
            x = args[0]
            m = self._masks[:, layer, :].to(device=x.device, dtype=x.dtype)  # [rows or 1, n_heads]
            if m.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"head masks have {m.shape[0]} rows but the batch has {x.shape[0]}")
            lead = x.shape[:-1]
            xh = x.reshape(*lead, n_heads, head_dim)
            m = m.reshape(m.shape[0], *([1] * (len(lead) - 1)), n_heads, 1)
            return ((xh * m).reshape(x.shape),) + tuple(args[1:])

        return pre

    def _reset(self) -> None:
        self.set(None)


def encode_items(tokenizer, items: Sequence[Mapping], score: str, max_length: int = 128) -> dict:
    """The item rows one mask is scored on: gold answers, plus the wrong answers for margin/accuracy."""
    prompts = [it["prompt"] for it in items]
    answers = [it["correct"] for it in items]
    if score != "logprob":
        prompts, answers = prompts + prompts, answers + [it["incorrect"] for it in items]
    return encode_prompt_answers(tokenizer, prompts, answers, max_length=max_length)


def reduce_scores(per_row: torch.Tensor, n_items: int, score: str) -> torch.Tensor:
    """[trials, rows] answer log-probs → one task score per trial."""
    if score == "logprob":
        return per_row.mean(dim=1)
    margin = per_row[:, :n_items] - per_row[:, n_items:]
    if score == "margin":
        return margin.mean(dim=1)
    if score == "accuracy":
        return (margin > 0).float().mean(dim=1)
    raise ValueError(f"unknown score '{score}' (one of {', '.join(SCORES)})")


@torch.no_grad()
def head_mask_logprobs(
    model,
    anatomy,
    enc: Mapping[str, torch.Tensor],
    masks: torch.Tensor,
    batch_rows: int = 256,
    masks_per_forward: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Answer log-probs of the encoded rows under each head mask: [trials, rows] (CPU fp32).

    Several masks share one forward: rows = encoded rows × masks, each row with its own mask. The number
    of masks per forward is ``masks_per_forward`` or as many as fit in ``batch_rows`` rows.
    """
    n_rows = enc["input_ids"].shape[0]
    per = masks_per_forward or max(1, batch_rows // n_rows)
    n_trials = masks.shape[0]
    out = torch.empty(n_trials, n_rows, dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with HeadMasker(model, anatomy) as hm:
            for start in range(0, n_trials, per):
                chunk = masks[start : start + per].float()
                c = chunk.shape[0]
                batch = {k: v.repeat(c, 1) for k, v in enc.items()}
                hm.set(chunk.repeat_interleave(n_rows, dim=0))
                out[start : start + c] = mean_answer_logprob(model, batch).float().cpu().view(c, n_rows)
                if progress is not None:
                    progress(start + c, n_trials)
    finally:
        model.train(was_training)
    return out


def score_head_masks(
    model,
    tokenizer,
    anatomy,
    items: Sequence[Mapping],
    masks: torch.Tensor,
    score: str = "logprob",
    batch_rows: int = 256,
    masks_per_forward: int | None = None,
    max_length: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Task score under each head mask ([trials, n_layers, n_heads]) → [trials] (CPU fp32)."""
    if score not in SCORES:
        raise ValueError(f"unknown score '{score}' (one of {', '.join(SCORES)})")
    enc = encode_items(tokenizer, items, score, max_length)
    lp = head_mask_logprobs(model, anatomy, enc, masks, batch_rows, masks_per_forward, progress)
    return reduce_scores(lp, len(items), score)


def design_to_masks(design, n_layers: int, n_heads: int, factor: float = 0.0) -> torch.Tensor:
    """0/1 knockout design [trials, n_layers·n_heads] (layer-major) → head masks [trials, L, H]."""
    d = torch.as_tensor(design, dtype=torch.float32)
    return (1.0 - d * (1.0 - factor)).view(d.shape[0], n_layers, n_heads)
