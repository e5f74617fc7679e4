"""BLiMP-style minimal pairs: share of pairs where log p(good sentence) > log p(bad sentence).

Reads ``../shared/data/blimp`` (67 phenomena) when present, or any folder/file of JSONL rows with
``sentence_good`` / ``sentence_bad``. Sentences are scored in full (summed token log-probs), conditioned
on the tokenizer's BOS (or EOS) token so the first word is scored too.

The suite part ``Blimp`` (``blimp_accuracy``: the macro accuracy over phenomena) scores with twice the
pairwise batch size (short sentences). Recipe: ``eval.blimp`` (``auto``: ``../shared/data/blimp`` when
present; a path; false) and ``eval.blimp_per_phenomenon`` (20).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from editkit.errors import DataError
from editkit.eval.pairwise import score_answers
from editkit.eval.parts.base import SuitePart

SHARED_BLIMP = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "blimp"


def default_blimp_dir() -> Path | None:
    for cand in (Path.cwd().parent / "shared" / "data" / "blimp", SHARED_BLIMP):
        if cand.is_dir() and any(cand.glob("*.jsonl")):
            return cand
    return None


def load_blimp(source: str | Path, per_phenomenon: int = 20) -> dict[str, list[dict]]:
    """{phenomenon: [{sentence_good, sentence_bad}, ...]} through the datasets library."""
    from datasets import load_dataset

    p = Path(source)
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not all(f.exists() for f in files):
        raise DataError(f"eval.blimp: {p} has no BLiMP .jsonl files")
    out: dict[str, list[dict]] = {}
    for f in files:
        ds = load_dataset("json", data_files=str(f), split="train")
        for col in ("sentence_good", "sentence_bad"):
            if col not in ds.column_names:
                raise DataError(f"{f}: BLiMP file has no '{col}' column")
        rows = ds.select(range(min(per_phenomenon, len(ds))))
        out[f.stem] = [{"sentence_good": r["sentence_good"], "sentence_bad": r["sentence_bad"]} for r in rows]
    return out


def _sentence_logprob(model, tokenizer, sentences: list[str], batch_size: int, on_batch=None):
    ctx = tokenizer.bos_token or tokenizer.eos_token or ""
    means = score_answers(
        model, tokenizer, [ctx] * len(sentences), sentences, batch_size=batch_size, on_batch=on_batch
    )
    lengths = [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences]
    return [float(m) * n for m, n in zip(means, lengths, strict=True)]


def blimp_accuracy(
    model, tokenizer, pairs: dict[str, list[dict]], batch_size: int = 32, on_batch=None
) -> dict[str, float]:
    """Per-phenomenon accuracy plus ``mean`` (the macro average over phenomena).

    ``on_batch(rows)`` counts scored sentences (two per pair)."""
    flat = [(ph, r) for ph, rows in pairs.items() for r in rows]
    sentences = [r["sentence_good"] for _, r in flat] + [r["sentence_bad"] for _, r in flat]
    # one call, so good and bad sentences share the length-sorted batches
    scores = _sentence_logprob(model, tokenizer, sentences, batch_size, on_batch)
    good, bad = scores[: len(flat)], scores[len(flat) :]
    per: dict[str, list[bool]] = {}
    for (ph, _), g, b in zip(flat, good, bad, strict=True):
        per.setdefault(ph, []).append(g > b)
    acc = {ph: sum(v) / len(v) for ph, v in per.items()}
    acc["mean"] = sum(acc.values()) / len(acc) if acc else float("nan")
    return acc


class Blimp(SuitePart):
    name = "blimp"
    label = "BLiMP"
    fields = {
        "blimp": (
            str | bool,
            Field(
                "auto",
                description="BLiMP pairs: 'auto' (../shared/data/blimp when present), a path, or false",
            ),
        ),
        "blimp_per_phenomenon": (int, Field(20, ge=1, description="pairs used per BLiMP phenomenon")),
    }
    metrics = {"blimp_accuracy": ("BLiMP accuracy", "accuracy", "grammar minimal pairs: should not move")}
    missing_note = "BLiMP was not measured (`eval.blimp` off or the BLiMP data was not found)."
    ability = "BLiMP"

    def load(self, ev, general_test, seed, target_test=None):
        if ev.blimp is False:
            return None
        src = default_blimp_dir() if ev.blimp in ("auto", True) else Path(str(ev.blimp))
        if src is None:
            return None
        if not Path(src).exists():
            raise DataError(f"eval.blimp: {src} does not exist")
        return load_blimp(src, ev.blimp_per_phenomenon)

    def preflight(self, ev) -> list[str]:
        b = ev.blimp
        if isinstance(b, str) and b != "auto" and not Path(b).expanduser().exists():
            return [f"eval.blimp: {b} does not exist"]
        return []

    def units(self, data, opts) -> int:
        return sum(2 * len(v) for v in self.own_data(data, {}).values())

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        got = blimp_accuracy(
            model, tokenizer, self.own_data(data, {}), batch_size=opts.batch_size * 2, on_batch=on_batch
        )
        return {"blimp_accuracy": got["mean"]}

    def dataset(self, key, where):
        return ("blimp", "BLiMP minimal pairs", "train") if self.owns(key) else None
