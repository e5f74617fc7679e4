"""The ablation card: the exported model's README.md (Hugging Face model-card front matter + body + plots).

``render_card`` is pure (recipe dict + metrics dict in, Markdown out) so it is easy to test; ``write_card``
reads a run directory, draws the plots into ``<export>/editkit/plots/`` and writes ``<export>/README.md``
atomically. The front matter is built with ``huggingface_hub.ModelCardData`` / ``EvalResult`` and parsed
back with ``ModelCard`` before anything is written, so a card that the Hub would misread never leaves here.
The method section reuses the method registry (paper, summary, parameter descriptions), like mergekit's
card generator.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from editkit import __version__
from editkit.errors import OutputError, scrub_secrets
from editkit.events import is_run_dir

#: The Hub knows four base-model relations: adapter, merge, quantized, finetune. An editkit export is a
#: complete checkpoint (not an adapter repo) whose weights were changed starting from ONE parent (a merge
#: combines several parents; quantized means reduced precision of the same function), so it is a finetune.
BASE_MODEL_RELATION = "finetune"
TASK_TYPE = "text-generation"
PLOTS_DIR = "editkit/plots"

# metric key -> (label, model-index metric type, how to read it)
KNOWN_METRICS: dict[str, tuple[str, str, str]] = {
    "target_accuracy": ("target pairwise accuracy", "accuracy", "the capability removed: lower = removed"),
    "general_capability_score": (
        "general capability score",
        "accuracy",
        "mean of the held-out capabilities: should not move",
    ),
    "perplexity": ("perplexity (general text)", "perplexity", "lower is better; should not move"),
    "blimp_accuracy": ("BLiMP accuracy", "accuracy", "grammar minimal pairs: should not move"),
    "drift_kl": ("drift KL(base ‖ model)", "kl_divergence", "first token on general prompts; 0 = unchanged"),
    "refusal_rate": ("refusal rate (harmful prompts)", "refusal_rate", "share of harmful prompts refused"),
    "over_refusal_rate": (
        "over-refusal rate (harmless prompts)",
        "refusal_rate",
        "share of harmless prompts refused",
    ),
    "harmless_kl": ("harmless KL (first token)", "kl_divergence", "chat template, harmless prompts"),
    "harmless_kl_answered": (
        "harmless KL, answered prompts",
        "kl_divergence",
        "only the harmless prompts the starting model answered (not over-refused)",
    ),
    "target_mean_abs_margin": (
        "target mean |ℓ⁺ − ℓ⁻|",
        "mean_abs_margin",
        "SCALPEL equalisation: towards 0 = removed",
    ),
}
_ORDER = ["target_accuracy"]  # then heldout/* (sorted), then the rest of KNOWN_METRICS, then others
_TAIL = [k for k in KNOWN_METRICS if k != "target_accuracy"]


# ------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------


def _num(v: Any) -> str:
    """One fixed format for every number in the body (tests compare strings made the same way)."""
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "–"
    if v == 0:
        return "0"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.4f}"
    return f"{v:.2e}"


def _delta(a: Any, b: Any) -> str:
    if not _finite(a) or not _finite(b):
        return "–"
    d = b - a
    s = _num(d)
    return s if s.startswith("-") or s == "0" else "+" + s


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _cell(v: Any, limit: int = 120) -> str:
    """A value as one Markdown table cell: compact JSON for containers, pipes escaped, long values cut."""
    if isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, ensure_ascii=False, separators=(", ", ": "))
    elif isinstance(v, float):
        s = repr(v)
    else:
        s = "null" if v is None else str(v)
    s = " ".join(s.split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return "`" + s.replace("|", "\\|").replace("`", "'") + "`"


def _looks_like_path(s: str) -> bool:
    suffixes = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".gguf", ".yaml", ".yml")
    return s.startswith((".", "/", "~")) or s.lower().endswith(suffixes) or "\\" in s


def hub_id(s: Any) -> str | None:
    """``s`` if it reads as a Hub repo id ``owner/name`` (not a local path), else None."""
    if not isinstance(s, str) or _looks_like_path(s):
        return None
    return s if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", s) and ".." not in s else None


def _builtin_capabilities() -> dict[str, str]:
    try:
        from editkit.data.capabilities import BUILTIN_CAPABILITIES
    except Exception:  # the card must render even from a partial installation
        return {}
    return dict(BUILTIN_CAPABILITIES)


def _source_name(source: str) -> str:
    """Short name of a data source: built-in name, file stem, or the name part of a Hub id."""
    if source in _builtin_capabilities() or source == "builtin":
        return source
    return Path(source).stem if _looks_like_path(source) else source.rsplit("/", 1)[-1]


def capability_of(recipe: Mapping) -> str:
    """What the run removed (or, for ``sft``, installed): the target set, else the method's own subject."""
    target = ((recipe.get("data") or {}).get("target") or {}).get("source")
    if target:
        return _source_name(str(target))
    method = (recipe.get("method") or {}).get("name", "")
    if method == "refusal":
        return "refusal"
    return str(recipe.get("name") or method)


def _installs(recipe: Mapping) -> bool:
    return (recipe.get("method") or {}).get("name") == "sft"


def _data_sources(recipe: Mapping) -> list[str]:
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
    for s in _data_sources(recipe):
        h = hub_id(s)
        if h and h not in seen:
            seen.append(h)
    return seen


def _method_cls(name: str):
    try:
        from editkit.methods import get_method

        return get_method(name)
    except Exception:  # unknown here (plugin not installed): the card still renders
        return None


