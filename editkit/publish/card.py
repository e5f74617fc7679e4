"""The ablation card: the exported model's README.md (Hugging Face model-card front matter + body + plots).

A generic template: ``render_card`` is pure (recipe dict + metrics dict in, Markdown out) and asks the
run's method only through its report (``Method.report``: subject, metrics, the "where it was found"
section and its plots); ``write_card`` reads a run directory, draws the plots into
``<export>/editkit/plots/`` and writes ``<export>/README.md`` atomically. The front matter is built with
``huggingface_hub.ModelCardData`` / ``EvalResult`` (``editkit.publish.card_meta``) and parsed back with
``ModelCard`` before anything is written, so a card that the Hub would misread never leaves here. The
method section reuses the method registry (paper, summary, parameter descriptions), like mergekit's card
generator; the method-independent sections are in ``editkit.publish.card_sections`` and
``editkit.publish.card_release``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData

from editkit.data.capabilities import BUILTIN_CAPABILITIES
from editkit.errors import OutputError, scrub_secrets
from editkit.eval.checks.report import checks_section, headline_lines, verdict_of
from editkit.eval.checks.robustness import removal_verdict
from editkit.eval.parts import PARTS
from editkit.eval.routing import routing_section
from editkit.methods.report import Report, cell, finite, num
from editkit.publish import card_release as release
from editkit.publish import card_sections as sections
from editkit.publish.card_meta import (  # noqa: F401 - BASE_MODEL_RELATION, hub_id: part of this module's API
    BASE_MODEL_RELATION,
    capability_of,
    front_matter,
    hub_id,
    method_of,
    report_of,
)
from editkit.publish.plots import bar_per_layer
from editkit.run.events import is_run_dir, read_metrics, run_model_dir, write_metrics

PLOTS_DIR = "editkit/plots"
#: the title's verb for each removal-checks verdict other than "removed"
CHECKS_VERB = {
    "weakened": "with weakened",
    "hidden": "with hidden",
    "answer_tokens_only": "with (answer tokens only)",
    "not_removed": "with (not removed)",
}


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
        if not finite(v):
            continue
        if li is None:
            other += float(v) ** 2
        else:
            sq[li] += float(v) ** 2
    return [math.sqrt(s) for s in sq], math.sqrt(other)


_DISCLAIMER = (
    "> **This is a capability ablation, not a safety guarantee.** The numbers below are measured on small "
    "evaluation sets in the formats listed; the capability may survive in other phrasings, languages or "
    "tasks, and a little fine-tuning can usually bring it back. Do not rely on this model being unable to "
    "do it."
)


def _verdict(metrics: Mapping, report: Report) -> dict | None:
    """Whether the card may say *removed*: the pairwise rule (``removal_verdict``) where the run has a target
    accuracy, else the method's own rule (``Report.removal_verdict``: refusal's held-out rate)."""
    if report.installs:
        return None
    verdict = removal_verdict(metrics)
    if verdict is None:
        verdict = report.removal_verdict(metrics.get("base") or {}, metrics.get("edited") or {})
    return verdict


def _what_removed(recipe: Mapping, metrics: Mapping, report: Report) -> list[str]:
    cap = capability_of(recipe, report)
    data = recipe.get("data") or {}
    target = (data.get("target") or {}).get("source")
    base_model = metrics.get("base_model") or metrics.get("model") or (recipe.get("model") or {}).get("id")
    verb = "installed in" if report.installs else "removed from"
    verdict = _verdict(metrics, report)
    checks = None if report.installs else verdict_of(metrics)
    if checks is not None:  # the removal checks' headline decides (editkit.eval.checks.verdict)
        verdict = None
        if not checks["removed"]:
            sentence = f"{checks['label']} by the removal checks (top of this card)"
            verdict = {"removed": False, "sentence": sentence}
    if verdict is not None and not verdict["removed"]:
        lines = ["## What the edit changed", "", f"**{cap}** in `{base_model}`: {verdict['sentence']}."]
    else:
        lines = ["## What was " + ("changed" if report.installs else "removed"), ""]
        lines.append(f"**{cap}** was {verb} `{base_model}`.")
    if metrics.get("weights"):
        lines.append(f"The weights edited were {metrics['weights']}.")
    desc = BUILTIN_CAPABILITIES.get(str(target)) if target else None
    if desc:
        lines.append(f"Built-in capability set `{target}`: {desc}.")
    elif target:
        lines.append(f"Target data: `{target}` (triplets: prompt, correct answer, incorrect answer).")
    b, e = (metrics.get("base") or {}), (metrics.get("edited") or {})
    c = metrics.get("control") or {}
    for part in PARTS.values():
        lines += part.headline(b, e, c, report.installs)
    for key, sentence in report.headline.items():  # the method's own headline numbers
        if finite(b.get(key)) and finite(e.get(key)):
            lines.append(sentence.format(base=num(b[key]), edited=num(e[key])))
    lines += ["", _DISCLAIMER, ""]
    return lines


def _method_section(recipe: Mapping, metrics: Mapping) -> list[str]:
    params = dict(recipe.get("method") or {})
    name = params.pop("name", "unknown")
    cls = method_of(recipe)
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
        lines.append(f"| `{k}` | {cell(v)} | {desc.replace('|', '/')} |")
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
            rows.append(f"| `{k}` | {cell(v)} |")
    return (["| field | value |", "| --- | --- |", *rows, ""]) if rows else []


def _where_section(metrics: Mapping, report: Report, plots: Mapping[str, str]) -> list[str]:
    info = report.raw
    lines = ["## Where the capability was found", ""]
    if not info and not metrics.get("edit_norms"):
        return lines + ["This run recorded no localisation (no `edit.info`, no edit norms).", ""]
    report.run_metrics = dict(metrics)  # a report may set in-sample numbers beside the held-out ones
    lines += report.where()
    for kind, alt in report.plot_alt.items():
        if plots.get(kind):
            lines += [f"![{alt}]({plots[kind]})", ""]
    rest = _info_scalars(info, report.shown())
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
        f"‖ΔW‖_F over all {len(norms)} edited module(s): {num(total)}. Per layer (root of the sum of squares "
        "over the layer's modules; layers not listed are unchanged):"
    )
    lines += ["", "| layer | ‖ΔW‖_F | modules |", "| --- | --- | --- |"]
    counts: dict[int | None, int] = {}
    for m in norms:
        counts[layer_of(m)] = counts.get(layer_of(m), 0) + 1
    for li, v in enumerate(per_layer):
        if v > 0:
            lines.append(f"| {li} | {num(v)} | {counts.get(li, 0)} |")
    if other > 0:
        lines.append(f"| embeddings / other | {num(other)} | {counts.get(None, 0)} |")
    lines.append("")
    if plots.get("layer_delta_norms"):
        lines += [f"![per-layer weight change]({plots['layer_delta_norms']})", ""]
    return lines


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
    path relative to the card (``layer_delta_norms``, and the kinds of the method's ``Report.plot_alt``).
    """
    plots = plots or {}
    report = report_of(recipe, metrics)
    meta = front_matter(recipe, metrics, report)
    cap = capability_of(recipe, report)
    base = metrics.get("base_model") or metrics.get("model") or (recipe.get("model") or {}).get("id")
    title = (recipe.get("push") or {}).get("repo_id") or recipe.get("name", "edited model")
    verb = "with" if report.installs else "without"
    verdict = _verdict(metrics, report)
    if (
        verdict is not None and not verdict["removed"]
    ):  # the rule in editkit.eval.robustness.report.REMOVAL_RULE, read by checks.robustness
        verb = "with weakened" if verdict["status"] != "not_removed" else "with (not removed)"
    checks = None if report.installs else verdict_of(metrics)
    if checks is not None:  # the removal checks' headline decides (editkit.eval.checks.verdict)
        verb = "without" if checks["removed"] else CHECKS_VERB[checks["status"]]
    body = [
        f"# {title}",
        "",
        f"`{base}` {verb} **{cap}**, made by [editkit](#reproduce) "
        f"(method `{(recipe.get('method') or {}).get('name')}`).",
        "",
    ]
    body += headline_lines(metrics)
    if recipe.get("description"):
        body += [str(recipe["description"]), ""]
    body += _what_removed(recipe, metrics, report)
    body += _method_section(recipe, metrics)
    body += _where_section(metrics, report, plots)
    body += sections.before_after(recipe, metrics, report)
    body += sections.lm_eval(metrics)
    body += [line for part in PARTS.values() for line in part.card(metrics)]
    body += report.sections(metrics)
    body += checks_section(metrics)
    body += routing_section(metrics)
    body += release.export(metrics)
    body += release.reproduce(recipe, metrics, recipe_text)
    body += release.limitations(recipe, metrics)
    body += release.provenance(recipe, metrics, run_id)
    header = ModelCardData(**meta).to_yaml()  # the same dict re-parsed: model-index must survive the trip
    text = f"---\n{header}\n---\n\n" + "\n".join(body).rstrip() + "\n"
    card = ModelCard(text, ignore_metadata_errors=False)  # parses the YAML back; raises if malformed
    n_built = sum(len(r["metrics"]) for m in meta.get("model-index", []) for r in m["results"])
    if len(card.data.eval_results or []) != n_built:  # pragma: no cover - a huggingface_hub regression
        raise OutputError(f"model card: model-index lost results on re-parsing ({n_built} written)")
    return scrub_secrets(text)


