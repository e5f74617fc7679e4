"""editkit's refusal search and heretic 1.4.0 side by side: the same model folder, the same prompts, the same
wall clock, one CPU core each, at the same time.

- editkit: ``editkit apply recipes/remove_refusal_qwen_search.yaml`` (fp32, a trial budget no run reaches) on
  core 0, one thread. Its held-out evaluation is cut to a few prompts here (``eval_max_prompts``): both
  exports are scored afterwards by the same scorer, ``editkit eval MODEL --refusal --base qwen-coder-1.5b``.
- heretic: ``run_heretic.py --budget-minutes`` on core 1, one thread, started when editkit's fit stage
  starts (editkit's evaluation of the base model before it is not part of the budget), choosing on editkit's
  validation prompts (64 + 64) with the directions from the same 128 + 128 train prompts.
- After ``--minutes`` both searches are stopped at the same moment: heretic by Ctrl+C (it keeps the trials
  finished), editkit by ``refusal_search.stop`` (the same). Each then picks by its rule (editkit: confirmation
  by generation, then the lowest validation KL; heretic: the lowest KL on its front with at most 5 % refusals)
  and exports; that time is reported, not budgeted.

    python bench/heretic/head_to_head.py --out bench/out/h2h --minutes 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODEL = Path.home() / ".cache/editkit/models/Qwen2.5-Coder-1.5B-Instruct"
HERETIC_PY = Path.home() / ".cache/editkit/heretic/venv/bin/python"


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/h2h")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--recipe", default=str(ROOT / "recipes/remove_refusal_qwen_search.yaml"))
    ap.add_argument("--heretic-max-tokens", type=int, default=64)
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env = {**os.environ, **one, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run_dir = out / "editkit"
    sets = ["model.dtype=float32", "method.trials=1000", "eval.refusal_judge=markers", "method.compare_grid=false",
            "method.eval_max_prompts=4"]  # fmt: skip
    cmd = ["taskset", "-c", "0", str(ROOT / ".venv/bin/editkit"), "apply", a.recipe, "--out", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    ek = subprocess.Popen(cmd, env=env, stdout=(out / "editkit.log").open("w"), stderr=subprocess.STDOUT)
    while not any(
        e.get("type") == "stage_start" and e.get("stage") == "fit" for e in _events(run_dir / "events.jsonl")
    ):
        if ek.poll() is not None:
            print(f"editkit ended before its fit stage (rc {ek.returncode}); see {out / 'editkit.log'}")
            return 1
        time.sleep(2)
    t_fit = time.time()
    hcmd = [str(HERETIC_PY), str(HERE / "run_heretic.py"), "--model", str(MODEL), "--out", str(out / "heretic"),
            "--trials", "200", "--startup", "60", "--n-train", "128", "--n-test", "64", "--prompts", "builtin",
            "--eval-split", "val", "--dtype", "float32", "--system", "qwen",
            "--max-tokens", str(a.heretic_max_tokens), "--batch", "16", "--budget-minutes", str(a.minutes),
            "--export", str(out / "heretic-model"), "--cpus", "1", "--threads", "1",
            "--json", str(out / "heretic.json")]  # fmt: skip
    he = subprocess.Popen(hcmd, stdout=(out / "heretic-driver.log").open("w"), stderr=subprocess.STDOUT)
    stop_at = t_fit + 60 * a.minutes
    while time.time() < stop_at and ek.poll() is None:
        time.sleep(5)
    (run_dir / "refusal_search.stop").touch()  # the same moment heretic's driver sends Ctrl+C
    t_stop = time.time()
    ek_rc, he_rc = ek.wait(), he.wait()
    summary = {
        "minutes": a.minutes,
        "editkit_cmd": cmd,
        "heretic_cmd": hcmd,
        "editkit_rc": ek_rc,
        "heretic_rc": he_rc,
        "editkit_before_fit_s": round(t_fit - t0, 1),
        "stopped_at_s_after_fit_start": round(t_stop - t_fit, 1),
        "editkit_done_s_after_fit_start": None,
        "t_fit_unix": t_fit,
    }
    ends = [e for e in _events(run_dir / "events.jsonl") if e.get("type") == "run_end"]
    if ends:
        summary["editkit_done_s_after_fit_start"] = round(ends[-1]["ts"] - t_fit, 1)
    (out / "h2h_run.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0 if ek_rc == 0 and he_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