def _metric_keys(*phases: Mapping) -> list[str]:
    keys: list[str] = []
    for ph in phases:
        for k in ph:
            if k not in keys:
                keys.append(k)
    heldout = sorted(k for k in keys if k.startswith("heldout/"))
    ordered = [k for k in _ORDER if k in keys] + heldout + [k for k in _TAIL if k in keys]
    return ordered + [k for k in keys if k not in ordered]


def _escape_cell(text: str) -> str:
    """A '|' inside a markdown table cell must be escaped or it splits the cell."""
    return text.replace("|", "\\|")


def _label(key: str) -> str:
    if key in KNOWN_METRICS:
        return KNOWN_METRICS[key][0]
    if key.startswith("heldout/"):
        return f"held-out: {key.split('/', 1)[1]} accuracy"
    return key


def layer_of(module: str) -> int | None:
    """Layer index of a module name (``model.layers.3.mlp.down_proj`` → 3); None for embeddings etc."""
    m = re.search(r"\.(\d+)\.", module)
    return int(m.group(1)) if m else None


def layer_norms(edit_norms: Mapping[str, float], n_layers: int | None = None) -> tuple[list[float], float]:
    """Per-layer ‖ΔW‖_F (root of the sum of squares over the layer's modules) and the rest (embeddings)."""
    idx = [layer_of(m) for m in edit_norms]
    top = max([i for i in idx if i is not None], default=-1)
    n = max(n_layers or 0, top + 1)
    sq = [0.0] * n
    other = 0.0
    for (_, v), li in zip(edit_norms.items(), idx, strict=True):
        if not _finite(v):
            continue
        if li is None:
            other += float(v) ** 2
        else:
            sq[li] += float(v) ** 2
    return [math.sqrt(s) for s in sq], math.sqrt(other)


# ------------------------------------------------------------------------------------------------------
# front matter
# ------------------------------------------------------------------------------------------------------


def _eval_results(recipe: Mapping, metrics: Mapping) -> list:
    """model-index entries: every number measured on the EDITED model, each with the data it was measured on."""
    from huggingface_hub import EvalResult

    edited = metrics.get("edited") or {}
    data = recipe.get("data") or {}
    method = recipe.get("method") or {}
    cap = capability_of(recipe)
    target_src = str(((data.get("target") or {}).get("source")) or cap)
    general_src = str((data.get("general") or {}).get("source") or "builtin")
    heldout = sorted(k.split("/", 1)[1] for k in edited if k.startswith("heldout/"))

    def ds_type(src: str) -> str:
        """Hub id, built-in name, or a local file's name (so a local 'moral.jsonl' never merges with the
        built-in 'moral' held-out set: model-index groups results by dataset type)."""
        if hub_id(src):
            return src
        if src == "builtin":
            return "editkit-general-text"
        return Path(src).name if _looks_like_path(src) else src

    def set_source(role_key: str) -> str:
        name = method.get(role_key)
        src = ((data.get("sets") or {}).get(name) or {}).get("source") if name else None
        return str(src or name or "prompts")

    out = []
    for key in _metric_keys(edited):
        v = edited[key]
        if not _finite(v):
            continue
        label, mtype, _ = KNOWN_METRICS.get(key, (_label(key), key.replace("/", "_"), ""))
        split = "test"
        if key in ("target_accuracy", "target_mean_abs_margin"):
            dtype, dname = ds_type(target_src), f"{cap} (capability triplets, pairwise)"
        elif key.startswith("heldout/"):
            name = key.split("/", 1)[1]
            dtype, dname, mtype = name, f"{name} (held-out capability, pairwise)", "accuracy"
        elif key == "general_capability_score":
            dtype, dname = (
                "editkit-heldout-capabilities",
                "mean of held-out capabilities: " + ", ".join(heldout),
            )
        elif key in ("perplexity", "drift_kl"):
            dtype, dname = ds_type(general_src), f"general text ({_source_name(general_src)})"
        elif key == "blimp_accuracy":
            dtype, dname, split = "blimp", "BLiMP minimal pairs", "train"
        elif key in ("refusal_rate",):
            src = set_source("harmful_test" if "harmful_test" in method else "eval_harmful")
            dtype, dname = ds_type(src), f"harmful prompts ({_source_name(src)})"
        elif key in ("over_refusal_rate", "harmless_kl", "harmless_kl_answered"):
            src = set_source("harmless_test" if "harmless_test" in method else "eval_harmless")
            dtype, dname = ds_type(src), f"harmless prompts ({_source_name(src)})"
        else:
            dtype, dname = "editkit-eval", "editkit evaluation"
        out.append(
            EvalResult(
                task_type=TASK_TYPE,
                task_name="Text Generation",
                dataset_type=dtype,
                dataset_name=dname,
                dataset_split=split,
                metric_type=mtype,
                metric_name=label,
                metric_value=float(v) if isinstance(v, float) else v,
            )
        )
    return out


def front_matter(recipe: Mapping, metrics: Mapping) -> dict:
    """Card metadata as a plain dict, built (and so checked) by ``huggingface_hub.ModelCardData``."""
    from huggingface_hub import ModelCardData

    method = (recipe.get("method") or {}).get("name", "unknown")
    cap = capability_of(recipe)
    kind = "behaviour-edit" if _installs(recipe) else "capability-ablation"
    tags = list(dict.fromkeys(["editkit", kind, method, cap]))
    base = hub_id(metrics.get("base_model"))
    results = _eval_results(recipe, metrics)
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


