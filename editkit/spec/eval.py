"""The recipe's ``eval`` block: ``EvalSpec`` (what is measured before and after the edit: the random control,
the refusal judge, the removal checks, the base-evaluation cache, and the fields of every registered suite
part — perplexity, BLiMP, drift, greedy generations ... — which each part declares in its own module,
``editkit/eval/parts/``) and ``LmEvalSpec`` (the optional lm-evaluation-harness tasks).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, create_model, field_validator, model_validator

from editkit.eval.checks import ChecksSpec, checks_spec, lift_legacy_fields
from editkit.eval.parts import PARTS
from editkit.spec.base import StrictModel


class LmEvalSpec(StrictModel):
    tasks: list[str] = Field(
        min_length=1,
        description="lm-eval task names (hellaswag, arc_easy, mmlu, wmdp_bio: data from the Hub), task YAML files, "
        "or editkit_capabilities (ships with editkit, offline)",
    )
    limit: int | None = Field(
        None, ge=1, description="at most this many documents per task (lm-eval's limit)"
    )
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples (default: each task's own)")
    batch_size: int | None = Field(
        None, ge=1, description="lm-eval batch size (default: eval.batch_size, or 16)"
    )
    include_path: list[str] = Field(
        default_factory=list, description="folders of your own lm-eval task YAMLs"
    )

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        v = [t.strip() for t in v]
        if not all(v):
            raise ValueError("task names must not be empty")
        if len(set(v)) != len(v):
            raise ValueError("a task is named twice")
        return v


class _EvalFields(StrictModel):
    batch_size: int | None = Field(
        None,
        ge=1,
        description="evaluation batch size; default 16 on CPU, on an accelerator as many as fit in half its "
        "free memory, up to 64",
    )
    max_items: int | None = Field(
        None,
        ge=1,
        description="cap on items per evaluated set: a seeded subset stratified by answer class (and "
        "answer-frame family where items have one), not the first N",
    )
    control: bool = Field(True, description="evaluate a random edit of the same size as a control")
    refusal_judge: str = Field(
        "markers",
        description="who decides that a response is a refusal: 'markers' (keywords), 'self' (the base model "
        "reads each response, loaded a second time) or a chat model (Hub id, folder, named model); with a "
        "model, metrics report both rates and their agreement",
    )
    lm_eval: LmEvalSpec | None = Field(
        None,
        description="also run lm-evaluation-harness tasks on the base, edited and control models "
        "(extra editkit[lm-eval]): {tasks: [...], limit: N, num_fewshot: K}",
    )
    checks: ChecksSpec | bool = Field(
        default_factory=lambda: checks_spec()(),
        description="removal checks on capability removals (base vs edited vs control): separation per answer "
        "frame, a linear probe, a relearning attack, 8-bit rounding, specificity near the target, paraphrase "
        "and answer-frame robustness; false = none, or each by name true/false/options (docs/checks.md)",
    )
    cache: bool = Field(
        True,
        description="reuse the base model's measurements (the evaluation suite, the removal "
        "checks' base phase, the refusal evaluation) made by an earlier run with "
        "the same weights, items, settings and editkit source; kept under $EDITKIT_HOME/eval-cache "
        "($EDITKIT_EVAL_CACHE), safe to delete",
    )
    comparison_generations: bool = Field(
        True,
        description="generate (refusal rates, judge) for the comparison edits fitted beside the edit too; "
        "false: no rule picks a comparison (the validation score already chose), so only what needs no "
        "generation (first-token KL, perplexity, drift) is measured for it and the card says so",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, v: Any) -> Any:  # eval fields of checks that were stages once (Check.legacy_fields)
        return lift_legacy_fields(v) if isinstance(v, dict) else v

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, v: Any) -> Any:  # against the checks registered now (plug-ins included)
        if v is True:
            return checks_spec()()
        return checks_spec().model_validate(v) if isinstance(v, dict) else v

    @field_validator("refusal_judge")
    @classmethod
    def _judge(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be 'markers', 'self' or a model id")
        return v.strip()


def _part_fields() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in PARTS.values():
        for name, spec in part.fields.items():
            if name in _EvalFields.model_fields or name in out:
                raise RuntimeError(f"suite part {part.name!r}: eval.{name} is declared twice")
            out[name] = spec
    return out


EvalSpec = create_model(
    "EvalSpec", __base__=_EvalFields, __module__=__name__, __doc__=_EvalFields.__doc__, **_part_fields()
)
