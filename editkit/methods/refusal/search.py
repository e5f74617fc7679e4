"""The refusal fit, step by step: prompts → directions (raw and SRA-cleaned) → layer/strength search →
comparison → info. One :class:`RefusalSearch` per fit holds what the steps share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from editkit.errors import EditkitError
from editkit.eval.refusal.chat import chat_first_token_logprobs, kl_rows, prompt_texts
from editkit.methods.base import FitContext
from editkit.methods.refusal.atoms import (
    atom_pairs_from_rows,
    cosines,
    harmless_principal_components,
    load_atom_pairs,
    ridge_clean,
)
from editkit.methods.refusal.direction import diff_of_means, direction_at, project_off, residual_activations
from editkit.methods.refusal.edit import (
    edited_layers,
    kernel_edit,
    norm_kind,
    project_edit,
    uniform_weights,
)
from editkit.methods.refusal.nullspace import principal_subspace, writer_inputs
from editkit.methods.refusal.params import RefusalParams
from editkit.model.sizing import model_eval_batch_size
from editkit.model.targets import target_module, weight_out_in
from editkit.run.distributed import map_across_processes

Cand = tuple[int, int | None, float]  # (direction layer, first edited layer or None, strength)


def pick(cands: list, grid: dict, kl_limit: float):
    """The selection rule: lowest refusal log-odds among ``cands`` within the KL limit, else the lowest KL."""
    ok = [c for c in cands if grid[c]["kl"] <= kl_limit]
    if ok:
        return min(ok, key=lambda c: grid[c]["refusal_log_odds"])
    return min(cands, key=lambda c: grid[c]["kl"])


def _texts(ctx: FitContext, name: str, limit: int, skip: int = 0) -> list[str]:
    rows = list(ctx.data[name])
    return prompt_texts(rows[skip:], f"data.sets.{name}", limit)


def refusal_token_ids(tokenizer, words: list[str]) -> list[int]:
    ids = {tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words if w}
    return sorted(ids)


def refusal_log_odds(lp: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Per prompt log(p_R / (1 − p_R)) with p_R the first-token mass on refusal tokens."""
    lr = torch.logsumexp(lp[:, token_ids], dim=-1)
    return lr - torch.log1p(-lr.exp().clamp_max(1 - 1e-7))