# ------------------------------------------------------------------------------------------------------
# body sections
# ------------------------------------------------------------------------------------------------------

_DISCLAIMER = (
    "> **This is a capability ablation, not a safety guarantee.** The numbers below are measured on small "
    "evaluation sets in the formats listed; the capability may survive in other phrasings, languages or "
    "tasks, and a little fine-tuning can usually bring it back. Do not rely on this model being unable to "
    "do it."
)


def _verdict(metrics: Mapping) -> dict | None:
    """May the card say "removed"? One rule for card and metrics: ``editkit.robustness.removal_verdict``."""
    from editkit.robustness import removal_verdict

    return removal_verdict(metrics)


def _what_removed(recipe: Mapping, metrics: Mapping) -> list[str]:
    cap = capability_of(recipe)
    data = recipe.get("data") or {}
    target = (data.get("target") or {}).get("source")
    base_model = metrics.get("base_model") or metrics.get("model") or (recipe.get("model") or {}).get("id")
    verb = "installed in" if _installs(recipe) else "removed from"
    verdict = None if _installs(recipe) else _verdict(metrics)
    if verdict is not None and not verdict["removed"]:
        lines = ["## What the edit changed", "", f"**{cap}** in `{base_model}`: {verdict['sentence']}."]
    else:
        lines = ["## What was " + ("changed" if _installs(recipe) else "removed"), ""]
        lines.append(f"**{cap}** was {verb} `{base_model}`.")
    desc = _builtin_capabilities().get(str(target)) if target else None
    if desc:
        lines.append(f"Built-in capability set `{target}`: {desc}.")
    elif target:
        lines.append(f"Target data: `{target}` (triplets: prompt, correct answer, incorrect answer).")
    b, e = (metrics.get("base") or {}), (metrics.get("edited") or {})
    c = metrics.get("control") or {}
    if _finite(b.get("target_accuracy")) and _finite(e.get("target_accuracy")):
        s = (
            f"Target pairwise accuracy went from {_num(b['target_accuracy'])} to "
            f"{_num(e['target_accuracy'])} (0.5 = chance: the model prefers the correct and the incorrect "
            "answer equally often)"
        )
        if _finite(c.get("target_accuracy")):
            s += f"; a random edit of the same size gives {_num(c['target_accuracy'])}"
        lines.append(s + ".")
        if not _installs(recipe) and e["target_accuracy"] >= b["target_accuracy"]:
            lines.append(
                "**The target accuracy did not drop: this run removed nothing measurable** (see the "
                "tables below before using this model as an ablation)."
            )
    if _finite(b.get("refusal_rate")) and _finite(e.get("refusal_rate")):
        lines.append(
            f"Refusal rate on harmful prompts went from {_num(b['refusal_rate'])} to {_num(e['refusal_rate'])}."
        )
    lines += ["", _DISCLAIMER, ""]
    return lines


def _method_section(recipe: Mapping, metrics: Mapping) -> list[str]:
    params = dict(recipe.get("method") or {})
    name = params.pop("name", "unknown")
    cls = _method_cls(name)
    paper = (cls.paper if cls else "") or metrics.get("method_paper") or ""
    lines = ["## Method", ""]
    if cls is None:
        lines.append(f"`{name}` (not a method registered in this editkit installation).")
    else:
        lines.append(f"`{name}`: {cls.summary}.")
    if paper:
        lines.append(f"Paper: {paper}.")
    edit = metrics.get("edit") or {}
    if edit.get("modules") is not None:
        lines.append(
            f"The edit touches {edit['modules']} module(s); it is merged into the weights (no extra code)."
        )
    lines += ["", "### Hyperparameters", ""]
    if not params:
        lines += ["This method has no hyperparameters.", ""]
        return lines
    fields = getattr(cls.params_cls, "model_fields", {}) if cls else {}
    lines += ["| parameter | value | meaning |", "| --- | --- | --- |"]
    for k, v in params.items():
        desc = getattr(fields.get(k), "description", None) or ""
        lines.append(f"| `{k}` | {_cell(v)} | {desc.replace('|', '/')} |")
    lines += ["", "Long values are cut here; the full values are in the embedded recipe below.", ""]
    return lines


def _info_scalars(info: Mapping, skip: set[str]) -> list[str]:
    rows = []
    for k, v in info.items():
        if k in skip or v is None:
            continue
        if isinstance(v, (str, int, float, bool)) or (
            isinstance(v, (list, dict)) and len(json.dumps(v)) <= 120
        ):
            rows.append(f"| `{k}` | {_cell(v)} |")
    return (["| field | value |", "| --- | --- |", *rows, ""]) if rows else []


def _where_heads(info: Mapping) -> list[str]:
    heads = info.get("heads") or []
    coef = info.get("coefficients")
    lines = [
        f"{len(heads)} attention head(s), zeroed at the `o_proj` input (one column block per query head):",
        "",
    ]
    from editkit.methods.heads import head_label

    refined = info.get("refined_drops") or {}
    header = "| layer | head |" + (" coefficient |" if coef else "") + (" drop alone |" if refined else "")
    lines += [header, "| --- | --- |" + (" --- |" if coef else "") + (" --- |" if refined else "")]
    for li, h in heads:
        c = ""
        if coef:
            try:
                c = f" {_num(float(coef[li][h]))} |"
            except (IndexError, TypeError, ValueError):
                c = " – |"
        if refined:
            c += f" {_num(refined.get(head_label(li, h)))} |"
        lines.append(f"| {li} | {h} |{c}")
    lines.append("")
    if info.get("coefficient_meaning"):
        lines.append(f"Coefficient: {info['coefficient_meaning']}.")
    if refined:
        lines.append(
            f"The fit's top {len(refined)} candidates were then knocked out one at a time and ranked by that "
            "drop in task score (`refine`)."
        )
    if info.get("n_evals") is not None:
        lines.append(
            f"Found with the `{info.get('design')}` design: {info['n_evals']} evaluations"
            + (f", R² {_num(info['r2'])}" if _finite(info.get("r2")) else "")
            + (f", task score `{info['score']}`" if info.get("score") else "")
            + "."
        )
    if not coef:
        lines.append("The heads were given explicitly in the recipe (no discovery run).")
    lines.append("")
    return lines


