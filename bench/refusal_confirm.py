"""Confirmation by generation of a finished `search: optuna` refusal run, without running it again.

Re-opens the run (its recipe, base model, prompts), rebuilds the search's directions and validation baseline,
reads the trials from its journal, and runs the confirmation step of today's code
(``editkit.methods.refusal.optuna_search.confirm``: the grid optimum and the ``--confirm`` lowest-KL eligible
trials generate on the validation harmful prompts; the pick is the lowest KL among those refusing at least as
often as the grid optimum). Then the held-out numbers of the confirmed pick, measured as the run measured its
edit (the test prompts, greedy, keyword markers, the run's new-token count; first-token KL on harmless test
prompts against the base model), next to the run's own held-out numbers of its pick and of the grid optimum.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/refusal_confirm.py runs/remove-refusal-qwen-search \\
        --out bench/results/refusal_confirm_qwen.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    import optuna
    import torch

    from editkit.eval.refusal.chat import chat_first_token_logprobs, kl_rows, prompt_texts, refusal_rate
    from editkit.methods.refusal.optuna_search import (
        JOURNAL,
        STUDY,
        confirm,
        confirmed_pick,
        grid_params,
        summarise,
        trial_edit,
    )
    from editkit.methods.refusal.search import RefusalSearch
    from editkit.run.context import open_run

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--confirm", type=int, default=3)
    ap.add_argument("--max-new", type=int, default=32, help="confirm_max_new_tokens")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run = Path(args.run)
    t0 = time.perf_counter()
    torch.set_grad_enabled(False)
    metrics = json.loads((run / "metrics.json").read_text())
    info = metrics["edit"]["info"]
    _recipe, _data, _loaded, anatomy, _edit, ctx = open_run(run)
    p = ctx.params.model_copy(update={"confirm": args.confirm, "confirm_max_new_tokens": args.max_new})
    ctx.params = p
    s = RefusalSearch(ctx, p)
    s.load_prompts()
    s.find_directions()
    s.prepare_null_space()
    s.prepare_scores()
    t_prep = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:  # the run's journal is only read
        shutil.copy(run / JOURNAL, Path(tmp) / JOURNAL)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(Path(tmp) / JOURNAL))
        )
        study = optuna.load_study(study_name=STUDY, storage=storage)
        g = info["grid_optimum"]
        grid = grid_params(g["layer"], g["edit_from"], g["strength"], anatomy.n_layers)
        summary = summarise(study, p, grid, float(info["refusal_target"]))
        params_of = {t.number: dict(t.params) for t in study.trials}
    t1 = time.perf_counter()
    confirmed = confirm(s, summary, params_of)
    chosen = confirmed_pick(confirmed)
    t_confirm = time.perf_counter() - t1
    print("confirmed:", confirmed, "pick:", chosen, flush=True)

    res: dict = {
        "run": run.name,
        "validation_prompts": {"harmful": len(s.harm_val), "harmless": len(s.safe_val)},
        "confirm": args.confirm,
        "confirm_max_new_tokens": args.max_new,
        "log_odds_pick": summary["chosen_trial"],
        "confirmed": confirmed,
        "confirmed_pick": chosen,
        "seconds": {"prepare": round(t_prep, 1), "confirm": round(t_confirm, 1)},
        "run_heldout": {
            "log_odds_pick": {
                k: metrics["edited"].get(k) for k in ("refusal_rate", "over_refusal_rate", "harmless_kl")
            },
            "grid_optimum": {
                k: (metrics.get("comparisons", {}).get("grid optimum", {}).get("metrics") or {}).get(k)
                for k in ("refusal_rate", "over_refusal_rate", "harmless_kl")
            },
            "base": {k: metrics["base"].get(k) for k in ("refusal_rate", "over_refusal_rate")},
        },
    }
    if chosen not in (0, summary["chosen_trial"]):  # a trial whose held-out numbers the run does not have
        t2 = time.perf_counter()
        n, max_new = p.eval_max_prompts, p.eval_max_new_tokens
        harm = prompt_texts(list(ctx.data[p.harmful_test]), "harmful_test", n)
        safe = prompt_texts(list(ctx.data[p.harmless_test]), "harmless_test", n)
        base_lp = chat_first_token_logprobs(ctx.model, ctx.tokenizer, safe)
        with trial_edit(s, params_of[chosen]).applied(ctx.model):
            rate, outs = refusal_rate(ctx.model, ctx.tokenizer, harm, max_new)
            over, _ = refusal_rate(ctx.model, ctx.tokenizer, safe, max_new)
            lp = chat_first_token_logprobs(ctx.model, ctx.tokenizer, safe)
        res["confirmed_pick_heldout"] = {
            "refusal_rate": rate,
            "over_refusal_rate": over,
            "harmless_kl": float(kl_rows(base_lp, lp).mean()),
            "prompts": len(harm),
            "new_tokens": max_new,
            "seconds": round(time.perf_counter() - t2, 1),
            "responses": outs[:5],
        }
    res["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "confirmed"}, indent=1))


if __name__ == "__main__":
    main()
