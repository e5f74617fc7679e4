"""Summarise a `search: optuna` refusal run for bench/results: every trial, the pick and the grid optimum on
validation, and the held-out numbers of the base, the pick and the grid optimum (the comparison), with the
stage times from events.jsonl.

    .venv/bin/python bench/refusal_search_summary.py runs/remove-refusal-qwen-search \
        --command "<the apply command>" --out bench/results/refusal_kernels_qwen.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def stage_seconds(run: Path) -> dict[str, float]:
    """Wall seconds per stage (a resumed run: the stages of every process, summed)."""
    out: dict[str, float] = {}
    for line in (run / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "stage_end" and e.get("seconds") is not None:
            out[e["stage"]] = round(out.get(e["stage"], 0.0) + e["seconds"], 1)
    return out


def journal_info(run: Path) -> dict:
    """A run stopped before its fit ended: the trials from the journal and the pick by the same rule."""
    import optuna

    from editkit.methods.refusal.optuna_search import FINISHED, JOURNAL, STUDY, summarise

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run / JOURNAL)))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    grid = next(t for t in study.get_trials(states=FINISHED) if t.user_attrs.get("grid"))
    summary = summarise(study, None, dict(grid.params), grid.values[0])  # the fit's own table and rule
    chosen = next(t for t in summary["trials"] if t["number"] == summary["chosen_trial"])
    grid_row = next(t for t in summary["trials"] if t["grid"])
    return {
        **summary,
        "scores": {"refusal_log_odds": chosen["refusal_log_odds"], "kl": chosen["kl"]},
        "grid_optimum": {
            "refusal_log_odds": grid_row["refusal_log_odds"],
            "kl": grid_row["kl"],
            **grid_row["params"],
        },
        "note": "from the journal: the fit did not finish in this process",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--command", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    run = Path(a.run)
    m = json.loads((run / "metrics.json").read_text())
    info = (m.get("edit") or {}).get("info") or journal_info(run)
    comp = (m.get("comparisons") or {}).get("grid optimum") or {}
    keys = (
        "refusal_rate",
        "over_refusal_rate",
        "harmless_kl",
        "harmless_kl_answered",
        "perplexity",
        "drift_kl",
    )
    row = {
        "run": str(run),
        "command": a.command,
        "recipe_hash": m.get("recipe_hash"),
        "editkit_revision": m.get("editkit_revision"),
        "validation": {
            "n_val": info.get("n_val"),
            "picked": {"trial": info.get("chosen_trial"), **(info.get("scores") or {})},
            "grid_optimum": info.get("grid_optimum"),
            "refusal_target": info.get("refusal_target"),
            "pareto": info.get("pareto"),
            "stopped_after": info.get("stopped_after"),
        },
        "picked_kernel": {
            "direction_index": info.get("direction_index"),
            "kernel": info.get("kernel"),
            "attn_weights": info.get("attn_weights"),
            "mlp_weights": info.get("mlp_weights"),
        },
        "held_out": {
            "base": {k: (m.get("base") or {}).get(k) for k in keys},
            "picked": {k: (m.get("edited") or {}).get(k) for k in keys},
            "grid_optimum": {k: (comp.get("metrics") or {}).get(k) for k in keys},
        },
        "trials": info.get("trials"),
        "stage_seconds": stage_seconds(run),
        "fit_seconds": m.get("fit_seconds"),
        "export": {k: (m.get("export") or {}).get(k) for k in ("max_abs_logit_diff", "seconds")},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(row, indent=1))
    print(json.dumps({k: row[k] for k in ("validation", "held_out", "stage_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
