"""The card's closing sections, what a user of the released model needs beyond the numbers: the export
check (how it was written and reloaded, the GGUF files), how to reproduce it (the embedded recipe), its
limitations and its provenance (versions, commit, hash, seed, times). Method-independent, like
``editkit.publish.card_sections``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from editkit import __version__
from editkit.eval.checks.robustness import robustness_reports
from editkit.eval.parts import PARTS
from editkit.methods.report import num
from editkit.publish.card_meta import data_sources, looks_like_path
from editkit.run.provenance import install_command


def export(metrics: Mapping) -> list[str]:
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
        s = f"Reloaded from disk, the export's logits differ from the edited model's by at most {num(diff)} (max |Δlogit|"
        s += (
            f", tolerance {num(tol)})."
            if tol is not None
            else "; no tolerance applies to a reduced-precision export)."
        )
        lines.append(s)
    if exp.get("tensors_identical"):
        lines.append(
            f"All {exp['tensors_identical']} exported tensors are bit-identical to the merged in-memory model's "
            f"(reload checked in {exp.get('checked_dtype')} on {exp.get('checked_device')})."
        )
    if exp.get("tied_embeddings") is not None:
        lines.append(f"Input/output embeddings tied: {'yes' if exp['tied_embeddings'] else 'no'}.")
    lines += _gguf_lines(exp.get("gguf") or {})
    lines.append("")
    return lines


def _gguf_lines(g: Mapping | list) -> list[str]:
    """Every GGUF file for llama.cpp / Ollama / LM Studio the export wrote (a dict in runs before several
    types could be asked for), with its size and round-trip check."""
    files = [g] if isinstance(g, Mapping) else list(g)
    files = [f for f in files if f.get("file")]
    if not files:
        return []
    lines = [
        "",
        "**GGUF** (the same edited weights for llama.cpp, Ollama and LM Studio, with the tokenizer and chat "
        f"template; e.g. `llama-cli -m {files[0]['file']}`):",
        "",
        "| file | type | size | made by | loaded back with transformers: max \\|Δlogit\\| (bound) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in files:
        size = f"{f['bytes'] / 2**20:.1f} MiB" if f.get("bytes") else "not recorded"
        by = "llama.cpp's quantiser, from the f16 file" if f.get("f16_seconds") is not None else "editkit"
        check = "not checked"
        if f.get("max_abs_logit_diff") is not None:
            check = f"{num(f['max_abs_logit_diff'])} ({num(f.get('bound'))}); token ids identical"
        lines.append(f"| `{f['file']}` | {f.get('type')} | {size} | {by} | {check} |")
    lines += [
        "",
        "Each file was loaded back with transformers (`gguf_file=`) and compared with the safetensors export on "
        "probe prompts and a chat-templated prompt; the bound is a share of the largest logit per type.",
    ]
    return lines


def reproduce(recipe: Mapping, metrics: Mapping, recipe_text: str | None) -> list[str]:
    name = recipe.get("name", "run")
    h = metrics.get("recipe_hash", "")
    repo = (recipe.get("push") or {}).get("repo_id")
    lines = ["## Reproduce", ""]
    lines.append(
        f"The resolved recipe (every default filled in, hash `{h}`) is embedded in this repository as "
        "`editkit/recipe.yaml`, next to the edit artifact (`editkit/edit.json` + tensors):"
    )
    lines += ["", "```bash", *install_command(metrics.get("editkit_revision"))]
    if repo:
        lines.append(f"hf download {repo} editkit/recipe.yaml --local-dir .")
    lines += [f"editkit apply editkit/recipe.yaml --out runs/{name}", "```", ""]
    local = [
        s
        for s in data_sources(recipe) + [str((recipe.get("model") or {}).get("id", ""))]
        if looks_like_path(s)
    ]
    if local:
        lines.append(
            "The recipe names local files, which must exist at the same paths: "
            + ", ".join(f"`{s}`" for s in dict.fromkeys(local))
            + "."
        )
    lines.append(
        "To apply the same edit to the base weights without refitting: "
        "`Edit.load('editkit').merge_into(model)` (`from editkit.edit.edit import Edit`)."
    )
    lines += ["", f"### Recipe (resolved, hash `{h}`)", "", "```yaml"]
    text = recipe_text if recipe_text else yaml.safe_dump(dict(recipe), sort_keys=False, allow_unicode=True)
    lines += [text.rstrip("\n").replace("```", "'''"), "```", ""]
    return lines


def general_ability(base: Mapping) -> str:
    """What the suite measured of general ability, from the parts that say they measure it."""
    words = [p.ability for p in PARTS.values() if p.ability and p.measured(base)]
    if not words:
        return "General ability was not measured; it may have changed."
    said = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"General ability is measured by {said} only; abilities not measured may have changed."


def limitations(recipe: Mapping, metrics: Mapping) -> list[str]:
    ev = recipe.get("eval") or {}
    items = [
        "Evaluation sets are small (tens to a few hundred items): differences of a few points are within noise.",
        "Measured only in the prompt formats listed above"
        + (" and the paraphrase families in the robustness table" if robustness_reports(metrics) else "")
        + "; other phrasings, languages, chat formats or multi-step use were not tested.",
        "The capability may be re-learnable: a short fine-tune on a few examples usually restores removed behaviour.",
        "Pairwise accuracy compares two given answers; it does not show what the model generates freely.",
        general_ability(metrics.get("base") or {}),
    ]
    if not ev.get("control", True) or not metrics.get("control"):
        items.append(
            "No random-edit control was run, so the cost is not compared with an edit of the same size."
        )
    return ["## Limitations", "", *[f"- {s}" for s in items], ""]


def _commit_cell(rev: Any) -> str | None:
    if not isinstance(rev, Mapping) or not rev.get("commit"):
        return None
    return f"`{rev['commit']}`" + (" (with uncommitted changes)" if rev.get("dirty") else "")


def provenance(recipe: Mapping, metrics: Mapping, run_id: str | None) -> list[str]:
    rows = [
        ("editkit", metrics.get("editkit_version") or __version__),
        ("editkit commit", _commit_cell(metrics.get("editkit_revision"))),
        ("recipe hash", metrics.get("recipe_hash")),
        ("run", run_id),
        ("base model", metrics.get("base_model") or metrics.get("model")),
        ("weights", metrics.get("weights")),
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
