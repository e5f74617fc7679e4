"""The run record: what ``metrics.json`` holds, as one pydantic model.

``metrics.json`` is the contract between the stages of a run and everything that reads a run afterwards (the
card, push, re-export, ``editkit eval``). It is written and read through :class:`RunRecord`: every stage's
section has a declared type, an unknown top-level key is an error (a typo, or a key two stages both write),
and an old or foreign file either loads or fails in one line naming the field. The schema page
``docs/metrics.md`` is generated from this module (``python -m editkit.run.record > docs/metrics.md``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Number = float | int | None
#: a phase's measurements: metric name → number (target accuracy, perplexity, held-out/<name>, drift_kl and
#: what the method's own ``evaluate`` adds); a few methods report a list or a table per metric
PhaseMetrics = dict[str, Number | bool | str | list[Any] | dict[str, Any]]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenSection(BaseModel):
    """A section whose inner keys belong to the code that writes it (documented there)."""

    model_config = ConfigDict(extra="allow")


class Revision(_Section):
    commit: str | None = Field(None, description="git commit of the editkit source that ran")
    dirty: bool | None = Field(None, description="whether that source had uncommitted changes")
    url: str | None = Field(None, description="the repository it came from")


class EditSummary(_Section):
    method: str = Field(description="the method that made the edit")
    modules: int = Field(description="how many modules the edit changes")
    info: dict[str, Any] = Field(
        default_factory=dict, description="the method's typed info (its report model)"
    )


class Generation(_OpenSection):
    prompt: str = Field(
        description="a target prompt; the other keys are phases (base, edited, control) → text"
    )


class Comparison(_Section):
    metrics: PhaseMetrics = Field(description="the comparison edit's evaluation, as a phase")
    info: dict[str, Any] = Field(default_factory=dict, description="what the comparison edit is")
    generations: bool = Field(
        True, description="whether it was evaluated with generations (eval.comparison_generations)"
    )


class ExportRecord(_OpenSection):
    path: str | None = Field(
        None, description="the exported folder, relative to the run directory where inside it"
    )
    dtype: str | None = Field(None, description="dtype of the exported weights")
    files: Any = Field(None, description="the files written")
    streaming: bool | None = Field(None, description="shard-streamed merge (true) or in-memory (false)")


class RunRecord(BaseModel):
    """``metrics.json``: one object, one key per section; a section appears once its stage has run."""

    model_config = ConfigDict(extra="forbid")

    recipe_hash: str | None = Field(None, description="hash of the resolved recipe")
    editkit_version: str | None = Field(None, description="editkit's version")
    editkit_revision: Revision | None = Field(None, description="the editkit source that ran")
    model: str | None = Field(None, description="the recipe's model id")
    base_model: str | None = Field(None, description="Hub id of the base model (card front matter), or null")
    weights: str | None = Field(None, description="where the base weights came from, in words")
    license: str | None = Field(None, description="the base model's licence")
    method: str | None = Field(None, description="the recipe's method")
    method_paper: str | None = Field(None, description="the paper the method follows")
    anatomy: dict[str, Any] | None = Field(
        None, description="layers, heads, MLP sizes (editkit.model.anatomy)"
    )
    base: PhaseMetrics | None = Field(None, description="stage eval_base: the base model's measurements")
    base_eval_cache: dict[str, Any] | None = Field(
        None, description="what the refusal base-evaluation cache did"
    )
    base_phase_cache: dict[str, Any] | None = Field(
        None,
        description="what the base phase cache did, per measurement (suite, "
        "check:<name>): {status: hit | stored | not stored | unavailable, key}",
    )
    generations: list[Generation] | None = Field(
        None,
        description="the greedy generations suite part (editkit.eval.parts.generations): a row per prompt, "
        "{prompt, base, edited}",
    )
    fit_seconds: float | None = Field(None, description="stage fit: seconds")
    edit: EditSummary | None = Field(None, description="stage fit: the edit")
    edit_norms: dict[str, float] | None = Field(None, description="per edited module: ‖ΔW‖ (Frobenius)")
    edited: PhaseMetrics | None = Field(
        None, description="stage eval_edited: the edited model's measurements"
    )
    comparisons: dict[str, Comparison] | None = Field(
        None, description="edits fitted beside it, evaluated alike"
    )
    control: PhaseMetrics | None = Field(None, description="stage control: the random edit's measurements")
    control_edit: dict[str, Any] | None = Field(None, description="what the random control edit is")
    robustness: dict[str, Any] | None = Field(
        None,
        description="runs written before robustness became a removal check (now checks.robustness): the "
        "family reports per set; read by the card as that check",
    )
    checks: dict[str, Any] | None = Field(
        None, description="stage checks: checks.<name> {spec, phases, judge, seconds}; checks.verdict"
    )
    lm_eval: dict[str, Any] | None = Field(None, description="lm-evaluation-harness results per phase")
    routing: dict[str, Any] | None = Field(
        None, description="router statistics per phase (mixtures of experts)"
    )
    export: ExportRecord | None = Field(None, description="stage export: what was written and checked")
    push: dict[str, Any] | None = Field(None, description="stage push: the Hub commit")
    samples: dict[str, Any] | None = Field(
        None, description="refusal generations per phase (read for the card)"
    )
    total_seconds: float | None = Field(None, description="the whole run, seconds")


def _where(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = (
        "unknown field (written by another editkit version?)"
        if err["type"] == "extra_forbidden"
        else err["msg"]
    )
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{loc}: {msg}{more}"


def validate_record(metrics: dict, source: str = "metrics.json") -> RunRecord:
    """The record for ``metrics``; a ``ValueError`` of one line naming ``source`` and the field otherwise."""
    try:
        return RunRecord.model_validate(metrics)
    except ValidationError as e:
        raise ValueError(f"{source}: {_where(e)}") from None


def schema_markdown() -> str:
    """docs/metrics.md: every section of metrics.json with its type and meaning."""
    lines = [
        "# metrics.json",
        "",
        "Generated from `editkit/run/record.py` (`python -m editkit.run.record > docs/metrics.md`); every run's",
        "`metrics.json` is written and read through this model. A section appears once its stage has run; an",
        "unknown key is an error. Stage order: [events.md](events.md).",
        "",
        "| key | type | what |",
        "| --- | --- | --- |",
    ]
    for name, f in RunRecord.model_fields.items():
        typ = re.sub(r"\b(?:__main__|editkit\.run\.record|typing)\.", "", str(f.annotation)).replace(
            "|", "\\|"
        )
        lines.append(f"| `{name}` | `{typ}` | {f.description or ''} |")
    for model in (Revision, EditSummary, Generation, Comparison, ExportRecord):
        lines += [
            "",
            f"## {model.__name__}",
            "",
            (model.__doc__ or "").strip(),
            "",
            "| key | what |",
            "| --- | --- |",
        ]
        lines += [f"| `{n}` | {f.description or ''} |" for n, f in model.model_fields.items()]
    return "\n".join(line for line in lines) + "\n"


if __name__ == "__main__":
    print(schema_markdown(), end="")
