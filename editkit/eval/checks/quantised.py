"""Quantised: does rounding the edited weights to 8 (or 4) bits bring the capability back?

Zhang et al. (ICLR 2025) found 4-bit quantisation restored "unlearned" knowledge from 21 % to 83 %: an edit
that is small next to the quantisation step can vanish when the weights are rounded. This check rounds the
edited model's weights with the GGUF block formats' own arithmetic (a fake-quantisation round trip in
torch: the values llama.cpp would compute from ``q8_0`` / ``q4_0`` blocks of 32, scale stored as fp16) on
every linear layer and the embeddings, and measures the separation per answer frame again. The edited model
evaluated here is the in-memory merge the export writes (the export check bounds their difference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from transformers.pytorch_utils import Conv1D

from editkit.eval.checks.base import Check, CheckData, CheckResult, CheckSpec, excess, fmt
from editkit.eval.checks.separation import score_frames

MAX_RISE = 0.05
QUANT_RULE = (
    f"Quantised: on no answer frame may the separation of the edited model rise by more than {MAX_RISE:.2f} "
    "(in |AUC − 0.5|) when its weights are rounded to the GGUF block format (q8_0; q4_0 where asked)."
)
BLOCK = 32


class QuantisedSpec(CheckSpec):
    """``eval.checks.quantised``."""

    types: list[Literal["q8_0", "q4_0"]] = Field(
        default_factory=lambda: ["q8_0"], min_length=1, description="GGUF block formats to round through"
    )

    @field_validator("types")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a type is named twice")
        return v


@dataclass
class QuantisedResult(CheckResult):
    reference: dict[str, float | None]
    quantised: dict[str, dict[str, float | None]]
    tensors: int


def fake_quantise(w: torch.Tensor, kind: str) -> torch.Tensor:
    """``w`` [out, in] rounded through GGUF ``q8_0`` / ``q4_0`` blocks of 32 along ``in`` and back (fp32)."""
    x = w.detach().float().reshape(-1, BLOCK)
    if kind == "q8_0":
        d = x.abs().amax(dim=1, keepdim=True) / 127.0
        inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
        q = torch.round(x * inv).clamp(-127, 127)
        out = q * d.half().float()
    elif kind == "q4_0":
        idx = x.abs().argmax(dim=1, keepdim=True)
        mx = torch.gather(x, 1, idx)  # the signed value of largest magnitude
        d = mx / -8.0
        inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
        q = torch.floor(x * inv + 8.5).clamp(0, 15)
        out = (q - 8.0) * d.half().float()
    else:
        raise ValueError(f"unknown quantisation type {kind}")
    return out.reshape(w.shape)


def quantise_model(model, kind: str) -> int:
    """Round every linear layer's and embedding's weight in place (rows a multiple of 32 wide); returns the
    number of tensors rounded (a tied input/output matrix once)."""
    seen: set[int] = set()
    n = 0
    for mod in model.modules():
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Embedding, Conv1D)):
            continue
        w = mod.weight.t() if isinstance(mod, Conv1D) else mod.weight  # GPT-2's Conv1D stores [in, out]
        if w.dim() != 2 or w.shape[1] % BLOCK or w.data_ptr() in seen:
            continue
        seen.add(w.data_ptr())
        with torch.no_grad():
            w.copy_(fake_quantise(w, kind).to(w.dtype))
        n += 1
    return n


def max_rise(reference: Mapping[str, float | None], quantised: Mapping[str, float | None]) -> float | None:
    rises = [
        excess(quantised[f]) - excess(reference[f])
        for f in reference
        if reference[f] is not None and quantised.get(f) is not None
    ]
    return max(rises) if rises else None


class Quantised(Check):
    name = "quantised"
    title = "Quantised (GGUF block rounding)"
    paper = "Zhang et al. 2025, Catastrophic Failure of LLM Unlearning via Quantization (ICLR 2025, arXiv 2410.16454)"
    spec_cls = QuantisedSpec
    phases = ("edited",)
    mutates = True

    def units(self, data: CheckData, spec: QuantisedSpec) -> int:
        rows = 2 * sum(len(v) for v in data.families.values())
        return rows * (len(spec.types) + 1)

    def run(self, phase, model, data, spec: QuantisedSpec, *, on_units=None) -> QuantisedResult:
        ref = score_frames(model, data.tokenizer, data.families, data.batch_size, on_units)
        several = len(spec.types) > 1  # the copy is private: keep the weights only to round them twice
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()} if several else None
        out: dict[str, dict[str, float | None]] = {}
        n = 0
        for kind in spec.types:
            if saved is not None:
                model.load_state_dict(saved)
            n = quantise_model(model, kind)
            got = score_frames(model, data.tokenizer, data.families, data.batch_size, on_units)
            out[kind] = {f: s.auc for f, s in got.items()}
        return QuantisedResult(reference={f: s.auc for f, s in ref.items()}, quantised=out, tensors=n)

    def judge(self, phases, spec):
        e = phases.get("edited")
        if not e:
            return {"pass": None, "summary": "needs the edited model", "rule": QUANT_RULE}
        rises = {k: max_rise(e["reference"], v) for k, v in e["quantised"].items()}
        known = [r for r in rises.values() if r is not None]
        passed = all(r <= MAX_RISE + 1e-12 for r in known) if known else None
        out: dict[str, Any] = {"pass": passed, "max_rise": rises, "rule": QUANT_RULE}
        out["summary"] = ", ".join(f"{k}: separation rises by at most {fmt(r)}" for k, r in rises.items())
        return out

    def section(self, stored: Mapping) -> list[str]:
        e = (stored.get("phases") or {}).get("edited") or {}
        if not e:
            return []
        kinds = list(e.get("quantised") or {})
        lines = [
            "| frame | edited AUC | " + " | ".join(f"{k} AUC" for k in kinds) + " |",
            "|" + " --- |" * (len(kinds) + 2),
        ]
        for f, ref in (e.get("reference") or {}).items():
            lines.append(
                f"| {f} | {fmt(ref)} | " + " | ".join(fmt(e["quantised"][k].get(f)) for k in kinds) + " |"
            )
        lines.append("")
        lines.append(
            f"{e.get('tensors')} weight matrices rounded (torch round trip with GGUF block arithmetic, not a "
            "llama.cpp run)."
        )
        return lines + ["", QUANT_RULE]
