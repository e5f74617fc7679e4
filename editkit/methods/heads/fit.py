"""`heads`: knock out attention heads (zero their o_proj input columns; exact and GQA-safe).

With an explicit ``heads`` list the method just applies it. Otherwise it finds the heads by compressed
sensing over random head knockouts (arXiv 2603.03335, locuslab/llm-components): m trials each knock out
k = ⌈s·N⌉ of the N = layers × query heads (balanced design), a continuous task score is measured per
trial on a fixed subset of the target's train items, and a sparse linear fit (Lasso) of the z-scored
scores on the 0/1 knockout matrix ranks the heads: the most negative coefficients are the heads the
capability needs. ``design: exhaustive`` (one head per trial, N evaluations) is the reference.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from editkit.edit.edit import Edit, ScaleInputs
from editkit.errors import EditkitError
from editkit.localize.designs import balanced_design, exhaustive_design, knockouts_per_trial
from editkit.localize.head_masks import design_to_masks, encode_items, score_head_masks
from editkit.localize.recovery import sparse_recovery
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.heads.params import HeadsParams
from editkit.methods.heads.report import HeadsReport, head_label
from editkit.model.sizing import model_head_batch_rows
from editkit.publish.plots import layer_head_heatmap
from editkit.run.distributed import gather_shares


def head_mask_edit(
    ctx_anatomy, heads: list[tuple[int, int]], scale: float = 0.0, info: dict | None = None
) -> Edit:
    """An Edit that scales the given (layer, query-head) pairs at the o_proj input."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        ctx_anatomy.layer(layer)
        by_layer.setdefault(layer, []).extend(ctx_anatomy.head_columns(head))
    ops = [
        ScaleInputs(module=ctx_anatomy.layer(li).o, index=cols, factor=scale)
        for li, cols in sorted(by_layer.items())
    ]
    return Edit(method="heads", ops=ops, info={"heads": [list(h) for h in heads], **(info or {})})


def batch_rows_for(model, p: HeadsParams, enc: dict | None = None) -> int:
    """``p.batch_rows``, or the default for where the model lives: 128 rows on the CPU; on an accelerator
    as many as fit in half its free memory, up to 2048 (:func:`editkit.model.sizing.head_batch_rows`), sized for
    the encoded rows ``enc`` (or ``max_length``-token rows)."""
    if p.batch_rows is not None:
        return p.batch_rows
    if enc is None:
        return model_head_batch_rows(model, p.max_length, p.max_length, 1)
    n_rows, width = enc["input_ids"].shape
    starts = enc["answer_mask"].float().argmax(dim=1)  # first answer token of each row
    logit_positions = width - int(starts.min()) + 1 if n_rows else width
    return model_head_batch_rows(model, width, logit_positions, n_rows)


