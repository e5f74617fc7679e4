"""Compare two runs' metrics.json value for value: every number and every text (greedy generations, labels) of
every section both runs have, leaving out what is timing or cache bookkeeping. For a refactor that must
not change what a run measures (BENCHMARKS.md, "Greedy generations as a suite part").

    python bench/compare_runs.py OLD_RUN NEW_RUN
"""

import json
import sys
from pathlib import Path

SKIP_KEYS = {
    "seconds",
    "total_seconds",
    "fit_seconds",
    "base_phase_cache",
    "editkit_revision",
    "created",
    "key",
}


def flat(x, p=""):
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in SKIP_KEYS:
                yield from flat(v, f"{p}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from flat(v, f"{p}[{i}]")
    else:
        yield p, x


def main() -> int:
    old, new = (json.loads((Path(a) / "metrics.json").read_text()) for a in sys.argv[1:3])
    a, b = dict(flat(old)), dict(flat(new))
    shared = sorted(set(a) & set(b))
    nums = [k for k in shared if isinstance(a[k], (int, float)) and not isinstance(a[k], bool)]
    texts = [k for k in shared if isinstance(a[k], str)]
    diff = [k for k in shared if a[k] != b[k]]
    print(
        f"{len(nums)} numbers, {len(texts)} texts in both; {len(shared) - len(diff)} of {len(shared)} identical"
    )
    for k in diff[:40]:
        print(f"  differs: {k}: {a[k]!r} -> {b[k]!r}")
    for k in sorted(set(a) ^ set(b))[:40]:
        print(f"  only in {'old' if k in a else 'new'}: {k}")
    return 0 if not diff else 1


if __name__ == "__main__":
    raise SystemExit(main())
