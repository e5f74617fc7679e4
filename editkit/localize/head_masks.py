"""Per-row query-head knockouts, so one forward evaluates many knockout masks.

A forward pre-hook on every layer's o_proj multiplies its input, viewed as [rows, seq, n_heads, head_dim],
by a per-row, per-head factor. The o_proj input is the concatenation of the query heads' outputs, so this
removes exactly one query head (correct under GQA, unlike masking v_proj or o_proj's output). Each batch
row carries its own mask: a trial batch is one forward over (items × masks) with the model loaded once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from editkit.eval.forward import model_device, to_device
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

    def set(self, masks: torch.Tensor | None, device: torch.device | None = None) -> None:
        """Install ``masks``; with ``device`` they are copied there once here rather than once per layer
        and forward in the hooks (a blocking host→GPU copy per layer would wait for the GPU each time)."""
        if masks is None:
            self._masks, self._active = None, [False] * self.anatomy.n_layers
            return
        if masks.dim() == 2:
            masks = masks.unsqueeze(0)
        shape = (self.anatomy.n_layers, self.anatomy.n_heads)
        if masks.dim() != 3 or tuple(masks.shape[1:]) != shape:
            raise ValueError(f"head masks must be [rows, {shape[0]}, {shape[1]}], got {tuple(masks.shape)}")
        # layers whose mask is all ones cost nothing (worked out before the masks leave the host)
        self._active = (masks != 1).any(dim=2).any(dim=0).tolist()
        self._masks = to_device(masks, device) if device is not None else masks

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


class SharedPrefix:
    """Context manager: the first ``n`` rows of a ``copies``-times tiled batch run alone through the decoder
    layers below ``first``, and are tiled again on entering layer ``first``.

    Rows that differ only in their head masks are identical up to the first layer any of their masks
    touches, so computing those layers once per item instead of once per (item, mask) is exact and saves
    up to that fraction of the forward. Works through decoder-layer pre-hooks, so the model's own code
    (attention masks, rotary embeddings) runs unchanged: batch-sized tensors passed to the skipped layers
    are sliced to ``n`` rows; the layer ``first`` gets its hidden states tiled back to ``n · copies`` rows.
    """

    def __init__(self, model, anatomy, n: int, copies: int, first: int):
        self.model, self.anatomy, self.n, self.copies, self.first = model, anatomy, n, copies, first
        self._handles: list = []

    def __enter__(self):
        if self.copies > 1 and self.first > 0:
            for li in range(min(self.first, self.anatomy.n_layers - 1) + 1):
                block = self.model.get_submodule(self.anatomy.layer(li).prefix)
                hook = self._tile if li == self.first else self._slice
                self._handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _cut(self, x):
        full = self.n * self.copies
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == full:
            return x[: self.n]
        if isinstance(x, tuple):
            return tuple(self._cut(t) for t in x)
        return x

    def _slice(self, mod, args, kwargs):
        return tuple(self._cut(a) for a in args), {k: self._cut(v) for k, v in kwargs.items()}

    def _tile(self, mod, args, kwargs):
        def tile(h):
            return h.repeat(self.copies, *([1] * (h.dim() - 1))) if h.shape[0] == self.n else h

        if args:
            return (tile(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": tile(kwargs["hidden_states"])}


def first_touched_layer(masks: torch.Tensor) -> torch.Tensor:
    """[trials, L, H] head masks → [trials]: the first layer whose mask is not all ones (L if none)."""
    touched = (masks != 1).any(dim=2)  # [trials, L]
    n_layers = masks.shape[1]
    idx = torch.arange(n_layers).expand_as(touched)
    return torch.where(touched, idx, torch.full_like(idx, n_layers)).min(dim=1).values


@torch.no_grad()
def head_mask_logprobs(
    model,
    anatomy,
    enc: Mapping[str, torch.Tensor],
    masks: torch.Tensor,
    batch_rows: int = 256,
    masks_per_forward: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    share_prefix: bool = True,
) -> torch.Tensor:
    """Answer log-probs of the encoded rows under each head mask: [trials, rows] (CPU fp32).

    Several masks share one forward: rows = encoded rows × masks, each row with its own mask. The number
    of masks per forward is ``masks_per_forward`` or as many as fit in ``batch_rows`` rows. With
    ``share_prefix`` the masks are grouped by the first layer they touch, and the layers below it run once
    per item rather than once per (item, mask) (:class:`SharedPrefix`; exact).
    """
    n_rows = enc["input_ids"].shape[0]
    per = masks_per_forward or max(1, batch_rows // n_rows)
    n_trials = masks.shape[0]
    masks = masks.float()
    first = first_touched_layer(masks)
    order = torch.argsort(first, stable=True) if share_prefix and per > 1 else torch.arange(n_trials)
    out = torch.empty(n_trials, n_rows, dtype=torch.float32)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # results stay on the device until the end
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with HeadMasker(model, anatomy) as hm:
            for start in range(0, n_trials, per):
                idx = order[start : start + per]
                chunk = masks[idx]
                c = chunk.shape[0]
                batch = {k: v.repeat(c, 1) for k, v in enc.items()}
                hm.set(chunk.repeat_interleave(n_rows, dim=0), device=device)
                shared = int(first[idx].min()) if share_prefix else 0
                with SharedPrefix(model, anatomy, n_rows, c, min(shared, anatomy.n_layers - 1)):
                    pending.append((idx, mean_answer_logprob(model, batch).float().view(c, n_rows)))
                if progress is not None:
                    progress(start + c, n_trials)
        for idx, lp in pending:
            out[idx] = lp.cpu()
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
