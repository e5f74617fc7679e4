"""``search: optuna``: a seeded multi-objective TPE over refusal kernels, after the grid.

One trial = one kernel: the direction at a fractional layer index (or each layer's own, with
``search_space.per_layer``) and a tent profile (peak, position, floor, half-width) for attention and one for MLP
writers. Two objectives, both minimised, on the validation prompts: the refusal objective on harmful prompts
(``search_objective``: the mean first-token refusal log-odds, one forward; or ``generated``, the share refused in
``objective_max_new_tokens`` greedy tokens by keyword markers, as heretic counts) and the mean first-token KL on
harmless prompts (one forward).

- The first trial is the grid optimum written as a kernel (a flat tent from its first edited layer on:
  ``floor`` 1, peak = its strength) — ``enqueue_trial``.
- The rule: the lowest validation KL among trials whose log-odds is at most ``refusal_target`` (default: the
  grid optimum's, so the pick is never worse than the grid on validation on both counts).
- Pruning: the harmless forward runs first; a trial whose KL is already above the best eligible trial's
  cannot be picked by the rule, so its harmful forward is skipped (state PRUNED, its KL kept).
- Confirmation (``confirm``, default 3): first-token log-odds can promise a refusal that the generated text
  does not keep (on ``qwen-coder-1.5b`` the pick of the log-odds rule scored −4.07 against the grid's −3.36
  and refused 33 % of held-out prompts where the grid optimum refused 7 %). So the ``confirm`` lowest-KL
  eligible trials and the grid optimum generate on the validation harmful prompts (greedy, keyword markers);
  the pick is the lowest validation KL among those that refuse no more often than the grid optimum
  (:func:`confirmed_pick`; the grid optimum always qualifies).
- ``search_minutes``: a wall-clock budget; no trial starts after it (``touch <run>/refusal_search.stop`` does the
  same by hand). The trials run then depend on the machine's speed, so a budgeted search is not reproducible.
- Resumable: the study lives in ``<run>/refusal_search.journal`` (Optuna's JournalStorage, file backend);
  the sampler is re-seeded for each trial from the number of trials finished (its history is the finished
  trials), and a trial that was running when the run died is marked failed and asked again, so a resumed
  search runs the same trials as one that never stopped (only the failed one's number is skipped). Each
  trial is one progress unit of the fit stage.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from editkit.eval.refusal.chat import chat_first_token_logprobs, generate, is_refusal, kl_rows
from editkit.methods.refusal.params import OBJECTIVE_KEYS, OBJECTIVE_LABELS
from editkit.methods.refusal.profile import TentProfile, layer_weights
from editkit.methods.refusal.search import refusal_log_odds

JOURNAL = "refusal_search.journal"
#: ``touch <run>/refusal_search.stop``: start no further trial; the pick is made from the trials finished
STOP = "refusal_search.stop"
STUDY = "refusal"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def objective_key(p) -> str:
    """The key of a trial's refusal objective in the search summary (``search_objective``)."""
    return OBJECTIVE_KEYS[p.search_objective]


def space_bounds(p, n_layers: int, grid: dict) -> dict[str, tuple[float, float]]:
    """Absolute ranges (layers, weights) of every searched parameter, widened to hold the grid optimum."""
    sp, top = p.search_space, n_layers - 1
    b = {
        "direction_index": (sp.direction[0] * top, sp.direction[1] * top),
        "attn_peak": sp.attn_peak,
        "mlp_peak": sp.mlp_peak,
        "attn_position": (sp.position[0] * top, sp.position[1] * top),
        "mlp_position": (sp.position[0] * top, sp.position[1] * top),
        "attn_floor": sp.floor,
        "mlp_floor": sp.floor,
        "attn_width": (max(1.0, sp.width[0] * top), max(1.0, sp.width[1] * top)),
        "mlp_width": (max(1.0, sp.width[0] * top), max(1.0, sp.width[1] * top)),
    }
    return {k: (min(lo, grid.get(k, lo)), max(hi, grid.get(k, hi))) for k, (lo, hi) in b.items()}


def grid_params(layer: int, start: int | None, strength: float, n_layers: int) -> dict[str, float]:
    """The grid optimum (direction ``layer``, writers from ``start`` on at ``strength``) as a kernel: a flat
    tent peaked at the last layer reaching back to ``start``."""
    width = float(max(1, n_layers - 1 - (start or 0)))
    g = {"direction_index": float(layer)}
    for w in ("attn", "mlp"):
        g |= {f"{w}_peak": float(strength), f"{w}_position": float(n_layers - 1), f"{w}_floor": 1.0}
        g[f"{w}_width"] = width
    return g


