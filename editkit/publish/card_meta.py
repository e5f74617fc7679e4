"""The card's front matter (``huggingface_hub.ModelCardData`` / ``EvalResult``) and its metric vocabulary.

Metric labels: the general ones every run measures are here; a method adds its own through its report
(``Method.report.metrics``), so nothing here knows a method by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from editkit.data.capabilities import BUILTIN_CAPABILITIES
from editkit.eval.parts import PARTS, Datasets
from editkit.methods import get_method
from editkit.methods.base import Method
from editkit.methods.report import Report, finite

#: The Hub knows four base-model relations: adapter, merge, quantized, finetune. An editkit export is a
#: complete checkpoint (not an adapter repo) whose weights were changed starting from ONE parent (a merge
#: combines several parents; quantized means reduced precision of the same function), so it is a finetune.
BASE_MODEL_RELATION = "finetune"
TASK_TYPE = "text-generation"

# metric key -> (label, model-index metric type, how to read it): the suite parts' own (each part declares
# its metrics in its module, editkit/eval/parts/), then the method's (Report.metrics)
GENERAL_METRICS: dict[str, tuple[str, str, str]] = {
    k: v for p in PARTS.values() for k, v in p.metrics.items()
}


def method_of(recipe: Mapping) -> type[Method] | None:
    """The registered method class of the recipe, or None (a plugin not installed here: the card still renders)."""
    try:
        return get_method(str((recipe.get("method") or {}).get("name", "")))
    except ValueError:
        return None


def report_of(recipe: Mapping, metrics: Mapping) -> Report:
    """The method's report on this run's ``edit.info`` (the generic one for an unknown method)."""
    cls = method_of(recipe)
    info = (metrics.get("edit") or {}).get("info") or {}
    return (cls.report if cls else Report)(info)


def known_metrics(report: Report) -> dict[str, tuple[str, str, str]]:
    return {**GENERAL_METRICS, **report.metrics}


def metric_keys(known: Mapping, *phases: Mapping) -> list[str]:
    """The suite parts' metrics in registry order (each part orders its own: the target first, then its answer
    classes...), then the other known metrics (the method's) in order, then the rest."""
    keys: list[str] = []
    for ph in phases:
        keys += [k for k in ph if k not in keys]
    ordered = [k for p in PARTS.values() for k in p.order(keys)]
    ordered += [k for k in known if k in keys and k not in ordered]
    return ordered + [k for k in keys if k not in ordered]


def metric_meta(known: Mapping, key: str) -> tuple[str, str, str] | None:
    """(card label, model-index metric type, how to read it) of ``key``: the known metrics' (the suite parts'
    named ones and the method's), else the suite part whose family it belongs to; None for anything else."""
    if key in known:
        return known[key]
    return next((m for p in PARTS.values() if (m := p.meta(key))), None)


def label(known: Mapping, key: str) -> str:
    meta = metric_meta(known, key)
    return meta[0] if meta else key


def looks_like_path(s: str) -> bool:
    suffixes = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".gguf", ".yaml", ".yml")
    return s.startswith((".", "/", "~")) or s.lower().endswith(suffixes) or "\\" in s


def hub_id(s: object) -> str | None:
    """``s`` if it reads as a Hub repo id ``owner/name`` (not a local path), else None."""
    if not isinstance(s, str) or looks_like_path(s):
        return None
    return s if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", s) and ".." not in s else None


def source_name(source: str) -> str:
    """Short name of a data source: built-in name, file stem, or the name part of a Hub id."""
    if source in BUILTIN_CAPABILITIES or source == "builtin":
        return source
    return Path(source).stem if looks_like_path(source) else source.rsplit("/", 1)[-1]


def capability_of(recipe: Mapping, report: Report) -> str:
    """What the run removed (or installed): the target set, else the method's own subject, else the name."""
    target = ((recipe.get("data") or {}).get("target") or {}).get("source")
    if target:
        return source_name(str(target))
    method = (recipe.get("method") or {}).get("name", "")
    return report.subject or str(recipe.get("name") or method)


