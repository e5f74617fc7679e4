"""Router statistics of mixture-of-experts models: how often each expert is picked, on which text.

An edit of a MoE model can change which experts the routers pick (every later router reads the edited
residual stream): an edit that silently reroutes is a different edit. Every MoE run records, before and
after the edit, on the target text and on general text, the share of tokens each router sends to each
expert (a token counts once for each of its top-k experts, so the shares of a layer add up to k), and the
card shows how far they moved.

Counted at the input of each experts module (hidden states, top-k expert indices, top-k weights — the call
every supported family makes), padding tokens excluded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from editkit.eval.forward import model_device

#: rows of the card's "largest changes" table
TOP_CHANGES = 8


class RouterCounts:
    """Context manager: counts, per MoE layer, the tokens routed to each expert during forwards.

    Set ``mask`` (the batch's attention mask) before each forward so padding is not counted."""

    def __init__(self, model, anatomy):
        self.model, self.anatomy = model, anatomy
        self.layers = [la.index for la in anatomy.layers if la.is_moe]
        self.counts = {li: torch.zeros(anatomy.n_experts, dtype=torch.float64) for li in self.layers}
        self.tokens = 0
        self.mask: torch.Tensor | None = None
        self._handles: list = []

    def _hook(self, layer: int):
        def pre(mod, args, kwargs):
            idx = args[1] if len(args) > 1 else kwargs.get("top_k_index", kwargs.get("router_indices"))
            idx = idx.reshape(-1, idx.shape[-1]).detach().cpu()
            if self.mask is not None:
                idx = idx[self.mask.reshape(-1).bool().cpu()]
            n = self.anatomy.n_experts
            self.counts[layer] += torch.bincount(idx.reshape(-1), minlength=n + 1)[:n].to(torch.float64)

        return pre

    def __enter__(self) -> RouterCounts:
        for li in self.layers:
            mod = self.model.get_submodule(self.anatomy.layer(li).experts)
            self._handles.append(mod.register_forward_pre_hook(self._hook(li), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def shares(self) -> dict:
        t = max(self.tokens, 1)
        return {
            "tokens": self.tokens,
            "layers": self.layers,
            "shares": [[round(float(c) / t, 6) for c in self.counts[li]] for li in self.layers],
        }


@torch.no_grad()
def routing_shares(
    model, tokenizer, anatomy, texts: Sequence[str], batch_size: int = 8, max_length: int = 128
) -> dict:
    """Per MoE layer, the share of (non-padding) tokens of ``texts`` routed to each expert."""
    dev = model_device(model)
    with RouterCounts(model, anatomy) as rc:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                list(texts[i : i + batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            )
            rc.mask = enc["attention_mask"]
            rc.tokens += int(enc["attention_mask"].sum())
            model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))
    return rc.shares()


def routing_texts(data: Mapping, limit: int = 32) -> dict[str, list[str]]:
    """The texts router statistics are measured on: ``target`` (the target test items, prompt + correct
    answer; without triplets, the method's harmful test prompts) and ``general`` (general test text)."""
    target = [f"{t['prompt']}{t['correct']}" for t in (data.get("target_test") or [])[:limit]]
    if not target:
        for name in ("harmful_test", "harmful"):
            rows = list(data.get(name) or [])[:limit]
            target = [str(r.get("instruction") or r.get("prompt") or r.get("text") or "") for r in rows]
            target = [t for t in target if t]
            if target:
                break
    general = [t for t in (data.get("general_test") or data.get("general_train") or []) if t and t.strip()]
    out = {"target": target, "general": general[:limit]}
    return {k: v for k, v in out.items() if v}


def phase_routing(model, tokenizer, anatomy, data: Mapping) -> dict:
    """Router statistics of the model as it is now, on target and general text (empty: not a MoE)."""
    if not getattr(anatomy, "is_moe", False):
        return {}
    return {
        name: routing_shares(model, tokenizer, anatomy, texts) for name, texts in routing_texts(data).items()
    }


# ------------------------------------------------------------------------------------------------------
# before vs after, and the card
# ------------------------------------------------------------------------------------------------------


def routing_changes(before: Mapping, after: Mapping) -> dict:
    """Per layer the total-variation distance between the routing distributions (shares / k) before and
    after, and the expert shares that moved most."""
    layers = before.get("layers") or []
    tv, moves = [], []
    for li, b, a in zip(layers, before.get("shares") or [], after.get("shares") or [], strict=False):
        k = sum(b) or 1.0
        tv.append(round(0.5 * sum(abs(x - y) for x, y in zip(b, a, strict=True)) / k, 6))
        moves += [(li, e, x, y) for e, (x, y) in enumerate(zip(b, a, strict=True))]
    moves.sort(key=lambda m: -abs(m[3] - m[2]))
    return {
        "layers": layers,
        "tv_distance": tv,
        "max_tv_distance": max(tv, default=0.0),
        "largest": [list(m) for m in moves[:TOP_CHANGES]],
    }


def routing_section(metrics: Mapping) -> list[str]:
    """The card's "Routing" section for a MoE edit (nothing for dense models)."""
    routing = metrics.get("routing") or {}
    base, edited = routing.get("base") or {}, routing.get("edited") or {}
    if not base:
        return []
    lines = [
        "## Routing",
        "",
        "The share of tokens each router sends to each expert (a token counts once for each of its top-k "
        "experts), before and after the edit; total variation (TV) distance between the routing "
        "distributions per layer (0: the same experts are picked as often; 1: entirely different ones). "
        "Per-layer, per-expert shares are in `metrics.json` under `routing`.",
        "",
        "| text | tokens | mean TV | largest TV (layer) |",
        "| --- | --- | --- | --- |",
    ]
    tables = []
    for name in ("target", "general"):
        if name not in base or name not in edited:
            continue
        ch = routing_changes(base[name], edited[name])
        tv = ch["tv_distance"]
        worst = max(range(len(tv)), key=tv.__getitem__) if tv else None
        mean = sum(tv) / len(tv) if tv else 0.0
        where = f"{tv[worst]:.4f} (layer {ch['layers'][worst]})" if worst is not None else "–"
        lines.append(f"| {name} | {base[name].get('tokens')} | {mean:.4f} | {where} |")
        tables += ["", f"Largest changes on {name} text:", "", "| layer | expert | before | after |"]
        tables += ["| --- | --- | --- | --- |"]
        tables += [f"| {li} | {e} | {b:.4f} | {a:.4f} |" for li, e, b, a in ch["largest"]]
    return lines + tables + [""]
