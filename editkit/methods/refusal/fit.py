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

import torch

from editkit.edit.edit import Edit
from editkit.edit.ops import WriterProjectOut
from editkit.errors import EditkitError
from editkit.eval.refusal.metrics import phase_refusal_metrics, refusal_eval_units
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.refusal.edit import edited_layers, uniform_weights
from editkit.methods.refusal.optuna_search import kernel_of, run_search
from editkit.methods.refusal.params import OBJECTIVE_LABELS, RefusalParams
from editkit.methods.refusal.profile import layer_weights
from editkit.methods.refusal.report import RefusalReport
from editkit.methods.refusal.search import RefusalSearch


def _r4(ws: list[float]) -> list[float]:
    return [round(float(w), 4) for w in ws]


# ------------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------------


GUIDE = """
**Which edit, which search.** Three parts, each chosen on its own:

- *Direction*: one layer's (`layer`, or the grid's pick), one at a fractional index (`direction_index`: linear
  interpolation of the two neighbouring layers' directions), or each edited layer's own (`direction_per_layer`);
  optionally cleaned against concept atoms (`sra`) and projected off the harmless mean of each edited layer
  (`harmless_mean_per_layer`).
- *Profile*: how strongly each layer's writers are edited. Unset, `strength` on every edited layer (today's edit,
  unchanged). `attn_profile` / `mlp_profile`: a `tent` (`peak` at layer `position`, linear down to `floor` at
  `width` layers either side, zero beyond; heretic's kernel) or `free` (`values`, one per layer), separately for
  attention out-projections and MLP down-projections; MLP peak 0 leaves the MLP alone. A free profile of ones is
  exactly today's full-strength edit.
- *Search*: `grid` (default) scores every candidate layer (and strength with `strength: auto`) on the validation
  prompts under `kl_limit`. `optuna` runs that grid, then a seeded multi-objective TPE (`trials`,
  `startup_trials`, ranges in `search_space`) over the direction index and both tents, scored by first-token
  refusal log-odds on harmful and first-token KL on harmless validation prompts (one forward each, no
  generation); its first trial is the grid optimum, trials whose KL is already above the best eligible one are
  pruned, and the pick is the lowest KL among trials at or below `refusal_target` (default the grid optimum's
  log-odds) — confirmed by generation first (`confirm`: the grid optimum and that many lowest-KL eligible trials
  answer the validation harmful prompts; a trial that refuses more often than the grid optimum is dropped, since
  the first token alone can promise a refusal removal the generated text does not keep). The study is journaled in the run directory: `editkit apply --resume` continues the same trials.
  `search_minutes` gives the search a wall-clock budget (no trial starts after it; `touch
  <run>/refusal_search.stop` does the same by hand).
  `compare_grid` evaluates the grid optimum on the test prompts beside the pick.

Use the grid when a run must be short or the model is new to you (one number to read: the layer); use `optuna`
when first-token KL matters and the budget allows about one forward pass over the validation prompts per trial.
Norms: `norm_preserving: true` (`column`) keeps every writer column's norm exactly and still removes r; `row` is
heretic's approximation (on `qwen-coder-1.5b` neither changed KL or refusal measurably). `harmless_mean_per_layer`
cost 15 % less held-out first-token KL there at the same refusal (0.068 against 0.080; BENCHMARKS.md).
`null_space` (AlphaEdit) keeps each writer's update off the principal subspace of its harmless inputs (energy
fraction, e.g. 0.99): harmless prompts' writer outputs barely move, at the price of removing less per unit of
strength.
"""


