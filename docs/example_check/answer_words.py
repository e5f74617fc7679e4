"""A worked example of an evaluation added from outside editkit (docs/adding_an_evaluation.md): does the model
still answer in the target's answer frame at all?

Target accuracy can fall because the judgement is gone, or because the model stopped saying " bad"/" good"
(or " Paris"/" Rome") altogether and the two scored answers became equally unlikely. This check asks, for
each held-out target item, whether the model's most likely next token is the first token of one of the
item's two answers; the share of such items, base vs edited (vs the random control), is the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from editkit.eval.checks import Check, CheckData, CheckResult, CheckSpec, register_check
from editkit.eval.checks.base import fmt, present
from editkit.eval.subsets import stratified_subset


class AnswerWordsSpec(CheckSpec):
    """``eval.checks.answer_words``."""

    max_items: int = Field(64, ge=1, description="held-out target items asked (stratified by answer class)")
    max_drop: float = Field(0.2, ge=0, le=1, description="largest fall of the share that still passes")


@dataclass
class AnswerWordsResult(CheckResult):
    share: float  # items whose top next token starts one of their two answers
    n: int


def _first_token(tokenizer, text: str) -> int:
    return tokenizer(text, add_special_tokens=False)["input_ids"][0]


class AnswerWords(Check):
    name = "answer_words"
    title = "Answers in the frame"
    paper = "none (a worked example, docs/adding_an_evaluation.md)"
    spec_cls = AnswerWordsSpec

    def _items(self, data: CheckData, spec: AnswerWordsSpec) -> list[dict]:
        return stratified_subset(list(data.target_test), spec.max_items, data.seed)

    def units(self, data: CheckData, spec: AnswerWordsSpec) -> int:
        return len(self._items(data, spec))

    def run(self, phase, model, data, spec, *, on_units=None) -> AnswerWordsResult:
        tok, hits = data.tokenizer, 0
        items = self._items(data, spec)
        device = next(model.parameters()).device
        with torch.no_grad():
            for item in items:
                ids = tok(item["prompt"], return_tensors="pt")["input_ids"].to(device)
                top = int(model(input_ids=ids).logits[0, -1].argmax())
                hits += top in {_first_token(tok, item["correct"]), _first_token(tok, item["incorrect"])}
                if on_units is not None:
                    on_units(1)
        return AnswerWordsResult(share=hits / len(items) if items else 0.0, n=len(items))

    def judge(self, phases, spec):
        base, edited = (phases.get(p, {}).get("share") for p in ("base", "edited"))
        if base is None or edited is None:
            return {"pass": None, "summary": "not measured on base and edited"}
        drop = base - edited
        ok = drop <= spec.get("max_drop", AnswerWordsSpec().max_drop)
        return {"pass": ok, "drop": drop, "summary": f"answers in the frame {fmt(base)} → {fmt(edited)}"}

    def section(self, stored):
        phases = stored["phases"]
        rows = [f"| {p} | {fmt(phases[p]['share'])} | {phases[p]['n']} |" for p in present(phases)]
        return ["| phase | share answering in the frame | items |", "|---|---|---|", *rows]


register_check(AnswerWords())
