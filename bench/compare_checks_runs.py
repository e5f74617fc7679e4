"""Compare two runs of `editkit apply recipes/remove_moral.yaml` (shortened, see BENCHMARKS.md "The paraphrase
families as a removal check"): one made before robustness became a check (its `robustness` section) and
one after (`checks.robustness`), number for number.

    python bench/compare_checks_runs.py OLD_RUN NEW_RUN
"""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_runs import flat  # noqa: E402  (skips timing and cache bookkeeping)

old = json.load(open(Path(sys.argv[1]) / "metrics.json"))
new = json.load(open(Path(sys.argv[2]) / "metrics.json"))


def nums(d):
    return {k: v for k, v in flat(d) if isinstance(v, (int, float)) and not isinstance(v, bool)}


skip = ("seconds", "total_seconds", "fit_seconds")
pairs = [("base", "base"), ("edited", "edited"), ("control", "control"), ("edit_norms", "edit_norms")]
for name in ("separation", "probe", "relearn", "specificity"):
    pairs.append((f"checks/{name}/phases", f"checks/{name}/phases"))
pairs.append(("robustness", "checks/robustness/judge/reports"))


def get(d, path):
    for k in path.split("/"):
        d = d[k]
    return d


total = same = 0
worst = 0.0
for a, b in pairs:
    na, nb = nums(get(old, a)), nums(get(new, b))
    if a == "robustness":  # the old stage stored the verdict inside the target's report
        na = {k: v for k, v in na.items() if not k.startswith("/target/verdict")}
    assert set(na) == set(nb), (a, sorted(set(na) ^ set(nb))[:10])
    for k in na:
        if any(s in k for s in skip):
            continue
        total += 1
        if na[k] == nb[k] or (isinstance(na[k], float) and math.isnan(na[k]) and math.isnan(nb[k])):
            same += 1
        else:
            worst = max(worst, abs(na[k] - nb[k]))
            print("differs", a, k, na[k], nb[k])
print(f"{same} of {total} numbers identical; largest difference {worst}")
ov = old["robustness"]["target"]["verdict"]
nv = new["checks"]["robustness"]["judge"]["verdict"]
print("removal verdict equal:", ov == nv, ov["status"])
print("headline verdict equal:", old["checks"]["verdict"]["status"], new["checks"]["verdict"]["status"])
