"""lm-evaluation-harness as a general-ability evaluator (``eval.lm_eval``; ``pip install 'editkit[lm-eval]'``).

``lm_eval.simple_evaluate`` runs on the in-memory model as it is in each phase (base, edited with the edit
applied, the random control), through lm-eval's own HF wrapper (``HFLM(pretrained=<model instance>)``), so
what lm-eval scores is exactly what editkit evaluates and exports. Each task's metrics go into
``metrics.json`` under ``lm_eval`` (per metric: base → edited → control) and into a card table.

Tasks are lm-eval's own names (``hellaswag``, ``arc_easy``, ``mmlu``, ``wmdp_bio``: their data comes from the
Hub), a task YAML file, a name from a folder in ``include_path``, or a task that ships with editkit and runs
offline: ``editkit_capabilities`` (:data:`TASKS_DIR`), the built-in capability test items as two-choice
questions. A relative ``data_files`` path in editkit's own task YAMLs is read relative to the YAML file.

Everything is checked by :func:`check_lm_eval` before the run directory exists: lm-eval installed, every task
known (one line with a suggestion otherwise) and its data loadable.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from editkit.data.capabilities import BUILTIN_CAPABILITIES, builtin_path
from editkit.errors import EditkitError

TASKS_DIR = Path(__file__).resolve().parents[1] / "data" / "lm_eval"
INSTALL_HINT = "pip install 'editkit[lm-eval]'"
FIELD = "eval.lm_eval"


def _require() -> None:
    try:
        import lm_eval  # noqa: F401 - optional extra: lm-evaluation-harness is not a hard dependency
    except ImportError:
        raise EditkitError(f"{FIELD}: needs lm-evaluation-harness; install it: {INSTALL_HINT}") from None
    # lm-eval logs every request batch and a warning about model instances; editkit reports progress itself
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)


def own_tasks() -> dict[str, Path]:
    """The task YAMLs that ship with editkit: task name → file."""
    out = {}
    for f in sorted(TASKS_DIR.glob("*.yaml")):
        cfg = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        if isinstance(cfg, dict) and cfg.get("task"):
            out[str(cfg["task"])] = f
    return out


def own_task_config(name: str) -> dict[str, Any]:
    """An editkit task as an lm-eval config dict, its relative ``data_files`` made absolute."""
    path = own_tasks()[name]
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        cfg["dataset_kwargs"]["data_files"] = {k: str(path.parent / v) for k, v in files.items()}
    elif isinstance(files, str):
        cfg["dataset_kwargs"]["data_files"] = str(path.parent / files)
    return cfg


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: tuple[str, ...], defaults: bool):
    from lm_eval.tasks import TaskManager  # noqa: I001 - optional extra

    return TaskManager(include_path=list(include_path) or None, include_defaults=defaults)


def _specs(spec) -> tuple[list[Any], Any]:
    """lm-eval task specs for ``spec.tasks`` (editkit's own as config dicts) and the TaskManager that knows
    the others: lm-eval's ~15,000 built-in names are indexed only when a task is not found otherwise."""
    own = own_tasks()
    include = tuple(str(Path(p).expanduser()) for p in spec.include_path)
    others = [t for t in spec.tasks if t not in own and not t.endswith((".yaml", ".yml"))]
    tm = _task_manager(include, False)
    if any(t not in tm.all_tasks for t in others):
        tm = _task_manager(include, True)
    known = set(tm.all_tasks)
    for i, t in enumerate(spec.tasks):
        if t in own or t in known:
            continue
        if t.endswith((".yaml", ".yml")):
            if not Path(t).expanduser().is_file():
                raise EditkitError(f"{FIELD}.tasks[{i}]: task file {t} does not exist")
            continue
        close = difflib.get_close_matches(t, sorted(known | set(own)), n=1, cutoff=0.75)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise EditkitError(f"{FIELD}.tasks[{i}]: unknown lm-eval task '{t}'{hint}")
    specs = [
        own_task_config(t)
        if t in own
        else (str(Path(t).expanduser()) if t.endswith((".yaml", ".yml")) else t)
        for t in spec.tasks
    ]
    return specs, tm


def check_lm_eval(spec) -> None:
    """Before the run: lm-eval is installed, every task is known and its data loads (a Hub task offline, or a
    missing data file, fails here in one line rather than after the fit)."""
    if spec is None:
        return
    _require()
    specs, tm = _specs(spec)
    for name, s in zip(spec.tasks, specs, strict=True):
        try:
            tm.load([s])
        except Exception as e:  # noqa: BLE001 - lm-eval and datasets raise anything; one line for the user
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EditkitError(f"{FIELD}: task '{name}' could not be loaded: {first[:300]}") from None


def _counting_lm(model, tokenizer, batch_size: int, on_units: Callable[[int], None] | None, grow):
    """lm-eval's HF wrapper around the in-memory model, counting requests as they are answered."""
    from lm_eval.models.huggingface import HFLM  # noqa: I001 - optional extra

    chunk = max(64, 4 * batch_size)

    class Counting(HFLM):
        def _counted(self, method, requests, **kw):
            if grow is not None:
                grow(len(requests))
            out = []
            for i in range(0, len(requests), chunk):
                part = requests[i : i + chunk]
                out += method(part, disable_tqdm=True, **kw)
                if on_units is not None:
                    on_units(len(part))
            return out

        def loglikelihood(self, requests, disable_tqdm=False):
            return self._counted(super().loglikelihood, requests)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            return self._counted(super().loglikelihood_rolling, requests)

        def generate_until(self, requests, disable_tqdm=False):
            return self._counted(super().generate_until, requests)

    return Counting(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def run_lm_eval(
    model,
    tokenizer,
    spec,
    *,
    seed: int = 0,
    batch_size: int = 16,
    on_units: Callable[[int], None] | None = None,
    grow: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on ``model`` as it is now. Returns {task: {metrics: {name: value},
    stderr: {name: value}, n: samples, num_fewshot, version, higher_is_better}}.

    ``grow(n)`` is told how many requests a batch of work has before it starts and ``on_units(k)`` counts
    the answered ones (the stage's progress)."""
    import lm_eval  # noqa: I001 - optional extra

    _require()
    specs, tm = _specs(spec)
    was_training = model.training
    model.eval()
    try:
        res = lm_eval.simple_evaluate(
            model=_counting_lm(model, tokenizer, batch_size, on_units, grow),
            tasks=specs,
            num_fewshot=spec.num_fewshot,
            limit=spec.limit,
            task_manager=tm,
            log_samples=False,
            bootstrap_iters=1000,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    finally:
        model.train(was_training)
    return _results(res)


def _results(res: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, row in (res.get("results") or {}).items():
        metrics, stderr = {}, {}
        for key, v in row.items():
            if "," not in key or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue  # "alias", "sample_len": not metrics (lm-eval names those "metric,filter")
            metric, _, filt = key.partition(",")
            name = metric if filt in ("", "none") else f"{metric},{filt}"
            if metric.endswith("_stderr"):
                stderr[name.replace("_stderr", "", 1)] = float(v)
            else:
                metrics[name] = float(v)
        n = (res.get("n-samples") or {}).get(task) or {}
        out[task] = {
            "metrics": metrics,
            "stderr": stderr,
            "n": n.get("effective"),
            "num_fewshot": (res.get("n-shot") or {}).get(task),
            "version": (res.get("versions") or {}).get(task),
            "higher_is_better": (res.get("higher_is_better") or {}).get(task) or {},
        }
    return out


def record(store: dict[str, Any], phase: str, results: dict[str, Any], spec) -> None:
    """Fold one phase's results into ``metrics['lm_eval']``: per task and metric, base → edited → control."""
    import lm_eval  # noqa: I001 - optional extra (installed: the phase just ran it)

    store.setdefault("lm_eval_version", getattr(lm_eval, "__version__", None))
    store.setdefault("limit", spec.limit)
    store.setdefault("num_fewshot", spec.num_fewshot)
    tasks = store.setdefault("tasks", {})
    for task, r in results.items():
        t = tasks.setdefault(task, {"metrics": {}, "stderr": {}})
        for k in ("n", "num_fewshot", "version", "higher_is_better"):
            t[k] = r[k]
        for name, v in r["metrics"].items():
            t["metrics"].setdefault(name, {})[phase] = v
            if name in r["stderr"]:
                t["stderr"].setdefault(name, {})[phase] = r["stderr"][name]


# ------------------------------------------------------------------------------------------------------
# the task that ships with editkit
# ------------------------------------------------------------------------------------------------------


def capability_task_rows() -> list[dict[str, Any]]:
    """``editkit_capabilities.jsonl``: every built-in capability's test item (main frame) as a two-choice
    question. The right answer's position alternates (item order), so a preference for the first or the
    second choice cannot look like ability."""
    rows = []
    for cap in BUILTIN_CAPABILITIES:
        with open(builtin_path(cap), encoding="utf-8") as fh:
            items = [json.loads(line) for line in fh if line.strip()]
        for it in items:
            if it.get("split") != "test" or it.get("frame", "main") != "main":
                continue
            label = len(rows) % 2
            choices = [it["incorrect"], it["correct"]] if label else [it["correct"], it["incorrect"]]
            rows.append(
                {
                    "id": it["id"],
                    "capability": cap,
                    "prompt": it["prompt"],
                    "choices": choices,
                    "label": label,
                }
            )
    return rows


def record_lm_eval_phase(metrics: dict, phase: str, model, tokenizer, recipe, counter=None) -> None:
    """Run ``recipe.eval.lm_eval`` on ``model`` as it is in ``phase`` and fold the result into
    ``metrics['lm_eval']``; ``counter`` (the stage's progress) grows by the requests and counts them."""
    spec = recipe.eval.lm_eval
    results = run_lm_eval(
        model,
        tokenizer,
        spec,
        seed=recipe.seed,
        batch_size=spec.batch_size or recipe.eval.batch_size or 16,
        on_units=counter.add if counter is not None else None,
        grow=counter.grow if counter is not None else None,
    )
    record(metrics.setdefault("lm_eval", {}), phase, results, spec)
