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

from editkit.edit import Edit
from editkit.errors import EditkitError
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.refusal.edit import edited_layers, project_edit
from editkit.methods.refusal.params import RefusalParams
from editkit.methods.refusal.report import RefusalReport
from editkit.methods.refusal.search import RefusalSearch
from editkit.refusal.metrics import phase_refusal_metrics, refusal_eval_units

# ------------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------------


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
        s.prepare_scores()
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
            comparisons[name] = project_edit(
                ctx.anatomy,
                s.direction(comparison["direction"], layer),
                p,
                {"comparison": comparison},
                start=start,
                strength=comparison["strength"],
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
        edit = project_edit(ctx.anatomy, s.direction(kept, layer), p, info, start=start, strength=strength)
        return FitResult(edit, comparisons)

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
        ops = [type(op)(module=op.module, direction=r.clone(), strength=op.strength) for op in edit.ops]
        return Edit(method="refusal", ops=ops, info={"control": "random unit direction, same ops"})