def kernel_of(params: dict) -> tuple[float | None, TentProfile, TentProfile]:
    """(direction index or None for per layer, attention tent, MLP tent) of a trial's parameters."""
    index = None if params.get("direction_scope") == "per_layer" else float(params["direction_index"])
    tents = [
        TentProfile(
            peak=params[f"{w}_peak"],
            position=params[f"{w}_position"],
            floor=params[f"{w}_peak"] * params[f"{w}_floor"],
            width=params[f"{w}_width"],
        )
        for w in ("attn", "mlp")
    ]
    return index, tents[0], tents[1]


def trial_edit(s, params: dict):
    """The edit of a trial's parameters: the search's direction kind at the trial's index, its two tents."""
    n = s.ctx.anatomy.n_layers
    index, attn, mlp = kernel_of(params)
    return s.make_edit(s.primary, index, layer_weights(attn, n), layer_weights(mlp, n))


def _sampler(p, seed: int, finished: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed + finished,
            multivariate=True,
            n_startup_trials=p.startup_trials,
            constant_liar=False,
        )


def open_study(path: Path, resume: bool) -> optuna.Study:
    """The journal-backed study: loaded with ``resume`` (a trial left running is marked failed), else afresh."""
    if not resume and path.exists():
        path.unlink()
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(
        study_name=STUDY, storage=storage, directions=["minimize", "minimize"], load_if_exists=True
    )
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # killed mid-trial: failed; the next trial is sampled from the same seed and history again (the grid
        # optimum's, if it was that one, is queued again by run_search)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return study


def run_search(s, grid_cand: tuple) -> tuple[dict, dict]:
    """Run (or continue) the study. Returns (what the fit records: every trial, the front, the pick; the
    picked trial's exact parameters)."""
    ctx, p, an = s.ctx, s.p, s.ctx.anatomy
    n = an.n_layers
    optuna.logging.set_verbosity(logging.WARNING)
    grid = grid_params(grid_cand[0], grid_cand[1], grid_cand[2], n)
    bounds = space_bounds(p, n, grid)
    study = open_study(Path(ctx.run_dir) / JOURNAL, ctx.resume)
    if not study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.WAITING)):
        study.enqueue_trial(grid, user_attrs={"grid": True})

    def target() -> float:
        if p.refusal_target != "grid":
            return float(p.refusal_target)
        first = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("grid")
        ]
        return first[0].values[0] if first else math.inf

    def best_kl() -> float:
        tgt = target()
        ok = [
            t.values[1]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values[0] <= tgt
        ]
        return min(ok, default=math.inf)

    def objective(trial: optuna.Trial):
        params = {}
        if p.search_space.per_layer:
            params["direction_scope"] = trial.suggest_categorical("direction_scope", ["global", "per_layer"])
        for k, (lo, hi) in bounds.items():
            params[k] = trial.suggest_float(k, lo, hi)
        e = trial_edit(s, params)
        model, tok = ctx.model, ctx.tokenizer
        with e.applied(model):
            lp_s = chat_first_token_logprobs(model, tok, s.safe_val, s.batch_size)
            kl = round(float(kl_rows(s.base_s, lp_s).mean()), 5)
            trial.set_user_attr("kl", kl)
            if not trial.user_attrs.get("grid") and kl > best_kl():
                raise optuna.TrialPruned()
            return refusal_objective(s, model, tok), kl

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=FINISHED))

    s.done += min(finished(), p.trials)  # a resumed study's finished trials are progress already made
    stop = Path(ctx.run_dir) / STOP
    deadline = None if p.search_minutes is None else time.monotonic() + 60.0 * p.search_minutes

    def halted() -> bool:  # a stop file or the budget; never before the grid trial is scored
        over = deadline is not None and time.monotonic() >= deadline
        return (stop.exists() or over) and finished() >= 1

    while finished() < p.trials and not halted():
        k = finished()
        study.sampler = _sampler(p, ctx.seed, k)
        study.optimize(objective, n_trials=1, catch=())
        s.done += 1
        ctx.events.progress("fit", min(s.done, s.total), s.total)
        _log_trial(ctx, study.trials[-1], objective_key(p))
    if finished() < p.trials:
        s.total -= p.trials - finished()  # the trials that will not run are no longer to do
        ctx.events.progress("fit", min(s.done, s.total), s.total)
        why = STOP if stop.exists() else f"search_minutes ({p.search_minutes:g})"
        ctx.events.log(f"refusal search: stopped by {why} after {finished()} of {p.trials} trials")
    summary = summarise(study, p, grid, target())
    summary["stopped_after"] = finished() if finished() < p.trials else None
    params_of = {t.number: dict(t.params) for t in study.trials}
    if p.confirm > 0:
        summary["confirmed"] = confirm(s, summary, params_of)
        summary["chosen_trial"] = confirmed_pick(summary["confirmed"], objective_key(p))
    return summary, params_of[summary["chosen_trial"]]