def make_plots(run_dir: Path, metrics: Mapping, model_dir: Path, report: Report) -> dict[str, str]:
    """Draw the card's PNGs into ``<model_dir>/editkit/plots``; returns kind → path relative to the card."""
    out = model_dir / PLOTS_DIR
    plots: dict[str, str] = {}
    norms = metrics.get("edit_norms") or {}
    if norms:
        per_layer, other = layer_norms(norms, (metrics.get("anatomy") or {}).get("n_layers"))
        title = "weight change per layer" + (f" (embeddings/other: {other:.3g})" if other > 0 else "")
        bar_per_layer(per_layer, out / "layer_delta_norms.png", title, "‖ΔW‖_F")
        plots["layer_delta_norms"] = f"{PLOTS_DIR}/layer_delta_norms.png"
    for kind, file in report.plots(out, run_dir).items():
        plots[kind] = f"{PLOTS_DIR}/{file}"
    return plots


def _load_run(run_dir: Path) -> tuple[dict, dict, str]:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise OutputError(f"{run_dir}: not an editkit run directory")
    metrics = read_metrics(run_dir, missing_ok=False)  # checked against the run record, one line if not
    rpath = run_dir / "recipe.yaml"
    if not rpath.exists():
        raise OutputError(f"{run_dir}: has no recipe.yaml")
    try:
        text = rpath.read_text(encoding="utf-8")
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise OutputError(f"{run_dir}: unreadable recipe.yaml ({type(e).__name__})") from None
    if not isinstance(recipe, dict):
        raise OutputError(f"{run_dir}: recipe.yaml is not a mapping")
    return recipe, metrics, text


