"""`refusal`: find the refusal direction, clean it against concept atoms (SRA), orthogonalise the writers.

1. Residual activations at the end of the chat-templated prompt for harmful and harmless prompts; per layer
   r_l = normalise(μ_harmful − μ_harmless) (float64; optional projection off the harmless mean and
   winsorisation) — Arditi et al. 2024.
2. SRA (arXiv 2601.08489, ``sra: true``): each built-in or user concept atom is the unit mean-difference
   direction of its prompt set at the same layer; r ← r − Cᵀ(CCᵀ+αI)⁻¹Cr, renormalised. ``sra: false`` is
   plain abliteration.
3. Layer: the candidate (last 20% of layers excluded) whose ablation gives the lowest refusal-token
   log-odds on validation harmful prompts while first-token KL on validation harmless prompts stays under
   ``kl_limit``; every candidate's score is in ``edit.info``. With ``edit_from: auto`` the candidates are
   (direction layer, first edited layer) pairs and only the writers from that layer on are edited.
4. Edit: ``ProjectOut`` (W ← W − s·r·rᵀ·W) on every residual writer (o_proj, down_proj; embeddings
   optional), or with ``norm_preserving`` the exact :class:`NormPreservingProjectOut` that also keeps the
   norm of every column (the residual vector each input feature writes).
"""

from __future__ import annotations

import math

import torch

from editkit.distributed import map_across_processes
from editkit.edit import Edit
from editkit.errors import EditkitError
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.refusal.params import RefusalParams
from editkit.methods.registry import register_method
from editkit.ops import EditOp, NormPreservingProjectOut, ProjectOut
from editkit.refusal.atoms import atom_pairs_from_rows, cosines, load_atom_pairs, ridge_clean
from editkit.refusal.chat import chat_first_token_logprobs, kl_rows, prompt_texts
from editkit.refusal.direction import diff_of_means, residual_activations
from editkit.refusal.metrics import phase_refusal_metrics
from editkit.sizing import model_eval_batch_size

# ------------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------------


def edited_layers(anatomy, p: RefusalParams, start: int | None = None) -> list[int]:
    """The layers whose writers are edited: ``edit_layers`` (default all) from ``start`` (or edit_from) on."""
    layers = range(anatomy.n_layers) if p.edit_layers is None else p.edit_layers
    if start is None and isinstance(p.edit_from, int):
        start = p.edit_from
    return [li for li in layers if start is None or li >= start]


def project_edit(
    anatomy,
    r: torch.Tensor,
    p: RefusalParams,
    info: dict | None = None,
    start: int | None = None,
    strength: float | None = None,
) -> Edit:
    """ProjectOut (or the norm-preserving op) of unit ``r`` on every residual writer, per-layer strength.

    Writers of the layers :func:`edited_layers` gives (``start``: the first edited layer, overriding
    ``edit_from``); embeddings only when ``p.embeddings``. ``strength`` overrides ``p.strength`` (needed
    when that is 'auto'); ``strength_by_layer`` still wins for the layers it names.
    """
    if strength is None:
        if p.strength == "auto":
            raise ValueError("project_edit: strength 'auto' must be resolved to a number first")
        strength = float(p.strength)
    op_cls = NormPreservingProjectOut if p.norm_preserving else ProjectOut
    r32 = (r / r.norm()).to(torch.float32).contiguous()
    layers = edited_layers(anatomy, p, start)
    ops: list[EditOp] = []
    if p.embeddings:
        if anatomy.tied_embeddings:
            raise EditkitError(
                "method.embeddings: this model ties its input embeddings to the output head; editing them "
                "would change the head too — set embeddings: false"
            )
        ops.append(op_cls(module=anatomy.embed, direction=r32.clone(), strength=strength))
    for li in layers:
        s = p.strength_by_layer.get(li, strength)
        if s == 0:
            continue
        for name in anatomy.layer(li).residual_writers:
            ops.append(op_cls(module=name, direction=r32.clone(), strength=s))  # own storage: safetensors
    return Edit(method="refusal", ops=ops, info=info or {})