@dataclass
class RefusalSearch:
    ctx: FitContext
    p: RefusalParams
    grid: dict[Cand, dict[str, float]] = field(default_factory=dict)
    done: int = 0
    total: int = 0

    # -- prompts and directions ---------------------------------------------------------------------
    def load_prompts(self) -> None:
        """Training prompts, and validation prompts: their own sets, else the rows after the training rows."""
        ctx, p = self.ctx, self.p
        self.harm, self.safe = _texts(ctx, p.harmful, p.n_train), _texts(ctx, p.harmless, p.n_train)
        if p.harmful_val in ctx.data and p.harmless_val in ctx.data:
            self.harm_val, self.safe_val = (
                _texts(ctx, p.harmful_val, p.n_val),
                _texts(ctx, p.harmless_val, p.n_val),
            )
        else:
            self.harm_val = _texts(ctx, p.harmful, p.n_val, skip=p.n_train)
            self.safe_val = _texts(ctx, p.harmless, p.n_val, skip=p.n_train)
        ctx.events.log(
            f"refusal: direction from {len(self.harm)} harmful / {len(self.safe)} harmless prompts"
        )

    @property
    def batch_size(self) -> int:
        """``batch_size``, or 16 on CPU / what fits on an accelerator (editkit.model.sizing)."""
        return self.p.batch_size or model_eval_batch_size(self.ctx.model)

    def _acts(self, prompts: list[str]) -> torch.Tensor:
        return residual_activations(
            self.ctx.model, self.ctx.tokenizer, prompts, self.p.positions, self.batch_size
        )

    def find_directions(self) -> None:
        """Raw difference-of-means directions per layer, and the concept atoms' directions for SRA."""
        p, an = self.p, self.ctx.anatomy
        acts_h, acts_s = self._acts(self.harm), self._acts(self.safe)
        self.raw = diff_of_means(acts_h, acts_s, p.project_off_harmless_mean, p.winsorize)  # [L, H]
        self.gap = (acts_h.mean(0) - acts_s.mean(0)).norm(dim=-1)  # separation per layer
        self.safe_mean = acts_s.mean(0)  # [L, H]: the harmless mean entering each layer
        self._dirs: dict[str, torch.Tensor] = {}
        self.nulls: dict[str, torch.Tensor] = {}
        self.atom_names: list[str] = []
        self.atom_dirs = torch.empty(an.n_layers, 0, an.hidden_size, dtype=torch.float64)
        if p.sra:
            pairs = [(n, *load_atom_pairs(n)) for n in p.atoms]
            pairs += [
                (n, *atom_pairs_from_rows(list(self.ctx.data[n]), f"data.sets.{n}")) for n in p.atom_sets
            ]
            dirs = []
            for n, pos, neg in pairs:
                dirs.append(diff_of_means(self._acts(pos), self._acts(neg)))
                self.atom_names.append(n)
            if p.pca_atoms:
                pcs = harmless_principal_components(acts_s, p.pca_atoms)  # [L, k, H]
                dirs.extend(pcs.unbind(dim=1))
                self.atom_names.extend(f"pc{i + 1}" for i in range(pcs.shape[1]))
            if dirs:
                self.atom_dirs = torch.stack(dirs, dim=1)  # [L, k, H]
        # the direction the layer search uses: SRA-cleaned, or raw for plain abliteration and for sra: auto
        # (where the layer comes from the raw direction and both are then compared at that layer)
        self.primary = "sra" if self.atom_names and p.sra is True else "plain"

    def direction(self, kind: str, layer: int) -> torch.Tensor:
        """``kind``'s unit direction at ``layer``. A layer where harmful and harmless prompts do not differ at
        all keeps its zero direction (nothing to clean or to remove there): the embeddings' output at the last
        prompt token, which a chat template makes the same token for every prompt."""
        if kind == "plain" or not self.atom_names or not self.raw[layer].any():
            return self.raw[layer]
        return ridge_clean(self.raw[layer], self.atom_dirs[layer], self.p.ridge_alpha)

    def directions(self, kind: str) -> torch.Tensor:
        """[L, H] float64: ``kind``'s unit direction at every layer (SRA cleaning per layer)."""
        if kind not in self._dirs:
            self._dirs[kind] = torch.stack([self.direction(kind, li) for li in range(self.raw.shape[0])])
        return self._dirs[kind]

    def direction_fn(self, kind: str, index: float | None):
        """li → the unit direction removed at layer li: the one at fractional ``index`` (None: each layer's
        own), projected off layer li's harmless mean with ``harmless_mean_per_layer``."""
        dirs = self.directions(kind)
        fixed = direction_at(dirs, index) if index is not None else None

        def at(li: int) -> torch.Tensor:
            r = dirs[li] if fixed is None else fixed
            return project_off(r, self.safe_mean[li]) if self.p.harmless_mean_per_layer else r

        return at

    @property
    def simple(self) -> bool:
        """Today's edit (ProjectOut / the column norm-preserving op, one direction): project_edit makes it."""
        p = self.p
        return not (p.harmless_mean_per_layer or p.null_space or norm_kind(p) == "row")

    def prepare_null_space(self) -> None:
        """With ``null_space``: each dense residual writer's harmless-input basis U (null_space_prompts harmless
        train prompts, every token)."""
        p, an, ctx = self.p, self.ctx.anatomy, self.ctx
        if not p.null_space:
            return
        names = [n for li in range(an.n_layers) for n in an.layer(li).residual_writers]
        dense = [
            n for n in names if isinstance(getattr(ctx.model.get_submodule(n), "weight", None), torch.Tensor)
        ]
        xs = writer_inputs(
            ctx.model, ctx.tokenizer, self.safe[: p.null_space_prompts], dense, self.batch_size
        )
        self.nulls = {n: principal_subspace(x, p.null_space) for n, x in xs.items()}
        kept = {n: u.shape[1] for n, u in self.nulls.items()}
        ctx.events.log(
            f"refusal: null space of {len(kept)} writers' harmless inputs ({xs[dense[0]].shape[0]} tokens, "
            f"energy {p.null_space}): kept subspace {min(kept.values())}..{max(kept.values())} dims"
        )

    def weight_of(self, name: str) -> torch.Tensor:
        return weight_out_in(target_module(self.ctx.model, name))

    def make_edit(
        self,
        kind: str,
        index: float | None,
        attn: list[float],
        mlp: list[float],
        info: dict | None = None,
        embed_strength: float = 1.0,
    ):
        """The kernel edit with this search's direction, norm and null-space options."""
        return kernel_edit(
            self.ctx.anatomy,
            self.direction_fn(kind, index),
            attn,
            mlp,
            self.p,
            info,
            nulls=self.nulls,
            weight_of=self.weight_of,
            embed_strength=embed_strength,
        )

    def grid_edit(self, kind: str, layer: int, start, strength: float, info: dict | None = None, r=None):
        """A grid candidate's edit: today's :func:`project_edit`, or the kernel edit with uniform weights
        when row norms, per-layer harmless means or the null space are asked for."""
        if self.simple:
            return project_edit(
                self.ctx.anatomy,
                self.direction(kind, layer) if r is None else r,
                self.p,
                info,
                start=start,
                strength=strength,
            )
        w = uniform_weights(self.ctx.anatomy, self.p, start, strength)
        return self.make_edit(kind, float(layer), w, w, info, embed_strength=strength)

    def evaluate_edit(self, e) -> dict[str, float]:
        """Validation log-odds (harmful) and KL (harmless) of edit ``e``: one forward per prompt set."""
        ctx = self.ctx
        with e.applied(ctx.model):
            lp_h = chat_first_token_logprobs(ctx.model, ctx.tokenizer, self.harm_val, self.batch_size)
            lp_s = chat_first_token_logprobs(ctx.model, ctx.tokenizer, self.safe_val, self.batch_size)
        return {
            "refusal_log_odds": round(float(refusal_log_odds(lp_h, self.ref_ids).mean()), 4),
            "kl": round(float(kl_rows(self.base_s, lp_s).mean()), 5),
        }

    # -- scoring --------------------------------------------------------------------------------------
    def prepare_scores(self) -> None:
        ctx, p = self.ctx, self.p
        model, tok = ctx.model, ctx.tokenizer
        self.ref_ids = refusal_token_ids(tok, p.refusal_tokens)
        base_h = chat_first_token_logprobs(model, tok, self.harm_val, self.batch_size)
        self.base_s = chat_first_token_logprobs(model, tok, self.safe_val, self.batch_size)
        self.base_score = float(refusal_log_odds(base_h, self.ref_ids).mean())

    def score(self, cand: Cand, r: torch.Tensor | None = None) -> dict[str, float]:
        """Validation log-odds and KL with ``cand``'s edit (r: the direction; default the search's at li)."""
        ctx, p = self.ctx, self.p
        li, st, s = cand  # split over processes
        if not self.simple:  # r given: the comparison's direction (the kernel edit takes it by kind)
            kind = self.primary if r is None else ("plain" if self.primary == "sra" else "sra")
            e = self.grid_edit(kind, li, st, s)
        else:
            e = project_edit(
                ctx.anatomy, self.direction(self.primary, li) if r is None else r, p, start=st, strength=s
            )
        with e.applied(ctx.model):
            lp_h = chat_first_token_logprobs(ctx.model, ctx.tokenizer, self.harm_val, self.batch_size)
            lp_s = chat_first_token_logprobs(ctx.model, ctx.tokenizer, self.safe_val, self.batch_size)
        self.done += 1
        ctx.events.progress("fit", min(self.done, self.total), self.total)
        return {
            "refusal_log_odds": round(float(refusal_log_odds(lp_h, self.ref_ids).mean()), 4),
            "kl": round(float(kl_rows(self.base_s, lp_s).mean()), 5),
        }

    def weaken(self, cand: Cand, kl_full: float, r: torch.Tensor | None = None) -> list:
        """Search s in (0, full) for the largest strength whose validation KL fits (``kl_full``: the KL
        at full strength): the first try assumes KL ∝ s², later ones interpolate log KL against log s
        inside the bracket."""
        p, found = self.p, []
        lo, kl_lo, hi, kl_hi = 0.0, 0.0, self.full, kl_full
        for _ in range(p.strength_steps):
            if lo > 0 and kl_lo > 0:
                k = math.log(kl_hi / kl_lo) / math.log(hi / lo)  # local exponent
                s = lo * (p.kl_limit / kl_lo) ** (1 / k) if k > 0 else (lo + hi) / 2
            else:
                s = hi * math.sqrt(p.kl_limit / kl_hi)
            s = round(min(max(s, lo + 0.1 * (hi - lo)), hi - 0.1 * (hi - lo)), 4)  # strictly inside
            c = (cand[0], cand[1], s)
            found.append((c, self.score(c, r)))
            kl = found[-1][1]["kl"]
            lo, kl_lo, hi, kl_hi = (s, kl, hi, kl_hi) if kl <= p.kl_limit else (lo, kl_lo, s, kl)
        return found

    # -- the search -----------------------------------------------------------------------------------
    def candidates(self) -> list[Cand]:
        p, an = self.p, self.ctx.anatomy
        hi = max(p.min_layer + 1, math.floor(p.max_layer_frac * an.n_layers))
        self.layers = [p.layer] if p.layer is not None else list(range(p.min_layer, hi))
        if p.edit_from == "auto":  # (direction layer, first edited layer) pairs
            # a start past every listed edit layer would edit nothing: not a candidate
            pairs = [
                (li, s)
                for li in self.layers
                for s in sorted({math.floor(f * li) for f in p.edit_from_fracs})
                if edited_layers(an, p, s)
            ]
            if not pairs:
                raise EditkitError(
                    f"method.edit_from_fracs: no start floor(f * layer) for f in {p.edit_from_fracs} leaves a "
                    f"layer of edit_layers {p.edit_layers} to edit; add 0.0 to edit_from_fracs"
                )
        else:
            pairs = [(li, None) for li in self.layers]
        self.auto = p.strength == "auto"
        self.full = 1.0 if self.auto else float(p.strength)
        return [(li, st, self.full) for li, st in pairs]

    def search(self, extra_units: int = 0) -> Cand:
        """Score every candidate; with strength: auto, weaken the promising ones over the KL limit.
        (``extra_units``: progress units of a search that follows, e.g. Optuna's trials.)"""
        p = self.p
        cands = self.candidates()
        self.total = len(cands) + (p.strength_layers * p.strength_steps if self.auto else 0) + extra_units
        self.grid = dict(zip(cands, map_across_processes(self.score, cands), strict=True))
        if self.auto:
            # the best-scoring candidates that cost too much at full strength are weakened until their KL
            # fits (a lower strength only raises the log-odds: candidates already within the limit stay,
            # and only those that may beat the best of them are worth weakening)
            grid, base = self.grid, self.base_score
            bar = min(
                (grid[c]["refusal_log_odds"] for c in cands if grid[c]["kl"] <= p.kl_limit), default=math.inf
            )

            def at_limit(c) -> float:  # predicted log-odds at the limit: the drop ∝ s, the KL ∝ s²
                return base - (base - grid[c]["refusal_log_odds"]) * math.sqrt(p.kl_limit / grid[c]["kl"])

            over = sorted(
                (c for c in cands if grid[c]["kl"] > p.kl_limit and at_limit(c) < bar), key=at_limit
            )
            for found in map_across_processes(
                lambda c: self.weaken(c, grid[c]["kl"]), over[: p.strength_layers]
            ):
                grid.update(found)
            self.done = self.total - extra_units
            self.ctx.events.progress("fit", self.done, self.total)
        chosen = pick(list(self.grid), self.grid, p.kl_limit)
        if self.grid[chosen]["kl"] > p.kl_limit:
            self.ctx.events.log(
                f"refusal: no candidate keeps harmless KL <= {p.kl_limit}; using layer {chosen[0]} "
                f"(lowest KL {self.grid[chosen]['kl']})",
                level="warning",
            )
        return chosen

    def layer_scores(self, layer: int) -> dict[int, dict[str, float]]:
        """Per direction layer: its scores at its best first edited layer by the same rule (the card's table
        and plot); for the chosen layer that is the chosen pair. Also emitted as a heatmap event."""
        grid, layers = self.grid, self.layers
        best = {li: pick([c for c in grid if c[0] == li], grid, self.p.kl_limit) for li in layers}
        scores = {li: dict(grid[c], strength=c[2]) if self.auto else grid[c] for li, c in best.items()}
        self.ctx.events.emit(
            "heatmap",
            name="refusal_layer_scores",
            values=[[scores[li]["refusal_log_odds"] for li in layers], [scores[li]["kl"] for li in layers]],
            xlabel="layer",
            xlabels=[str(li) for li in layers],
            ylabel="score",
            ylabels=["refusal log-odds", "harmless KL"],
            title="refusal: direction ablated per candidate layer",
        )
        if scores[layer]["refusal_log_odds"] > 0:
            self.ctx.events.log(
                f"refusal: the chosen layer {layer} leaves refusal tokens more likely than not on the "
                f"validation prompts (log-odds {scores[layer]['refusal_log_odds']}); refusal will likely "
                "remain — raise kl_limit, try sra: true, or set method.layer",
                level="warning",
            )
        return scores

    def compare(self, layer: int, start: int | None, strength: float) -> tuple[str, float, dict, dict | None]:
        """The other direction at the same layer, its strength found the same way (the card's comparison);
        with sra: auto the validation rule keeps whichever is better. Returns (kept direction, strength,
        its validation scores, the comparison or None)."""
        p, kept, chosen = self.p, self.primary, self.grid[(layer, start, strength)]
        if not (self.atom_names and (p.compare_plain or p.sra == "auto")):
            return kept, strength, chosen, None
        other = "plain" if kept == "sra" else "sra"
        r_other = self.direction(other, layer)
        c0 = (layer, start, self.full)
        ogrid = {c0: self.score(c0, r_other)}
        if self.auto and ogrid[c0]["kl"] > p.kl_limit:
            ogrid.update(self.weaken(c0, ogrid[c0]["kl"], r_other))
        oc = pick(list(ogrid), ogrid, p.kl_limit)
        theirs = {"direction": other, "strength": oc[2], **ogrid[oc]}
        mine = {"direction": kept, "strength": strength, **chosen}
        if p.sra == "auto" and pick([0, 1], {0: mine, 1: theirs}, p.kl_limit) == 1:
            return other, oc[2], ogrid[oc], mine
        return kept, strength, chosen, theirs

    # -- what the edit records ------------------------------------------------------------------------
    def info(self, layer: int, start: int | None, strength: float, kept: str, scores: dict) -> dict:
        p, an, r = self.p, self.ctx.anatomy, self.direction(kept, layer)
        info: dict = {
            "layer": layer,
            "direction_source": "hidden_states[layer] (residual stream entering the layer), last "
            f"{p.positions} prompt token(s), chat template",
            "sra": kept == "sra",
            "layer_search_direction": "sra" if self.primary == "sra" else "raw",
            "ridge_alpha": p.ridge_alpha if self.atom_names else None,
            "norm_preserving": p.norm_preserving,
            "harmless_mean_per_layer": p.harmless_mean_per_layer,
            "null_space": p.null_space,
            "n_train": [len(self.harm), len(self.safe)],
            "n_val": [len(self.harm_val), len(self.safe_val)],
            "base_refusal_log_odds": round(self.base_score, 4),
            "layer_scores": {str(k): v for k, v in scores.items()},
            "mean_gap_norm": [round(float(g), 4) for g in self.gap],
            "edited_layers": edited_layers(an, p, start),
            "strength": strength,
            "embeddings": p.embeddings,
        }
        full = self.full
        if p.edit_from == "auto":
            info["edit_from"] = start
            info["window_scores"] = {f"{li}:{st}": v for (li, st, s), v in self.grid.items() if s == full}
        if self.auto:
            info["strength_scores"] = {
                (f"{li}:{st}" if st is not None else str(li)) + f"@{s}": v
                for (li, st, s), v in self.grid.items()
                if s != full
            }
        if self.atom_names:
            names, dirs = self.atom_names, self.atom_dirs[layer]
            info["atoms"] = names
            info["atom_cosines_before"] = cosines(self.raw[layer], dirs, names)
            info["atom_cosines_after"] = cosines(r, dirs, names)
            info["cos_raw_cleaned"] = round(float(self.raw[layer] @ r), 4)
        return info