def _where_neurons(info: Mapping) -> list[str]:
    neurons = info.get("neurons") or []
    per_layer: dict[int, int] = {}
    for li, _ in neurons:
        per_layer[li] = per_layer.get(li, 0) + 1
    lines = [f"{len(neurons)} MLP neuron(s), erased at the `down_proj` input. Neurons per layer:", ""]
    lines += ["| layer | neurons |", "| --- | --- |"]
    lines += [f"| {li} | {n} |" for li, n in sorted(per_layer.items())]
    lines.append("")
    shown = neurons[:20]
    attr = info.get("mean_attribution") or []
    lines.append(
        "First neurons (layer, index"
        + (", mean attribution" if attr else "")
        + "): "
        + ", ".join(
            f"({li}, {j}" + (f", {_num(attr[i])})" if i < len(attr) else ")")
            for i, (li, j) in enumerate(shown)
        )
        + (
            f" … and {len(neurons) - len(shown)} more (all in `editkit/edit.json`)."
            if len(neurons) > 20
            else "."
        )
    )
    if info.get("overlap"):
        lines.append("")
        lines.append("Overlap between the neuron sets of the datasets (CNL overlap rate):")
        lines.append("")
        lines += ["| pair | value |", "| --- | --- |"]
        for k, v in info["overlap"].items():
            lines.append(f"| {k} | {_cell(v)} |")
    lines.append("")
    return lines


def _where_refusal(info: Mapping) -> list[str]:
    lines = []
    if info.get("layer") is not None:
        lines.append(
            f"The refusal direction was taken at layer **{info['layer']}** and projected out of the residual "
            f"writers of layers {_cell(info.get('edited_layers'))}"
            + (
                f" at strength {_num(info['strength'])}."
                if info.get("strength") not in (None, 1, 1.0)
                else "."
            )
        )
    if info.get("comparison"):
        c = info["comparison"]
        kept = "SRA-cleaned" if info.get("sra") else "plain (uncleaned)"
        lines.append(
            f"The {kept} direction was kept; the {'plain' if c.get('direction') == 'plain' else 'SRA-cleaned'} one "
            f"was fitted beside it at the same layer (validation log-odds {_num(c.get('refusal_log_odds'))}, KL "
            f"{_num(c.get('kl'))} at strength {_num(c.get('strength'))}) and is evaluated below."
        )
    if info.get("strength_scores") is not None:
        lines.append(
            "The strength was chosen on the validation prompts (`strength: auto`): the best candidates over "
            f"the KL limit were weakened by a search over the strength ({len(info['strength_scores'])} more evaluations)."
        )
    if info.get("window_scores"):
        lines.append(
            f"The first edited layer ({info.get('edit_from')}) was chosen together with the direction layer "
            f"(`edit_from: auto`) from {len(info['window_scores'])} (direction layer, first edited layer) "
            "pairs, by the same validation score; the table shows each direction layer at its best pair."
        )
    if info.get("layer_scores"):
        lines += [
            "",
            "Candidate layers (direction ablated at each; lower refusal log-odds = more removed):",
            "",
        ]
        with_s = any("strength" in v for v in info["layer_scores"].values())
        if with_s:
            lines += ["| layer | strength | refusal log-odds | harmless KL |", "| --- | --- | --- | --- |"]
        else:
            lines += ["| layer | refusal log-odds | harmless KL |", "| --- | --- | --- |"]
        for li, s in info["layer_scores"].items():
            mark = " **(chosen)**" if str(li) == str(info.get("layer")) else ""
            cells = [f"{li}{mark}"] + ([_num(s.get("strength"))] if with_s else [])
            cells += [_num(s.get("refusal_log_odds")), _num(s.get("kl"))]
            lines.append("| " + " | ".join(cells) + " |")
    if info.get("atoms"):
        before, after = info.get("atom_cosines_before") or {}, info.get("atom_cosines_after") or {}
        lines += ["", "SRA concept atoms (cosine with the direction, before → after cleaning):", ""]
        lines += ["| atom | before | after |", "| --- | --- | --- |"]
        for a in info["atoms"]:
            lines.append(f"| {a} | {_num(before.get(a))} | {_num(after.get(a))} |")
    lines.append("")
    return lines


