"""`editkit eval`: the evaluation suite on any model (a run's export, a folder, a Hub id or the demo)."""

from __future__ import annotations

from pathlib import Path

from editkit.data.capabilities import BUILTIN_CAPABILITIES, load_triplets
from editkit.data.general import load_general_text, perplexity
from editkit.errors import EditkitError
from editkit.eval.blimp import default_blimp_dir, load_blimp
from editkit.eval.suite import EvalData, evaluate
from editkit.events import is_run_dir
from editkit.models import load_model


def resolve_model_target(target: str) -> str:
    """A run directory means its exported model; anything else is passed to the model loader."""
    p = Path(target)
    if p.is_dir() and is_run_dir(p):
        model_dir = p / "model"
        if not (model_dir / "config.json").exists():
            raise EditkitError(f"{p}: this run has no exported model yet (model/ is missing)")
        return str(model_dir)
    return target


def evaluate_target(
    target: str, capability: str | None = None, max_items: int | None = None, blimp: bool = True
) -> dict:

    def cut(rows):
        rows = [dict(r) for r in rows]
        return rows[:max_items] if max_items else rows

    target_test = cut(load_triplets(capability, split="test")) if capability else None
    heldout = {n: cut(load_triplets(n, split="test")) for n in BUILTIN_CAPABILITIES if n != capability}
    general = list(load_general_text("builtin", split="test")["text"])
    bdir = default_blimp_dir() if blimp else None
    data = EvalData(
        target_test=target_test,
        heldout=heldout,
        general_test=general,
        blimp=load_blimp(bdir) if bdir else None,
        drift_prompts=[],
    )
    loaded = load_model(resolve_model_target(target))
    return evaluate(loaded.model, loaded.tokenizer, data, perplexity_fn=perplexity)