def refusal_objective(s, model, tok) -> float:
    """A trial's refusal objective on the validation harmful prompts, the edit applied: the mean first-token
    refusal log-odds, or the share refused in ``objective_max_new_tokens`` greedy tokens (markers)."""
    if s.p.search_objective == "generated":
        texts = generate(model, tok, s.harm_val, s.p.objective_max_new_tokens, max(s.batch_size, 32))
        return round(sum(map(is_refusal, texts)) / len(texts), 4)
    lp_h = chat_first_token_logprobs(model, tok, s.harm_val, s.batch_size)
    return round(float(refusal_log_odds(lp_h, s.ref_ids).mean()), 4)


def _log_trial(ctx, last, key: str) -> None:
    values = (
        f"{OBJECTIVE_LABELS[key]} {last.values[0]}, KL {last.values[1]}"
        if last.values
        else f"KL {last.user_attrs.get('kl')}"
    )
    ctx.events.log(f"refusal search: trial {last.number} {last.state.name.lower()}: {values}")


def confirmation_candidates(summary: dict, n: int) -> list[dict]:
    """The grid optimum and the ``n`` lowest-KL eligible trials (refusal objective at or below the target)."""
    key = summary.get("objective_key", "refusal_log_odds")
    complete = [t for t in summary["trials"] if t["state"] == "complete"]
    grid = [t for t in complete if t["grid"]]
    ok = [t for t in complete if not t["grid"] and t[key] <= summary["refusal_target"]]
    ok.sort(key=lambda t: (t["kl"], t[key], t["number"]))
    return grid + ok[:n]


def confirmed_pick(confirmed: list[dict], key: str = "refusal_log_odds") -> int:
    """The rule after confirmation: the lowest validation KL among the confirmed trials whose generated
    refusal rate is at most the grid optimum's (ties: the lower log-odds, then the earlier trial). Without a
    grid trial among them (it did not complete), the lowest refusal rate, then the lowest KL."""
    grid = [c for c in confirmed if c["grid"]]
    if grid:
        ok = [c for c in confirmed if c["refusal_rate"] <= grid[0]["refusal_rate"]]
        return min(ok, key=lambda c: (c["kl"], c[key], c["number"]))["number"]
    return min(confirmed, key=lambda c: (c["refusal_rate"], c["kl"], c["number"]))["number"]


def confirm(s, summary: dict, params_of: dict[int, dict]) -> list[dict]:
    """Greedy generations on the validation harmful prompts for each confirmation candidate: its refusal rate
    by keyword markers (one progress unit per candidate)."""
    ctx, p = s.ctx, s.p
    cands, key = confirmation_candidates(summary, p.confirm), objective_key(p)
    s.total += len(cands)
    out = []
    for t in cands:
        with trial_edit(s, params_of[t["number"]]).applied(ctx.model):
            texts = generate(
                ctx.model, ctx.tokenizer, s.harm_val, p.confirm_max_new_tokens, max(s.batch_size, 32)
            )
        rate = sum(map(is_refusal, texts)) / len(texts)
        out.append({k: t[k] for k in ("number", "grid", "kl", key)} | {"refusal_rate": rate})
        s.done += 1
        ctx.events.progress("fit", min(s.done, s.total), s.total)
        ctx.events.log(
            f"refusal search: trial {t['number']} confirmed: {rate:.1%} of {len(texts)} validation harmful "
            f"prompts refused in {p.confirm_max_new_tokens} generated tokens (KL {t['kl']})"
        )
    return out


def summarise(study: optuna.Study, p, grid: dict, target: float) -> dict:
    """Every finished trial, the Pareto front, and the pick by the rule (lowest KL with the refusal objective
    ≤ target)."""
    key = objective_key(p)
    done = study.get_trials(deepcopy=False, states=FINISHED)
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "grid": bool(t.user_attrs.get("grid")),
            key: t.values[0] if t.values else None,
            "kl": t.values[1] if t.values else t.user_attrs.get("kl"),
            "params": {k: round(v, 4) if isinstance(v, float) else v for k, v in t.params.items()},
        }
        for t in done
    ]
    complete = [t for t in trials if t["state"] == "complete"]
    ok = [t for t in complete if t[key] <= target]
    chosen = (
        min(ok, key=lambda t: (t["kl"], t[key], t["number"]))
        if ok
        else min(complete, key=lambda t: (t[key], t["kl"], t["number"]))
    )
    front = sorted(t.number for t in study.best_trials)
    return {
        "trials": trials,
        "pareto": front,
        "chosen_trial": chosen["number"],
        "objective_key": key,
        "refusal_target": target,
        "grid_params": grid,
        "eligible": bool(ok),
    }