def _where_section(recipe: Mapping, metrics: Mapping, plots: Mapping[str, str]) -> list[str]:
    info = (metrics.get("edit") or {}).get("info") or {}
    lines = ["## Where the capability was found", ""]
    if not info and not metrics.get("edit_norms"):
        return lines + ["This run recorded no localisation (no `edit.info`, no edit norms).", ""]
    handled: set[str] = set()
    if "heads" in info:
        lines += _where_heads(info)
        handled |= {"heads", "coefficients", "ranking", "heatmap", "coefficient_meaning", "design", "score"}
        handled |= {"r2", "n_evals", "refined_drops"}
    if "neurons" in info:
        lines += _where_neurons(info)
        handled |= {"neurons", "mean_attribution", "overlap", "per_layer"}
    if "layer_scores" in info or (recipe.get("method") or {}).get("name") == "refusal":
        lines += _where_refusal(info)
        handled |= {"layer_scores", "atoms", "atom_cosines_before", "atom_cosines_after", "edited_layers"}
        handled |= {"window_scores", "edit_from", "strength_scores", "comparison", "layer_search_direction"}
    if "top_layers" in info:
        lines.append(f"Layers with the largest change: {', '.join(str(i) for i in info['top_layers'])}.")
        lines.append("")
        handled |= {"top_layers", "delta_norms", "layer_delta_norms"}
    if plots.get("heads_heatmap"):
        lines += [f"![attention heads: layer × head]({plots['heads_heatmap']})", ""]
    if plots.get("neurons_per_layer"):
        lines += [f"![capability neurons per layer]({plots['neurons_per_layer']})", ""]
    if plots.get("refusal_layers"):
        lines += [f"![refusal: candidate layers]({plots['refusal_layers']})", ""]
    rest = _info_scalars(info, handled)
    if rest:
        lines += ["Other facts the method recorded (`edit.info`):", "", *rest]

    norms = metrics.get("edit_norms") or {}
    lines += ["### Size of the weight change per layer", ""]
    if not norms:
        lines += ["No per-module weight-change norms were recorded.", ""]
        return lines
    n_layers = (metrics.get("anatomy") or {}).get("n_layers")
    per_layer, other = layer_norms(norms, n_layers)
    total = math.sqrt(sum(v * v for v in per_layer) + other * other)
    lines.append(
        f"‖ΔW‖_F over all {len(norms)} edited module(s): {_num(total)}. Per layer (root of the sum of squares "
        "over the layer's modules; layers not listed are unchanged):"
    )
    lines += ["", "| layer | ‖ΔW‖_F | modules |", "| --- | --- | --- |"]
    counts: dict[int | None, int] = {}
    for m in norms:
        counts[layer_of(m)] = counts.get(layer_of(m), 0) + 1
    for li, v in enumerate(per_layer):
        if v > 0:
            lines.append(f"| {li} | {_num(v)} | {counts.get(li, 0)} |")
    if other > 0:
        lines.append(f"| embeddings / other | {_num(other)} | {counts.get(None, 0)} |")
    lines.append("")
    if plots.get("layer_delta_norms"):
        lines += [f"![per-layer weight change]({plots['layer_delta_norms']})", ""]
    return lines


def _before_after(recipe: Mapping, metrics: Mapping) -> list[str]:
    base, edited = metrics.get("base") or {}, metrics.get("edited") or {}
    control = metrics.get("control") or {}
    lines = ["## Before and after", ""]
    if not base and not edited:
        return lines + ["No evaluation was recorded for this run.", ""]
    has_c = bool(control)
    head = (
        "| metric | base | edited | Δ edited |"
        + (" random control | Δ control |" if has_c else "")
        + " reading |"
    )
    sep = "| --- | --- | --- | --- |" + (" --- | --- |" if has_c else "") + " --- |"
    lines += [head, sep]
    for k in _metric_keys(base, edited, control):
        b, e = base.get(k), edited.get(k)
        row = f"| {_escape_cell(_label(k))} | {_num(b)} | {_num(e)} | {_delta(b, e)} |"
        if has_c:
            c = control.get(k)
            row += f" {_num(c)} | {_delta(b, c)} |"
        reading = KNOWN_METRICS.get(k, ("", "", ""))[2]
        row += f" {'held-out capability: should not move' if k.startswith('heldout/') else reading} |"
        lines.append(row)
    lines.append("")
    lines.append(
        "Accuracies are fractions (pairwise: log p(correct) > log p(incorrect), length-normalised; 0.5 = chance)."
    )
    notes = []
    ev = recipe.get("eval") or {}
    if not has_c:
        why = "`eval.control` is off" if ev.get("control") is False else "the method has no random control"
        notes.append(
            f"No random control was evaluated ({why}), so the cost cannot be compared with a random edit of the same size."
        )
    else:
        what = (metrics.get("control_edit") or {}).get("control")
        notes.append(f"Random control: {what or 'a random edit of the same size'}.")
    if "blimp_accuracy" not in base:
        notes.append("BLiMP was not measured (`eval.blimp` off or the BLiMP data was not found).")
    if "perplexity" not in base:
        notes.append("Perplexity was not measured (`eval.perplexity` off or no general text).")
    if not any(k.startswith("heldout/") for k in base):
        notes.append("No held-out capability was measured, so there is no general capability score.")
    if ev.get("max_items"):
        notes.append(f"Each evaluated set was capped at {ev['max_items']} items (`eval.max_items`).")
    lines += ["", *[f"- {n}" for n in notes], ""]
    return lines + _comparisons(base, edited, metrics.get("comparisons") or {})


def _comparisons(base: Mapping, edited: Mapping, comps: Mapping) -> list[str]:
    """Alternative edits fitted in the same run (plain abliteration beside SRA), evaluated the same way."""
    lines: list[str] = []
    for name, comp in comps.items():
        m, c = comp.get("metrics") or {}, (comp.get("info") or {}).get("comparison") or {}
        keys = [k for k in _metric_keys(base, edited, m) if k in m and k in edited]
        lines += [
            f"### Compared with {name}",
            "",
            f"Fitted in the same run at the same layer and KL limit (strength {_num(c.get('strength'))}, validation "
            f"refusal log-odds {_num(c.get('refusal_log_odds'))}, KL {_num(c.get('kl'))}), and evaluated on the "
            "same prompts; it was not exported.",
            "",
            f"| metric | base | this edit | {_escape_cell(name)} |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {_escape_cell(_label(k))} | {_num(base.get(k))} | {_num(edited[k])} | {_num(m[k])} |"
            for k in keys
        ]
        lines.append("")
    return lines