def _pick(cands: list, grid: dict, kl_limit: float):
    """The selection rule: lowest refusal log-odds among ``cands`` within the KL limit, else the lowest KL."""
    ok = [c for c in cands if grid[c]["kl"] <= kl_limit]
    if ok:
        return min(ok, key=lambda c: grid[c]["refusal_log_odds"])
    return min(cands, key=lambda c: grid[c]["kl"])


def _texts(ctx: FitContext, name: str, limit: int, skip: int = 0) -> list[str]:
    rows = list(ctx.data[name])
    return prompt_texts(rows[skip:], f"data.sets.{name}", limit)


def _refusal_token_ids(tokenizer, words: list[str]) -> list[int]:
    ids = {tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words if w}
    return sorted(ids)


def refusal_log_odds(lp: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Per prompt log(p_R / (1 − p_R)) with p_R the first-token mass on refusal tokens."""
    lr = torch.logsumexp(lp[:, token_ids], dim=-1)
    return lr - torch.log1p(-lr.exp().clamp_max(1 - 1e-7))


@register_method
class RefusalMethod(Method):
    name = "refusal"
    params_cls = RefusalParams
    paper = "Surgical Refusal Ablation (arXiv 2601.08489); Arditi et al. 2024 (arXiv 2406.11717)"
    summary = "a refusal direction (cleaned against concept atoms), projected out of every residual writer"
    needs = ("sets.harmful", "sets.harmless")

    def check(self, params, anatomy) -> None:
        p: RefusalParams = params  # type: ignore[assignment]
        n = anatomy.n_layers
        if p.layer is not None and not 0 <= p.layer < n:
            raise EditkitError(f"method.layer: {p.layer} is out of range 0..{n - 1}")
        if p.min_layer >= n:
            raise EditkitError(f"method.min_layer: {p.min_layer} is out of range 0..{n - 1}")
        bad = [li for li in (p.edit_layers or []) if not 0 <= li < n]
        if bad:
            raise EditkitError(f"method.edit_layers: layer {bad[0]} is out of range 0..{n - 1}")
        bad = [li for li in p.strength_by_layer if not 0 <= li < n]
        if bad:
            raise EditkitError(f"method.strength_by_layer: layer {bad[0]} is out of range 0..{n - 1}")
        if p.embeddings and anatomy.tied_embeddings:
            raise EditkitError(
                "method.embeddings: this model ties its input embeddings to the output head; set embeddings: false"
            )
        if isinstance(p.edit_from, int) and not edited_layers(anatomy, p):
            raise EditkitError(
                f"method.edit_from: {p.edit_from} leaves no layer to edit (the model has {n} layers"
                + (f", edit_layers lists {p.edit_layers}" if p.edit_layers is not None else "")
                + ")"
            )

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, ctx: FitContext) -> FitResult:
        p: RefusalParams = ctx.params  # type: ignore[assignment]
        model, tok, an = ctx.model, ctx.tokenizer, ctx.anatomy
        for need in (p.harmful, p.harmless, *p.atom_sets):
            if need not in ctx.data:
                raise EditkitError(f"data.sets.{need}: method 'refusal' needs this prompt set")
        self.check(p, an)
        # validation prompts: their own sets, else the rows after the training rows
        has_val = p.harmful_val in ctx.data and p.harmless_val in ctx.data
        harm = _texts(ctx, p.harmful, p.n_train)
        safe = _texts(ctx, p.harmless, p.n_train)
        if has_val:
            harm_val, safe_val = _texts(ctx, p.harmful_val, p.n_val), _texts(ctx, p.harmless_val, p.n_val)
        else:
            harm_val = _texts(ctx, p.harmful, p.n_val, skip=p.n_train)
            safe_val = _texts(ctx, p.harmless, p.n_val, skip=p.n_train)
        ctx.events.log(f"refusal: direction from {len(harm)} harmful / {len(safe)} harmless prompts")

        bs = p.batch_size or model_eval_batch_size(model)
        acts_h = residual_activations(model, tok, harm, p.positions, bs)
        acts_s = residual_activations(model, tok, safe, p.positions, bs)
        raw = diff_of_means(acts_h, acts_s, p.project_off_harmless_mean, p.winsorize)  # [L, H]
        gap = (acts_h.mean(0) - acts_s.mean(0)).norm(dim=-1)  # separation per layer

        atom_names: list[str] = []
        atom_dirs = torch.empty(an.n_layers, 0, an.hidden_size, dtype=torch.float64)
        if p.sra:
            pairs = [(n, *load_atom_pairs(n)) for n in p.atoms]
            pairs += [(n, *atom_pairs_from_rows(list(ctx.data[n]), f"data.sets.{n}")) for n in p.atom_sets]
            dirs = []
            for n, pos, neg in pairs:
                a_pos = residual_activations(model, tok, pos, p.positions, bs)
                a_neg = residual_activations(model, tok, neg, p.positions, bs)
                dirs.append(diff_of_means(a_pos, a_neg))
                atom_names.append(n)
            if dirs:
                atom_dirs = torch.stack(dirs, dim=1)  # [L, k, H]

        def cleaned(layer: int) -> torch.Tensor:
            if not atom_names:
                return raw[layer]
            return ridge_clean(raw[layer], atom_dirs[layer], p.ridge_alpha)

        # the direction the layer search uses: SRA-cleaned, or raw for plain abliteration and for sra: auto
        # (where the layer comes from the raw direction and both are then compared at that layer)
        primary = "sra" if atom_names and p.sra is True else "plain"
        dir_of = {"sra": cleaned, "plain": lambda li: raw[li]}

        # layer selection
        ref_ids = _refusal_token_ids(tok, p.refusal_tokens)
        base_h = chat_first_token_logprobs(model, tok, harm_val, bs)
        base_s = chat_first_token_logprobs(model, tok, safe_val, bs)
        base_score = float(refusal_log_odds(base_h, ref_ids).mean())
        hi = max(p.min_layer + 1, math.floor(p.max_layer_frac * an.n_layers))
        layers = [p.layer] if p.layer is not None else list(range(p.min_layer, hi))
        if p.edit_from == "auto":  # (direction layer, first edited layer) pairs
            # a start past every listed edit layer would edit nothing: not a candidate
            candidates = [
                (li, s)
                for li in layers
                for s in sorted({math.floor(f * li) for f in p.edit_from_fracs})
                if edited_layers(an, p, s)
            ]
            if not candidates:
                raise EditkitError(
                    f"method.edit_from_fracs: no start floor(f * layer) for f in {p.edit_from_fracs} leaves a "
                    f"layer of edit_layers {p.edit_layers} to edit; add 0.0 to edit_from_fracs"
                )
        else:
            candidates = [(li, None) for li in layers]
        auto = p.strength == "auto"
        full = 1.0 if auto else float(p.strength)
        cands = [(li, st, full) for li, st in candidates]
        total = len(cands) + (p.strength_layers * p.strength_steps if auto else 0)
        done = [0]

        def score(cand: tuple[int, int | None, float], r: torch.Tensor | None = None) -> dict[str, float]:
            li, st, s = cand  # split over processes; r: the direction (default: the layer search's at li)
            e = project_edit(an, dir_of[primary](li) if r is None else r, p, start=st, strength=s)
            with e.applied(model):
                lp_h = chat_first_token_logprobs(model, tok, harm_val, bs)
                lp_s = chat_first_token_logprobs(model, tok, safe_val, bs)
            done[0] += 1
            ctx.events.progress("fit", min(done[0], total), total)
            return {
                "refusal_log_odds": round(float(refusal_log_odds(lp_h, ref_ids).mean()), 4),
                "kl": round(float(kl_rows(base_s, lp_s).mean()), 5),
            }

        def weaken(
            cand: tuple[int, int | None, float], kl_full: float, r: torch.Tensor | None = None
        ) -> list:
            """Search s in (0, full) for the largest strength whose validation KL fits (``kl_full``: the KL
            at full strength): the first try assumes KL ∝ s², later ones interpolate log KL against log s
            inside the bracket."""
            found = []
            lo, kl_lo, hi, kl_hi = 0.0, 0.0, full, kl_full
            for _ in range(p.strength_steps):
                if lo > 0 and kl_lo > 0:
                    k = math.log(kl_hi / kl_lo) / math.log(hi / lo)  # local exponent
                    s = lo * (p.kl_limit / kl_lo) ** (1 / k) if k > 0 else (lo + hi) / 2
                else:
                    s = hi * math.sqrt(p.kl_limit / kl_hi)
                s = round(min(max(s, lo + 0.1 * (hi - lo)), hi - 0.1 * (hi - lo)), 4)  # strictly inside
                c = (cand[0], cand[1], s)
                found.append((c, score(c, r)))
                kl = found[-1][1]["kl"]
                lo, kl_lo, hi, kl_hi = (s, kl, hi, kl_hi) if kl <= p.kl_limit else (lo, kl_lo, s, kl)
            return found

        grid = dict(zip(cands, map_across_processes(score, cands), strict=True))
        if auto:
            # the best-scoring candidates that cost too much at full strength are weakened until their KL
            # fits (a lower strength only raises the log-odds: candidates already within the limit stay,
            # and only those that may beat the best of them are worth weakening)
            ok = [grid[c]["refusal_log_odds"] for c in cands if grid[c]["kl"] <= p.kl_limit]
            bar = min(ok, default=math.inf)

            def at_limit(c) -> float:  # predicted log-odds at the limit: the drop ∝ s, the KL ∝ s²
                g = grid[c]
                return base_score - (base_score - g["refusal_log_odds"]) * math.sqrt(p.kl_limit / g["kl"])

            over = sorted(
                (c for c in cands if grid[c]["kl"] > p.kl_limit and at_limit(c) < bar), key=at_limit
            )

            for found in map_across_processes(lambda c: weaken(c, grid[c]["kl"]), over[: p.strength_layers]):
                grid.update(found)
            ctx.events.progress("fit", total, total)
        layer, start, strength = _pick(list(grid), grid, p.kl_limit)
        if grid[(layer, start, strength)]["kl"] > p.kl_limit:
            ctx.events.log(
                f"refusal: no candidate keeps harmless KL <= {p.kl_limit}; using layer {layer} "
                f"(lowest KL {grid[(layer, start, strength)]['kl']})",
                level="warning",
            )
        # per direction layer: its scores at its best first edited layer by the same rule (the card's table
        # and plot); for the chosen layer that is the chosen pair
        best = {li: _pick([c for c in grid if c[0] == li], grid, p.kl_limit) for li in layers}
        scores = {li: dict(grid[c], strength=c[2]) if auto else grid[c] for li, c in best.items()}
        ctx.events.emit(
            "heatmap",
            name="refusal_layer_scores",
            values=[
                [scores[li]["refusal_log_odds"] for li in layers],
                [scores[li]["kl"] for li in layers],
            ],
            xlabel="layer",
            xlabels=[str(li) for li in layers],
            ylabel="score",
            ylabels=["refusal log-odds", "harmless KL"],
            title="refusal: direction ablated per candidate layer",
        )
        if scores[layer]["refusal_log_odds"] > 0:
            ctx.events.log(
                f"refusal: the chosen layer {layer} leaves refusal tokens more likely than not on the "
                f"validation prompts (log-odds {scores[layer]['refusal_log_odds']}); refusal will likely "
                "remain — raise kl_limit, try sra: true, or set method.layer",
                level="warning",
            )
        r, kept = dir_of[primary](layer), primary
        chosen = grid[(layer, start, strength)]
        comparison = None
        if atom_names and (p.compare_plain or p.sra == "auto"):
            # the other direction at the same layer, its strength found the same way: the card's comparison
            other = "plain" if primary == "sra" else "sra"
            r_other = dir_of[other](layer)
            c0 = (layer, start, full)
            ogrid = {c0: score(c0, r_other)}
            if auto and ogrid[c0]["kl"] > p.kl_limit:
                ogrid.update(weaken(c0, ogrid[c0]["kl"], r_other))
            oc = _pick(list(ogrid), ogrid, p.kl_limit)
            theirs = {"direction": other, "strength": oc[2], **ogrid[oc]}
            mine = {"direction": primary, "strength": strength, **chosen}
            comparison = theirs
            if p.sra == "auto" and _pick([0, 1], {0: mine, 1: theirs}, p.kl_limit) == 1:
                comparison, r, strength, chosen, kept = mine, r_other, oc[2], ogrid[oc], other
                scores[layer] = dict(chosen, strength=strength) if auto else chosen
        info: dict = {
            "layer": layer,
            "direction_source": "hidden_states[layer] (residual stream entering the layer), last "
            f"{p.positions} prompt token(s), chat template",
            "sra": kept == "sra",
            "layer_search_direction": "sra" if primary == "sra" else "raw",
            "ridge_alpha": p.ridge_alpha if atom_names else None,
            "norm_preserving": p.norm_preserving,
            "n_train": [len(harm), len(safe)],
            "n_val": [len(harm_val), len(safe_val)],
            "base_refusal_log_odds": round(base_score, 4),
            "layer_scores": {str(k): v for k, v in scores.items()},
            "mean_gap_norm": [round(float(g), 4) for g in gap],
            "edited_layers": edited_layers(an, p, start),
            "strength": strength,
            "embeddings": p.embeddings,
        }
        if p.edit_from == "auto":
            info["edit_from"] = start
            info["window_scores"] = {f"{li}:{st}": v for (li, st, s), v in grid.items() if s == full}
        if auto:
            info["strength_scores"] = {
                (f"{li}:{st}" if st is not None else str(li)) + f"@{s}": v
                for (li, st, s), v in grid.items()
                if s != full
            }
        if atom_names:
            info["atoms"] = atom_names
            info["atom_cosines_before"] = cosines(raw[layer], atom_dirs[layer], atom_names)
            info["atom_cosines_after"] = cosines(r, atom_dirs[layer], atom_names)
            info["cos_raw_cleaned"] = round(float(raw[layer] @ r), 4)
        # the other direction (plain abliteration for SRA, or SRA when sra: auto picked plain) at the same
        # layer and KL limit: evaluated like the edit so the card shows both
        comparisons: dict[str, Edit] = {}
        if comparison is not None:
            info["comparison"] = comparison
            other_r = dir_of[comparison["direction"]](layer)
            name = "plain abliteration" if comparison["direction"] == "plain" else "SRA"
            comparisons[name] = project_edit(
                an, other_r, p, {"comparison": comparison}, start=start, strength=comparison["strength"]
            )
            ctx.events.log(
                f"refusal: {name} at the same layer: strength {comparison['strength']}, log-odds "
                f"{comparison['refusal_log_odds']}, val KL {comparison['kl']}"
                + (f" (sra: auto kept {kept})" if p.sra == "auto" else "")
            )
        ctx.events.log(
            f"refusal: layer {layer}, strength {strength}, log-odds {chosen['refusal_log_odds']} "
            f"(base {base_score:.3f}), val KL {chosen['kl']}"
        )
        return FitResult(project_edit(an, r, p, info, start=start, strength=strength), comparisons)

    # -- metrics & control ---------------------------------------------------------------------------
    def evaluate(self, ctx: FitContext, phase: str) -> dict[str, float]:
        p: RefusalParams = ctx.params  # type: ignore[assignment]
        return phase_refusal_metrics(
            ctx,
            p.harmful_test,
            p.harmless_test,
            p.eval_max_prompts,
            p.eval_max_new_tokens,
            phase,
        )

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """A random unit direction with the same ops (modules, kind, strengths)."""
        g = torch.Generator().manual_seed(ctx.seed + 1009)
        r = torch.randn(ctx.anatomy.hidden_size, generator=g, dtype=torch.float64)
        r = (r / r.norm()).to(torch.float32)
        ops = [type(op)(module=op.module, direction=r.clone(), strength=op.strength) for op in edit.ops]
        return Edit(method="refusal", ops=ops, info={"control": "random unit direction, same ops"})