class RefusalMethod(Method):
    name = "refusal"
    params_cls = RefusalParams
    paper = "Surgical Refusal Ablation (arXiv 2601.08489); Arditi et al. 2024 (arXiv 2406.11717)"
    summary = "a refusal direction (cleaned against concept atoms), projected out of every residual writer"
    report = RefusalReport
    moe = (
        "every expert's down projection (and the shared expert's) is a residual writer: the same projection, "
        "norm preservation and per-layer strength as a dense `down_proj`, merged into each expert's slice of "
        "the fused tensor (GPT-OSS: its expert biases projected too)"
    )
    needs = ("sets.harmful", "sets.harmless")
    guide = GUIDE

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
        if p.direction_index is not None and p.direction_index > n - 1:
            raise EditkitError(f"method.direction_index: {p.direction_index} is out of range 0..{n - 1}")
        for field in ("attn_profile", "mlp_profile"):
            prof = getattr(p, field)
            if prof is not None and prof.kind == "free" and len(prof.values) != n:
                raise EditkitError(
                    f"method.{field}: a free profile needs {n} values (one per layer), got {len(prof.values)}"
                )
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

    def check_data(self, params, sets: set[str]) -> None:
        p: RefusalParams = params  # type: ignore[assignment]
        for need in (p.harmful, p.harmless, *p.atom_sets):
            if need not in sets:
                raise EditkitError(f"data.sets.{need}: method 'refusal' needs this prompt set")

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, ctx: FitContext) -> FitResult:
        p: RefusalParams = ctx.params  # type: ignore[assignment]
        for need in (p.harmful, p.harmless, *p.atom_sets):
            if need not in ctx.data:
                raise EditkitError(f"data.sets.{need}: method 'refusal' needs this prompt set")
        self.check(p, ctx.anatomy)
        s = RefusalSearch(ctx, p)
        s.load_prompts()
        s.find_directions()
        s.prepare_null_space()
        s.prepare_scores()
        if p.attn_profile is not None or p.mlp_profile is not None or p.direction_index is not None:
            if p.search == "grid":  # a kernel given in the recipe: no search
                return self._fixed_kernel(s)
        if p.search == "optuna":
            return self._optuna(s)
        layer, start, strength = s.search()
        scores = s.layer_scores(layer)
        kept, strength, chosen, comparison = s.compare(layer, start, strength)
        if kept != s.primary:  # sra: auto kept the other direction
            scores[layer] = dict(chosen, strength=strength) if s.auto else chosen
        info = s.info(layer, start, strength, kept, scores)
        # the other direction (plain abliteration for SRA, or SRA when sra: auto picked plain) at the same
        # layer and KL limit: evaluated like the edit so the card shows both
        comparisons: dict[str, Edit] = {}
        if comparison is not None:
            info["comparison"] = comparison
            name = "plain abliteration" if comparison["direction"] == "plain" else "SRA"
            comparisons[name] = s.grid_edit(
                comparison["direction"], layer, start, comparison["strength"], {"comparison": comparison}
            )
            ctx.events.log(
                f"refusal: {name} at the same layer: strength {comparison['strength']}, log-odds "
                f"{comparison['refusal_log_odds']}, val KL {comparison['kl']}"
                + (f" (sra: auto kept {kept})" if p.sra == "auto" else "")
            )
        ctx.events.log(
            f"refusal: layer {layer}, strength {strength}, log-odds {chosen['refusal_log_odds']} "
            f"(base {s.base_score:.3f}), val KL {chosen['kl']}"
        )
        # the edit the search scored: with per-layer harmless means, row norms or the null space that is the
        # kernel edit, not the plain projection
        return FitResult(s.grid_edit(kept, layer, start, strength, info), comparisons)

    def _fixed_kernel(self, s: RefusalSearch) -> FitResult:
        """``attn_profile`` / ``direction_index`` given with ``search: grid``: that edit, scored once."""
        p, an = s.p, s.ctx.anatomy
        index = (
            None
            if p.direction_per_layer
            else (p.direction_index if p.direction_index is not None else p.layer)
        )
        if index is None and not p.direction_per_layer:
            raise EditkitError(
                "method.attn_profile: with search: grid a profile needs method.layer or method.direction_index "
                "(or search: optuna)"
            )
        # a writer kind without a profile: today's uniform strength (mlp_profile unset follows attn_profile)
        w = uniform_weights(an, p, None, 1.0 if p.strength == "auto" else float(p.strength))
        attn = layer_weights(p.attn_profile, an.n_layers) if p.attn_profile is not None else w
        mlp_prof = p.mlp_profile or p.attn_profile
        mlp = layer_weights(mlp_prof, an.n_layers) if mlp_prof is not None else w
        s.candidates()
        s.total = 1
        info = s.info(int(round(index)) if index is not None else 0, None, None, s.primary, {})
        e = s.make_edit(s.primary, index, attn, mlp)
        scores = s.evaluate_edit(e)
        info |= {
            "direction_index": index,
            "attn_weights": _r4(attn),
            "mlp_weights": _r4(mlp),
            "scores": scores,
        }
        s.ctx.events.log(
            f"refusal: kernel edit, log-odds {scores['refusal_log_odds']}, val KL {scores['kl']}"
        )
        return FitResult(s.make_edit(s.primary, index, attn, mlp, info))

    def _optuna(self, s: RefusalSearch) -> FitResult:
        """The grid (as configured) first, then the seeded TPE over kernels; the rule picks; the grid optimum
        is evaluated beside the pick (``compare_grid``)."""
        p, an, ctx = s.p, s.ctx.anatomy, s.ctx
        layer, start, strength = s.search(extra_units=p.trials)
        grid_scores = dict(s.grid[(layer, start, strength)])
        summary, params = run_search(s, (layer, start, strength))
        index, attn_t, mlp_t = kernel_of(params)
        attn, mlp = layer_weights(attn_t, an.n_layers), layer_weights(mlp_t, an.n_layers)
        chosen = next(t for t in summary["trials"] if t["number"] == summary["chosen_trial"])
        key = summary["objective_key"]
        info = s.info(layer, start, strength, s.primary, s.layer_scores(layer))
        info |= {
            "search": "optuna",
            "grid_optimum": {"layer": layer, "edit_from": start, "strength": strength, **grid_scores},
            "direction_index": index,
            "kernel": {"attn": attn_t.model_dump(), "mlp": mlp_t.model_dump()},
            "attn_weights": _r4(attn),
            "mlp_weights": _r4(mlp),
            "scores": {key: chosen[key], "kl": chosen["kl"]},
            **summary,
        }
        ctx.events.log(
            f"refusal search: picked trial {chosen['number']} of {len(summary['trials'])}: {OBJECTIVE_LABELS[key]} "
            f"{chosen[key]}, val KL {chosen['kl']} (grid optimum: log-odds {grid_scores['refusal_log_odds']}, "
            f"KL {grid_scores['kl']})"
        )
        comparisons: dict[str, Edit] = {}
        if p.compare_grid and not chosen["grid"]:
            gi = {
                "comparison": {
                    "direction": s.primary,
                    "grid_optimum": True,
                    "strength": strength,
                    **grid_scores,
                }
            }
            comparisons["grid optimum"] = s.grid_edit(s.primary, layer, start, strength, gi)
        return FitResult(s.make_edit(s.primary, index, attn, mlp, info), comparisons)

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

    def evaluation_units(self, ctx: FitContext) -> int:
        p: RefusalParams = ctx.params  # type: ignore[assignment]
        return refusal_eval_units(ctx, p.harmful_test, p.harmless_test, p.eval_max_prompts)

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """A random unit direction with the same ops (modules, kind, strengths)."""
        g = torch.Generator().manual_seed(ctx.seed + 1009)
        r = torch.randn(ctx.anatomy.hidden_size, generator=g, dtype=torch.float64)
        r = (r / r.norm()).to(torch.float32)
        ops = [_with_direction(op, r) for op in edit.ops]
        return Edit(method="refusal", ops=ops, info={"control": "random unit direction, same ops"})


def _with_direction(op, r: torch.Tensor):
    """The same op with direction ``r`` (a null-space update is recomputed from nothing: dropped)."""
    if isinstance(op, WriterProjectOut):
        return WriterProjectOut(module=op.module, direction=r.clone(), strength=op.strength, norm=op.norm)
    return type(op)(module=op.module, direction=r.clone(), strength=op.strength)