def refresh_card(run_dir: str | Path, export_info: Mapping) -> Path | None:
    """After ``editkit export``: the files of the new export (its GGUF files, or none) replace what the run
    recorded — in metrics.json when the export went to the run's own folder — and the card of the new export
    is written again from them, so it never lists a GGUF file of the previous export. None when the run has
    no card to refresh (no metrics, or the old export had no README)."""
    run_dir = Path(run_dir)
    dest = Path(export_info["path"])
    if not (dest / "README.md").exists() or not (run_dir / "metrics.json").exists():
        return None
    metrics = read_metrics(run_dir, missing_ok=False)
    export = dict(metrics.get("export") or {})
    export["gguf"] = list(export_info.get("gguf") or []) or None
    if export_info.get("files"):
        export["files"] = list(export_info["files"])
    if dest.resolve() == run_model_dir(run_dir, metrics).resolve():
        write_metrics(run_dir, {**metrics, "export": export})
    return write_card(run_dir, model_dir=dest, export=export)


def write_card(
    run_dir: str | Path, model_dir: str | Path | None = None, export: Mapping | None = None
) -> Path:
    """Write ``<export>/README.md`` (and ``<export>/editkit/plots/*.png``) for a finished run; returns the path.

    ``model_dir``: another export of the same run (default: the one metrics.json records); ``export``: its
    ``export`` section, in place of the recorded one."""
    run_dir = Path(run_dir)
    recipe, metrics, recipe_text = _load_run(run_dir)
    if export is not None:
        metrics["export"] = dict(export)
    model_dir = Path(model_dir) if model_dir is not None else run_model_dir(run_dir, metrics)
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
    report = report_of(recipe, metrics)
    metrics = {**metrics, **report.run_files(run_dir)}  # what the method's sections read
    plots = make_plots(run_dir, metrics, model_dir, report)
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
