"""Greedy generations: a few target prompts continued greedily (no sampling) by the base and the edited model, so
a reader of the card sees what the model says, not only which of two answers it prefers.

Recipe: ``eval.generations`` (3 prompts, drawn from the target's test items with the recipe's seed, stratified
by answer class; 0: none) and ``eval.generation_tokens`` (32 new tokens each). The prompts are completions: no
chat template. Phases base and edited. The texts are samples, not numbers: they are kept in metrics.json's
top-level ``generations`` list, one row per prompt (``{prompt, base, edited}``), and the card shows them in
its "Greedy generations" section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from editkit.eval.parts.base import SuitePart
from editkit.eval.refusal.chat import generate
from editkit.eval.subsets import stratified_subset


def greedy_generations(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of ``prompts`` (no chat template: the target prompts are completions)."""
    if not prompts:
        return []
    return generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=len(prompts), chat=False
    )


class Generations(SuitePart):
    name = "generations"
    label = "greedy generations"
    fields = {
        "generations": (
            int,
            Field(
                3,
                ge=0,
                description="target prompts shown with greedy generations before/after the edit in the card",
            ),
        ),
        "generation_tokens": (int, Field(32, ge=1, description="new tokens per greedy generation")),
    }
    phases = ("base", "edited")
    samples = True

    def load(self, ev, general_test, seed, target_test=None):
        if not ev.generations or not target_test:
            return None
        prompts = [t["prompt"] for t in stratified_subset(target_test, ev.generations, seed)]
        return {"prompts": prompts[: ev.generations], "tokens": ev.generation_tokens}

    def units(self, data, opts) -> int:
        return len(self.own_data(data, {}).get("prompts", []))

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        """[{prompt, text}] in the order of the prompts."""
        got = self.own_data(data)
        texts = greedy_generations(model, tokenizer, got["prompts"], got["tokens"])
        on_batch(len(texts))
        return [{"prompt": p, "text": t} for p, t in zip(got["prompts"], texts, strict=True)]

    def fold(self, section, phase, result):
        """One row per prompt, ``{prompt, base, edited}``, in the prompts' order (a prompt may come twice):
        ``phase``'s texts added to the rows."""
        rows = [dict(r) for r in section or []] or [{"prompt": got["prompt"]} for got in result]
        if [r["prompt"] for r in rows] != [got["prompt"] for got in result]:
            raise RuntimeError(f"generations: the {phase} phase continued other prompts than the rows hold")
        for row, got in zip(rows, result, strict=True):
            row[phase] = got["text"]
        return rows

    def card(self, metrics: Mapping[str, Any]) -> list[str]:
        rows = [r for r in (metrics.get(self.name) or []) if isinstance(r, Mapping) and "prompt" in r]
        if not rows:
            return []
        lines = ["## Greedy generations", ""]
        lines.append(
            "A few target prompts continued greedily (no sampling) by the base and the edited model, so a "
            "reader sees what the model says, not only which of two answers it prefers:"
        )
        lines.append("")
        for r in rows:
            lines += [f"- prompt: `{_code(r['prompt'])}`"]
            for who in ("base", "edited"):
                if who in r:
                    lines.append(f"  - {who}: `{_code(r[who])}`")
        return lines + [""]


def _code(text: Any) -> str:
    return " ".join(str(text).split()).replace("`", "'")