def _robustness(metrics: Mapping) -> list[str]:
    rob = metrics.get("robustness")
    lines = ["## Robustness on paraphrases and answer frames", ""]
    if not rob:
        return lines + [
            "Robustness was not measured for this run (`eval.robustness` off or no target data). The removal "
            "has only been checked on the original prompt format.",
            "",
        ]
    try:
        from editkit.robustness import FAMILIES

        describe = {k: f.description for k, f in FAMILIES.items()}
    except Exception:
        describe = {}
    describe["original"] = "the evaluation prompts as written"
    lines.append(
        "The target metric on rewritten prompts. Retained removal = drop on the family ÷ drop on the original "
        "prompts (1 = the removal carries over fully, 0 = not at all)."
    )
    lines.append("")
    for label, rep in rob.items():
        fams = (rep or {}).get("families") or {}
        summ = (rep or {}).get("summary") or {}
        is_target = label == "target"
        title = "Target capability" if is_target else f"Control: {label.split(':', 1)[-1]} (should not drop)"
        lines += [f"### {title}", ""]
        if is_target:
            lines += ["| family | n | before | after | drop | retained removal | what it is |"]
            lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        else:
            lines += [
                "| family | n | before | after | drop | what it is |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
        for fam, r in fams.items():
            flag = "" if r.get("informative", True) else " (near chance before: not counted)"
            row = f"| {fam} | {r.get('n', '')} | {_num(r.get('before'))} | {_num(r.get('after'))} | {_num(r.get('drop'))} |"
            if is_target:
                row += f" {_num(r.get('retained'))}{flag} |"
            row += f" {describe.get(fam, '')} |"
            lines.append(row)
        lines.append("")
        if is_target:
            if summ.get("worst_retained") is not None:
                lines.append(
                    f"Worst family: **{summ.get('worst_family')}** (retained removal {_num(summ['worst_retained'])}); "
                    f"mean retained removal over {summ.get('families')} families: {_num(summ.get('mean_retained'))}."
                )
            else:
                lines.append(
                    "Retained removal is undefined: "
                    + (summ.get("note") or "no family could be summarised")
                    + ". The per-family accuracies above are still what was measured."
                )
            verdict = _verdict(metrics)
            if verdict is not None:
                lines += ["", f"**Verdict: {verdict['sentence']}.** {verdict['rule']}"]
            lines.append("")
    return lines


def _export(metrics: Mapping) -> list[str]:
    exp = metrics.get("export") or {}
    lines = ["## Export check", ""]
    if not exp:
        return lines + ["The export information was not recorded.", ""]
    lines.append(
        f"The edit is merged into the weights (fp32 arithmetic), saved as safetensors with dtype `{exp.get('dtype')}`"
        f" ({len(exp.get('files') or [])} file(s) in all); this folder loads with plain `transformers`:"
    )
    lines += [
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("<this repo or folder>")',
        "```",
        "",
    ]
    diff = exp.get("max_abs_logit_diff")
    if diff is None:
        lines.append("The reload check was not run (`export.verify: false`).")
    else:
        tol = exp.get("tolerance")
        s = f"Reloaded from disk, the export's logits differ from the edited model's by at most {_num(diff)} (max |Δlogit|"
        s += (
            f", tolerance {_num(tol)})."
            if tol is not None
            else "; no tolerance applies to a reduced-precision export)."
        )
        lines.append(s)
    if exp.get("tied_embeddings") is not None:
        lines.append(f"Input/output embeddings tied: {'yes' if exp['tied_embeddings'] else 'no'}.")
    lines.append("")
    return lines


def _reproduce(recipe: Mapping, metrics: Mapping, recipe_text: str | None) -> list[str]:
    name = recipe.get("name", "run")
    h = metrics.get("recipe_hash", "")
    repo = (recipe.get("push") or {}).get("repo_id")
    lines = ["## Reproduce", ""]
    lines.append(
        f"The resolved recipe (every default filled in, hash `{h}`) is embedded in this repository as "
        "`editkit/recipe.yaml`, next to the edit artifact (`editkit/edit.json` + tensors):"
    )
    lines += ["", "```bash", f"pip install editkit=={metrics.get('editkit_version') or __version__}"]
    if repo:
        lines.append(f"hf download {repo} editkit/recipe.yaml --local-dir .")
    lines += [f"editkit apply editkit/recipe.yaml --out runs/{name}", "```", ""]
    local = [
        s
        for s in _data_sources(recipe) + [str((recipe.get("model") or {}).get("id", ""))]
        if _looks_like_path(s)
    ]
    if local:
        lines.append(
            "The recipe names local files, which must exist at the same paths: "
            + ", ".join(f"`{s}`" for s in dict.fromkeys(local))
            + "."
        )
    lines.append(
        "To apply the same edit to the base weights without refitting: "
        "`Edit.load('editkit').merge_into(model)` (`from editkit.edit import Edit`)."
    )
    lines += ["", f"### Recipe (resolved, hash `{h}`)", "", "```yaml"]
    text = recipe_text if recipe_text else yaml.safe_dump(dict(recipe), sort_keys=False, allow_unicode=True)
    lines += [text.rstrip("\n").replace("```", "'''"), "```", ""]
    return lines


def _limitations(recipe: Mapping, metrics: Mapping) -> list[str]:
    ev = recipe.get("eval") or {}
    items = [
        "Evaluation sets are small (tens to a few hundred items): differences of a few points are within noise.",
        "Measured only in the prompt formats listed above"
        + (" and the paraphrase families in the robustness table" if metrics.get("robustness") else "")
        + "; other phrasings, languages, chat formats or multi-step use were not tested.",
        "The capability may be re-learnable: a short fine-tune on a few examples usually restores removed behaviour.",
        "Pairwise accuracy compares two given answers; it does not show what the model generates freely.",
        "General ability is measured by perplexity, held-out capabilities"
        + (" and BLiMP" if "blimp_accuracy" in (metrics.get("base") or {}) else "")
        + " only; abilities not measured may have changed.",
    ]
    if not ev.get("control", True) or not metrics.get("control"):
        items.append(
            "No random-edit control was run, so the cost is not compared with an edit of the same size."
        )
    return ["## Limitations", "", *[f"- {s}" for s in items], ""]


def _provenance(recipe: Mapping, metrics: Mapping, run_id: str | None) -> list[str]:
    rows = [
        ("editkit", metrics.get("editkit_version") or __version__),
        ("recipe hash", metrics.get("recipe_hash")),
        ("run", run_id),
        ("base model", metrics.get("base_model") or metrics.get("model")),
        ("license", metrics.get("license") or "unknown (not recorded by the base model)"),
        ("seed", recipe.get("seed")),
        ("fit time (s)", metrics.get("fit_seconds")),
        ("total time (s)", metrics.get("total_seconds")),
    ]
    lines = ["## Provenance", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows if v is not None]
    lines.append("")
    lines.append(f"Card written by editkit {__version__}.")
    return lines + [""]


# ------------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------------


def render_card(
    recipe: Mapping,
    metrics: Mapping,
    *,
    recipe_text: str | None = None,
    plots: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> str:
    """The full README.md text (front matter + body). Pure: no files read or written.

    ``recipe_text``: the saved resolved recipe to embed verbatim (default: dump ``recipe``); ``plots``: kind →
    path relative to the card (``layer_delta_norms``, ``heads_heatmap``, ``neurons_per_layer``,
    ``refusal_layers``).
    """
    from huggingface_hub import ModelCard, ModelCardData

    plots = plots or {}
    meta = front_matter(recipe, metrics)
    cap = capability_of(recipe)
    base = metrics.get("base_model") or metrics.get("model") or (recipe.get("model") or {}).get("id")
    title = (recipe.get("push") or {}).get("repo_id") or recipe.get("name", "edited model")
    verb = "with" if _installs(recipe) else "without"
    verdict = None if _installs(recipe) else _verdict(metrics)
    if verdict is not None and not verdict["removed"]:  # the rule in editkit.robustness.REMOVAL_RULE
        verb = "with weakened" if verdict["status"] != "not_removed" else "with (not removed)"
    body = [
        f"# {title}",
        "",
        f"`{base}` {verb} **{cap}**, made by [editkit](#reproduce) "
        f"(method `{(recipe.get('method') or {}).get('name')}`).",
        "",
    ]
    if recipe.get("description"):
        body += [str(recipe["description"]), ""]
    body += _what_removed(recipe, metrics)
    body += _method_section(recipe, metrics)
    body += _where_section(recipe, metrics, plots)
    body += _before_after(recipe, metrics)
    body += _robustness(metrics)
    body += _export(metrics)
    body += _reproduce(recipe, metrics, recipe_text)
    body += _limitations(recipe, metrics)
    body += _provenance(recipe, metrics, run_id)
    header = ModelCardData(**meta).to_yaml()  # the same dict re-parsed: model-index must survive the trip
    text = f"---\n{header}\n---\n\n" + "\n".join(body).rstrip() + "\n"
    card = ModelCard(text, ignore_metadata_errors=False)  # parses the YAML back; raises if malformed
    n_built = sum(len(r["metrics"]) for m in meta.get("model-index", []) for r in m["results"])
    if len(card.data.eval_results or []) != n_built:  # pragma: no cover - a huggingface_hub regression
        raise OutputError(f"model card: model-index lost results on re-parsing ({n_built} written)")
    return scrub_secrets(text)


def _plot_layer_norms(per_layer: list[float], other: float, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.22 * len(per_layer) + 2), 3.2))
    ax = fig.add_subplot()
    ax.bar(range(len(per_layer)), per_layer, color="#3b6ea8")
    ax.set_xlabel("layer")
    ax.set_ylabel("‖ΔW‖_F")
    ax.set_title(title + (f" (embeddings/other: {other:.3g})" if other > 0 else ""), fontsize=9)
    ax.set_xlim(-0.6, len(per_layer) - 0.4)
    _integer_ticks(ax.xaxis)
    fig.tight_layout()
    _save(fig, path)