def locate_heads(ctx: FitContext, p: HeadsParams, items: list[dict]) -> dict:
    """Run the knockout design and the recovery; returns coefficients [L, H], ranking, R², counts."""

    an = ctx.anatomy
    n_units = an.n_layers * an.n_heads
    if p.design == "exhaustive":
        X, k = exhaustive_design(n_units), 1
    else:
        k = min(p.knockouts or knockouts_per_trial(n_units, p.sparsity), n_units)
        X = balanced_design(n_units, p.trials, k, seed=ctx.rng("heads-design").randrange(2**31))
    masks = design_to_masks(X, an.n_layers, an.n_heads)
    t0 = time.time()
    rows = batch_rows_for(ctx.model, p, encode_items(ctx.tokenizer, items, p.score, p.max_length))
    score_kw = dict(score=p.score, batch_rows=rows, max_length=p.max_length)
    baseline = float(
        score_head_masks(
            ctx.model, ctx.tokenizer, an, items, torch.ones(1, an.n_layers, an.n_heads), **score_kw
        )[0]
    )

    def score_all(m: torch.Tensor) -> np.ndarray:  # each process scores a contiguous share of the masks
        def share(trials: list[int]) -> torch.Tensor:
            return score_head_masks(
                ctx.model,
                ctx.tokenizer,
                an,
                items,
                m[trials[0] : trials[-1] + 1],
                progress=lambda done, total: ctx.events.progress("fit", done, total),
                **score_kw,
            )

        return torch.cat(gather_shares(share, range(len(m)))).numpy()

    y = score_all(masks)
    if p.design == "exhaustive":
        # one head per trial: the effect of head j is its own drop; no fit needed
        coef, r2, extra = (y - baseline).astype(np.float64), 1.0, {}
    else:
        if float(np.std(y)) == 0.0:
            raise EditkitError(
                "method.heads: every knockout trial gave the same task score, so nothing can be localised "
                f"(score '{p.score}' on {len(items)} items); try score: margin or logprob, or more items"
            )
        coef, r2, extra = sparse_recovery(X, y, p.solver, p.alpha, n_nonzero=2 * p.top_k)
    order = np.argsort(coef, kind="stable")
    n_refine = min(p.refine, n_units) if p.design != "exhaustive" else 0
    if n_refine:
        # stage 2: the fit's top-R candidates, each knocked out alone; they are re-ranked by that drop
        cand = order[:n_refine]
        singles = design_to_masks(np.eye(n_units, dtype=np.int8)[cand], an.n_layers, an.n_heads)
        drops = score_all(singles) - baseline
        order = np.concatenate([cand[np.argsort(drops, kind="stable")], order[n_refine:]])
        extra["refined"] = {
            head_label(*divmod(int(j), an.n_heads)): round(float(d), 6)
            for j, d in zip(cand, drops, strict=True)
        }
    seconds = time.time() - t0
    return {
        "coef": coef.reshape(an.n_layers, an.n_heads),
        "order": [(int(j) // an.n_heads, int(j) % an.n_heads) for j in order],
        "r2": r2,
        "baseline": baseline,
        "trial_scores": y,
        "n_trials": int(X.shape[0]),
        "n_refine": n_refine,
        "knockouts_per_trial": int(k),
        "seconds": seconds,
        "batch_rows": score_kw["batch_rows"],
        **extra,
    }


class HeadsMethod(Method):
    name = "heads"
    params_cls = HeadsParams
    paper = "Compressed sensing for capability localization in LLMs (arXiv 2603.03335)"
    summary = "a sparse set of attention heads, found by compressed sensing over knockouts, zeroed at o_proj"
    moe = (
        "attention is dense in every supported MoE family: heads are found and zeroed exactly as on a dense "
        "model (contract-tested on each family)"
    )
    report = HeadsReport

    def check(self, params: HeadsParams, anatomy) -> None:
        for layer, head in params.heads or []:
            if not (0 <= layer < anatomy.n_layers and 0 <= head < anatomy.n_heads):
                raise EditkitError(
                    f"method.heads: [{layer}, {head}] is out of range for this model "
                    f"({anatomy.n_layers} layers x {anatomy.n_heads} heads)"
                )
        if params.heads is None and params.top_k > anatomy.n_total_heads:
            raise EditkitError(
                f"method.top_k: {params.top_k} is more than this model's {anatomy.n_total_heads} heads"
            )

    def fit(self, ctx: FitContext) -> FitResult:
        p: HeadsParams = ctx.params  # type: ignore[assignment]
        self.check(p, ctx.anatomy)
        if p.heads is not None:
            return FitResult(head_mask_edit(ctx.anatomy, [tuple(h) for h in p.heads], p.scale))

        train = list(ctx.data.get("target_train") or [])
        if not train:
            raise EditkitError("method.heads: head discovery needs target train items (data.target)")
        n_units = ctx.anatomy.n_total_heads
        items = ctx.rng("heads-items").sample(train, min(p.items, len(train)))
        ctx.events.log(
            f"heads: {p.design} design over {n_units} heads, score '{p.score}' on {len(items)} train items"
        )
        res = locate_heads(ctx, p, items)
        chosen = res["order"][: p.top_k]
        coef = res["coef"]
        refined = res.get("refined") or {}
        if any(refined.get(head_label(li, h), -1.0) >= 0 for li, h in chosen):
            ctx.events.log(
                "heads: knocking out some chosen heads alone does not lower the task score (raise refine?)",
                level="warning",
            )
        elif any(head_label(li, h) not in refined and coef[li, h] >= 0 for li, h in chosen):
            ctx.events.log(
                "heads: some chosen heads have a non-negative coefficient (too few trials or too few items?)",
                level="warning",
            )
        n_evals = res["n_trials"] + res["n_refine"] + 1  # + the unmasked baseline
        title = f"heads: {p.design} ({n_evals} evals, score {p.score})" + (
            f", R2={res['r2']:.2f}" if p.design != "exhaustive" else ""
        )
        values = [[round(float(v), 6) for v in row] for row in coef]
        ctx.events.emit(
            "heatmap", name="heads", values=values, xlabel="query head", ylabel="layer", title=title
        )
        png = Path(ctx.run_dir) / "heads_heatmap.png"
        if ctx.is_main:
            layer_head_heatmap(coef, png, title, chosen)
        ctx.events.log(
            "heads: chosen "
            + ", ".join(f"{head_label(li, h)} ({coef[li, h]:+.3f})" for li, h in chosen)
            + f"; R2 {res['r2']:.3f}; {n_evals} evaluations in {res['seconds']:.1f}s"
        )
        info = {
            "design": p.design,
            "solver": p.solver if p.design != "exhaustive" else None,
            "score": p.score,
            "coefficients": values,
            "coefficient_meaning": (
                "drop in task score when the head alone is knocked out"
                if p.design == "exhaustive"
                else "Lasso coefficient on z-scored task scores (negative = needed)"
            ),
            "r2": round(float(res["r2"]), 6),
            "n_evals": n_evals,
            "n_trials": res["n_trials"],
            "n_refine": res["n_refine"],
            "knockouts_per_trial": res["knockouts_per_trial"],
            "baseline_score": round(res["baseline"], 6),
            "trial_score_mean": round(float(np.mean(res["trial_scores"])), 6),
            "items": len(items),
            "eval_seconds": round(res["seconds"], 2),
            "batch_rows": res["batch_rows"],
            "heatmap": str(png),
            "ranking": [list(h) for h in res["order"][: max(20, p.top_k)]],
        }
        if "alpha" in res:
            info["lasso_cv_alpha"] = res["alpha"]
        if "refined" in res:
            info["refined_drops"] = res["refined"]
        return FitResult(head_mask_edit(ctx.anatomy, chosen, p.scale, info=info))

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        chosen = {tuple(h) for h in edit.info.get("heads", [])}
        pool = [
            (li, h)
            for li in range(ctx.anatomy.n_layers)
            for h in range(ctx.anatomy.n_heads)
            if (li, h) not in chosen
        ]
        rng = ctx.rng("heads-control")
        pick = rng.sample(pool, min(len(chosen), len(pool)))
        p: HeadsParams = ctx.params  # type: ignore[assignment]
        return head_mask_edit(ctx.anatomy, pick, p.scale, info={"control": "random heads"})
