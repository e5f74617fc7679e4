"""What each tool of ``head_to_head.py`` had found after 15, 30 and 60 minutes: its trials and its front.

editkit's trials come from the run's Optuna journal (``refusal_search.journal``; validation first-token
refusal log-odds and KL, the grid optimum first), heretic's from ``heretic.json`` (refusals counted on the
validation harmful prompts by generation, first-token KL on the validation harmless ones). Times are from
the start of editkit's fit stage, when heretic was started.

    .venv/bin/python bench/heretic/fronts.py bench/out/h2h --out bench/results/refusal_h2h_fronts.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def front(points: list[tuple[float, float, dict]]) -> list[dict]:
    """The trials no other trial beats on both objectives (both minimised), by the first objective."""
    out, lowest = [], float("inf")
    for _a, b, t in sorted(points, key=lambda p: (p[0], p[1])):
        if b < lowest:
            lowest = b
            out.append(t)
    return out


def editkit_trials(run_dir: Path, t_fit: float) -> list[dict]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run_dir / "refusal_search.journal")))
    study = optuna.load_study(study_name="refusal", storage=storage)
    rows = []
    for t in study.trials:
        if t.datetime_complete is None:
            continue
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "grid": bool(t.user_attrs.get("grid")),
                "refusal_log_odds": t.values[0] if t.values else None,
                "kl": t.values[1] if t.values else t.user_attrs.get("kl"),
                "seconds": round(t.datetime_complete.timestamp() - t_fit, 1),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--at", type=float, nargs="+", default=[15, 30, 60], help="minutes")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    d = Path(a.out_dir)
    run = json.loads((d / "h2h_run.json").read_text())
    ek = editkit_trials(d / "editkit", run["t_fit_unix"])
    if (d / "heretic.json").exists():
        he = json.loads((d / "heretic.json").read_text())
    else:  # no trial finished before Ctrl+C: heretic exits without its menu (see heretic-driver.log)
        he = {"trials": [], "base_refusals": None, "note": "no heretic trial finished within the budget"}
    grid = next((t for t in ek if t["grid"]), None)
    report = {
        "editkit_trials": ek,
        "heretic_trials": he["trials"],
        "heretic_base_refusals": he["base_refusals"],
        "heretic_note": he.get("note"),
    }
    for m in a.at:
        s = 60 * m
        e_done = [t for t in ek if t["seconds"] <= s and t["state"] == "complete"]
        h_done = [t for t in he["trials"] if t.get("seconds", 1e9) <= s]
        eligible = [t for t in e_done if grid and t["refusal_log_odds"] <= grid["refusal_log_odds"]]
        report[f"{m:g} min"] = {
            "editkit": {
                "trials": len([t for t in ek if t["seconds"] <= s]),
                "front": front([(t["refusal_log_odds"], t["kl"], t) for t in e_done]),
                "lowest_kl_at_grid_log_odds": min(eligible, key=lambda t: t["kl"], default=None),
            },
            "heretic": {
                "trials": len(h_done),
                "front": front([(t["refusals"], t["kl"], t) for t in h_done]),
            },
        }
        print(f"{m:g} min: editkit {len(e_done)} trials, heretic {len(h_done)} trials")
        for t in report[f"{m:g} min"]["editkit"]["front"]:
            print(f"  editkit #{t['number']}: log-odds {t['refusal_log_odds']}, KL {t['kl']}")
        for t in report[f"{m:g} min"]["heretic"]["front"]:
            print(f"  heretic #{t['trial']}: refusals {t['refusals']}/{t['n']}, KL {t['kl']}")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