def _plot_heads(coef: list[list[float]], chosen: list, path: Path, title: str) -> None:
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    values = np.asarray(coef, dtype=float)
    lim = float(np.abs(values).max()) or 1.0
    n_layers, n_heads = values.shape
    fig = Figure(figsize=(max(4.0, 0.45 * n_heads + 2), max(3.0, 0.22 * n_layers + 1)))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    for li, h in chosen:
        ax.add_patch(Rectangle((h - 0.5, li - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    _integer_ticks(ax.xaxis, ax.yaxis)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    _save(fig, path)


def _plot_counts(counts: list[float], path: Path, title: str, ylabel: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.22 * len(counts) + 2), 3.2))
    ax = fig.add_subplot()
    ax.bar(range(len(counts)), counts, color="#8a5a9e")
    _integer_ticks(ax.xaxis, ax.yaxis)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _plot_refusal(scores: Mapping[str, Mapping], chosen: Any, path: Path) -> None:
    from matplotlib.figure import Figure

    layers = sorted(int(k) for k in scores)
    lo = [scores[str(li)].get("refusal_log_odds") for li in layers]
    kl = [scores[str(li)].get("kl") for li in layers]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    ax.plot(layers, lo, marker="o", color="#b03a2e", label="refusal log-odds")
    ax.set_xlabel("candidate layer")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel("refusal log-odds")
    ax2 = ax.twinx()
    ax2.plot(layers, kl, marker="s", color="#2e86c1", label="harmless KL")
    ax2.set_ylabel("harmless KL")
    if chosen is not None:
        ax.axvline(int(chosen), color="black", ls="--", lw=1)
    ax.set_title("refusal direction ablated at each candidate layer", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _integer_ticks(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for a in axes:
        a.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> None:
    """PNG written next to its final name, then renamed (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.stem, suffix=".png.tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_plots(run_dir: Path, metrics: Mapping, model_dir: Path) -> dict[str, str]:
    """Draw the card's PNGs into ``<model_dir>/editkit/plots``; returns kind → path relative to the card."""
    out = model_dir / PLOTS_DIR
    plots: dict[str, str] = {}
    info = (metrics.get("edit") or {}).get("info") or {}
    norms = metrics.get("edit_norms") or {}
    if norms:
        per_layer, other = layer_norms(norms, (metrics.get("anatomy") or {}).get("n_layers"))
        _plot_layer_norms(per_layer, other, out / "layer_delta_norms.png", "weight change per layer")
        plots["layer_delta_norms"] = f"{PLOTS_DIR}/layer_delta_norms.png"
    coef = info.get("coefficients")
    if coef and isinstance(coef, list) and all(isinstance(r, list) and r for r in coef):
        title = f"heads: {info.get('coefficient_meaning') or 'per-head score'}"
        _plot_heads(coef, info.get("heads") or [], out / "heads_heatmap.png", title)
        plots["heads_heatmap"] = f"{PLOTS_DIR}/heads_heatmap.png"
    else:
        saved = [Path(p) for p in (info.get("heatmap"), run_dir / "heads_heatmap.png") if p]
        for p in saved:
            if p.is_file():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, out / "heads_heatmap.png")
                plots["heads_heatmap"] = f"{PLOTS_DIR}/heads_heatmap.png"
                break
    if isinstance(info.get("per_layer"), list) and info.get("neurons"):
        _plot_counts(
            info["per_layer"], out / "neurons_per_layer.png", "capability neurons per layer", "neurons"
        )
        plots["neurons_per_layer"] = f"{PLOTS_DIR}/neurons_per_layer.png"
    if isinstance(info.get("layer_scores"), dict) and info["layer_scores"]:
        _plot_refusal(info["layer_scores"], info.get("layer"), out / "refusal_layers.png")
        plots["refusal_layers"] = f"{PLOTS_DIR}/refusal_layers.png"
    return plots


def _load_run(run_dir: Path) -> tuple[dict, dict, str]:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise OutputError(f"{run_dir}: not an editkit run directory")
    mpath = run_dir / "metrics.json"
    if not mpath.exists():
        raise OutputError(f"{run_dir}: has no metrics.json (the run did not get far enough)")
    rpath = run_dir / "recipe.yaml"
    if not rpath.exists():
        raise OutputError(f"{run_dir}: has no recipe.yaml")
    try:
        text = rpath.read_text(encoding="utf-8")
        recipe = yaml.safe_load(text)
        metrics = json.loads(mpath.read_text(encoding="utf-8"))
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise OutputError(f"{run_dir}: unreadable recipe.yaml or metrics.json ({type(e).__name__})") from None
    if not isinstance(recipe, dict) or not isinstance(metrics, dict):
        raise OutputError(f"{run_dir}: recipe.yaml or metrics.json is not a mapping")
    return recipe, metrics, text


def write_card(run_dir: str | Path) -> Path:
    """Write ``<export>/README.md`` (and ``<export>/editkit/plots/*.png``) for a finished run; returns the path."""
    run_dir = Path(run_dir)
    recipe, metrics, recipe_text = _load_run(run_dir)
    model_dir = Path(metrics.get("export", {}).get("path") or run_dir / "model")
    if not model_dir.is_dir():
        raise OutputError(f"{run_dir}: has no exported model folder ({model_dir})")
    if not (metrics.get("edit") or {}).get("info"):  # older metrics: the artifact still says where
        ej = run_dir / "edit" / "edit.json"
        if ej.exists():
            try:
                metrics.setdefault("edit", {})["info"] = json.loads(ej.read_text()).get("info") or {}
            except json.JSONDecodeError:
                pass
    if metrics.get("base_model") and Path(str(metrics["base_model"])).expanduser().exists():
        metrics["base_model"] = None  # a local folder, not a Hub id, even if it looks like owner/name
    plots = make_plots(run_dir, metrics, model_dir)
    text = render_card(recipe, metrics, recipe_text=recipe_text, plots=plots, run_id=run_dir.name)
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".README.", suffix=".md.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, model_dir / "README.md")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model_dir / "README.md"