def data_sources(recipe: Mapping) -> list[str]:
    data = recipe.get("data") or {}
    out: list[str] = []
    for key in ("target", "general"):
        src = (data.get(key) or {}).get("source")
        if src:
            out.append(str(src))
    if isinstance(data.get("heldout"), list):
        out += [str(s.get("source")) for s in data["heldout"] if isinstance(s, Mapping) and s.get("source")]
    for s in (data.get("sets") or {}).values():
        if isinstance(s, Mapping) and s.get("source"):
            out.append(str(s["source"]))
    return out


def hub_datasets(recipe: Mapping) -> list[str]:
    """Hub dataset ids the recipe read (built-in sets and local files are not Hub datasets)."""
    seen: list[str] = []
    for s in data_sources(recipe):
        h = hub_id(s)
        if h and h not in seen:
            seen.append(h)
    return seen


def _ds_type(src: str) -> str:
    """Hub id, built-in name, or a local file's name (so a local 'moral.jsonl' never merges with the
    built-in 'moral' held-out set: model-index groups results by dataset type)."""
    if hub_id(src):
        return src
    if src == "builtin":
        return "editkit-general-text"
    return Path(src).name if looks_like_path(src) else src


def _dataset_of(key: str, recipe: Mapping, report: Report, phase: Mapping) -> tuple[str, str, str]:
    """(dataset type, dataset name, split) a metric of the edited model was measured on."""
    data, method = recipe.get("data") or {}, recipe.get("method") or {}
    cap = capability_of(recipe, report)
    target = str(((data.get("target") or {}).get("source")) or cap)
    general = str((data.get("general") or {}).get("source") or "builtin")
    where = Datasets(
        target=(_ds_type(target), f"{cap} (capability triplets, pairwise)"),
        general=(_ds_type(general), f"general text ({source_name(general)})"),
        phase=phase,
    )
    for part in PARTS.values():
        got = part.dataset(key, where)
        if got is not None:
            return got
    if key in report.metric_sets:
        what, params = report.metric_sets[key]
        name = next((method[p] for p in params if method.get(p)), None)
        src = str(((data.get("sets") or {}).get(name) or {}).get("source") or name or "prompts")
        return _ds_type(src), f"{what} ({source_name(src)})", "test"
    return "editkit-eval", "editkit evaluation", "test"


def eval_results(recipe: Mapping, metrics: Mapping, report: Report) -> list:
    """model-index entries: every number measured on the EDITED model, each with the data it was measured on."""
    edited = metrics.get("edited") or {}
    known = known_metrics(report)
    out = []
    for key in metric_keys(known, edited):
        v = edited[key]
        if not finite(v):
            continue
        meta = metric_meta(known, key)
        name, mtype = (meta[0], meta[1]) if meta else (key, key.replace("/", "_"))
        dtype, dname, split = _dataset_of(key, recipe, report, edited)
        out.append(
            EvalResult(
                task_type=TASK_TYPE,
                task_name="Text Generation",
                dataset_type=dtype,
                dataset_name=dname,
                dataset_split=split,
                metric_type=mtype,
                metric_name=name,
                metric_value=float(v) if isinstance(v, float) else v,
            )
        )
    return out


def front_matter(recipe: Mapping, metrics: Mapping, report: Report | None = None) -> dict:
    """Card metadata as a plain dict, built (and so checked) by ``huggingface_hub.ModelCardData``."""
    report = report or report_of(recipe, metrics)
    method = (recipe.get("method") or {}).get("name", "unknown")
    kind = "behaviour-edit" if report.installs else "capability-ablation"
    tags = list(dict.fromkeys(["editkit", kind, method, capability_of(recipe, report)]))
    base = hub_id(metrics.get("base_model"))
    results = eval_results(recipe, metrics, report)
    repo = ((recipe.get("push") or {}).get("repo_id")) or None
    data = ModelCardData(
        base_model=base,
        library_name="transformers",
        license=metrics.get("license") or None,
        tags=tags,
        datasets=hub_datasets(recipe) or None,
        pipeline_tag=TASK_TYPE,
        eval_results=results or None,
        model_name=(repo.split("/")[-1] if repo else str(recipe.get("name") or "edited-model")),
        **({"base_model_relation": BASE_MODEL_RELATION} if base else {}),
    )
    return data.to_dict()
