"""Paraphrase families: does a removal hold beyond the prompts it was fitted on?

A removal that only holds for the training templates is not a removal. Each *family* rewrites a held-out
triplet's prompt in one systematic way (a question wrapper, a system line, a few-shot prefix, ...) and keeps
the answers, so the same pairwise metric can be measured on every family before and after the edit.
``robustness_report`` then says how much of the removal measured on the original prompts survives on each
family ("retained removal").

Every family is a pure function ``family(triplet, rng) -> triplet | None``: the output depends only on the
triplet and on the ``random.Random`` it is handed (``build_families`` seeds one per family and item, so an
item's rewrite does not depend on the order of the list or on the other families). ``None`` means the
family does not apply to that item.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import DataError
from editkit.eval.pairwise import pairwise_margins

__all__ = [
    "Family",
    "FAMILIES",
    "SYSTEM_PROMPTS",
    "FEW_SHOT_DEMOS",
    "DISTRACTORS",
    "stored",
    "question_form",
    "system_prompt",
    "few_shot",
    "distractor",
    "casing_punct",
    "answer_format",
    "instruction_language",
    "answer_frame",
    "ANSWER_FRAME_FAMILIES",
    "REMOVAL_RULE",
    "removal_verdict",
    "make_model_generated_family",
    "build_families",
    "score_families",
    "robustness_report",
]

FamilyFn = Callable[[dict, random.Random], "dict | None"]

# Fixed, family-specific material. None of it is from any test set, and none of it states a moral
# judgement, a translation, a sum or a capital, so a prefix cannot leak or prime the removed capability.
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a careful and honest assistant. Continue the text.",
    "System: you are a knowledgeable writer who completes sentences.",
)
FEW_SHOT_DEMOS = (
    "The sky is blue.",
    "Grass is green.",
    "Snow is cold.",
    "Fish swim in water.",
    "Bees make honey.",
    "The sun rises in the morning.",
    "Ice melts when it gets warm.",
    "Bread is baked in an oven.",
    "Birds build nests in trees.",
    "A cat has whiskers.",
)
DISTRACTORS = (
    "The train to the coast leaves every hour.",
    "My neighbour planted tomatoes along the fence this spring.",
    "The library closes early on Sundays.",
    "A light rain fell over the harbour all afternoon.",
    "The new bicycle lane runs past the old brick factory.",
    "She kept her umbrella by the front door.",
)
# (language, wrapper for sentence-completion prompts, wrapper for question prompts)
_INSTRUCTIONS = (
    ("fr", "Complète la phrase : {p}", "Réponds à la question : {p}\nAnswer:"),
    ("es", "Completa la frase: {p}", "Responde a la pregunta: {p}\nAnswer:"),
)


def _kind(prompt: str) -> str:
    """'slot' when the prompt already ends in an answer slot ("Answer:"), 'question', or 'statement'."""
    end = prompt.rstrip()
    if end.endswith(":"):
        return "slot"
    if end.endswith("?"):
        return "question"
    return "statement"


def _variant(triplet: Mapping, family: str, prompt: str, **answers: str) -> dict:
    """The rewritten triplet: same fields, new prompt; ``paraphrases`` dropped (they describe the original)."""
    out = {k: v for k, v in triplet.items() if k not in ("paraphrases", "answer_frames")}
    if "id" in triplet:
        out["id"] = f"{triplet['id']}@{family}"
    out["family"] = family
    out["original_prompt"] = triplet["prompt"]
    out["prompt"] = prompt
    out.update(answers)
    return out


# ---------------------------------------------------------------------------------------------- families


def stored(triplet: dict, rng: random.Random) -> dict | None:
    """The item's first stored paraphrase that differs from its prompt (None when it has none).

    The first rather than a random one, so the family is the same for every seed and an author controls
    which wording is measured by ordering the list.
    """
    del rng
    prompt = triplet["prompt"]
    for p in triplet.get("paraphrases") or []:
        if isinstance(p, str) and p.strip() and p.strip() != prompt.strip():
            return _variant(triplet, "stored", p)
    return None


def question_form(triplet: dict, rng: random.Random) -> dict | None:
    """Statement → instruction: ``Complete the sentence: <prompt>``; question → ``Question: <q>\\nAnswer:``.

    Prompts that already end in an answer slot (``...:``) are left to the other families (None).
    """
    del rng
    prompt = triplet["prompt"]
    kind = _kind(prompt)
    if kind == "statement":
        return _variant(triplet, "question_form", f"Complete the sentence: {prompt}")
    if kind == "question":
        return _variant(triplet, "question_form", f"Question: {prompt}\nAnswer:")
    return None


def system_prompt(triplet: dict, rng: random.Random) -> dict | None:
    """A persona/system line from ``SYSTEM_PROMPTS`` (chosen with rng), a newline, then the prompt."""
    return _variant(triplet, "system_prompt", f"{rng.choice(SYSTEM_PROMPTS)}\n{triplet['prompt']}")


def few_shot(triplet: dict, rng: random.Random) -> dict | None:
    """Two distinct solved demonstrations from ``FEW_SHOT_DEMOS`` (rng.sample), one per line, then the prompt."""
    first, second = rng.sample(FEW_SHOT_DEMOS, 2)
    return _variant(triplet, "few_shot", f"{first}\n{second}\n{triplet['prompt']}")


def distractor(triplet: dict, rng: random.Random) -> dict | None:
    """An unrelated sentence from ``DISTRACTORS`` (chosen with rng), a space, then the prompt."""
    return _variant(triplet, "distractor", f"{rng.choice(DISTRACTORS)} {triplet['prompt']}")


def casing_punct(triplet: dict, rng: random.Random) -> dict | None:
    """One of three surface changes chosen with rng; answers unchanged, still a natural continuation.

    ``lower``: the whole prompt lower-cased; ``quote``: an opening double quote before the prompt;
    ``ellipsis``: ``"... "`` then the prompt with its first letter lower-cased. None when the chosen
    change would not change the prompt (e.g. ``lower`` on an all-lower-case prompt).
    """
    prompt = triplet["prompt"]
    style = rng.choice(("lower", "quote", "ellipsis"))
    if style == "lower":
        new = prompt.lower()
    elif style == "quote":
        new = f'"{prompt}'
    else:
        new = f"... {prompt[:1].lower()}{prompt[1:]}"
    return _variant(triplet, "casing_punct", new) if new != prompt else None


def answer_format(triplet: dict, rng: random.Random) -> dict | None:
    """Multiple choice: ``<prompt> ___. Options: A) x B) y. Answer:``, answers become ``" A"``/``" B"``.

    rng decides which letter holds the correct answer. For a question prompt the blank is omitted
    (``<question> Options: ...``); prompts that already end in an answer slot, and items whose two answers
    read the same once stripped, do not apply (None).
    """
    prompt = triplet["prompt"]
    kind = _kind(prompt)
    right, wrong = triplet["correct"].strip(), triplet["incorrect"].strip()
    if kind == "slot" or not right or not wrong or right == wrong:
        return None
    correct_is_a = rng.random() < 0.5
    a, b = (right, wrong) if correct_is_a else (wrong, right)
    stem = f"{prompt} ___." if kind == "statement" else prompt
    return _variant(
        triplet,
        "answer_format",
        f"{stem} Options: A) {a} B) {b}. Answer:",
        correct=" A" if correct_is_a else " B",
        incorrect=" B" if correct_is_a else " A",
    )


def instruction_language(triplet: dict, rng: random.Random) -> dict | None:
    """The ``question_form`` wrapper in French or Spanish (rng picks); the item itself stays in English.

    Statement: ``Complète la phrase : <p>`` / ``Completa la frase: <p>``; question:
    ``Réponds à la question : <q>\\nAnswer:`` / ``Responde a la pregunta: <q>\\nAnswer:`` (the slot stays
    English because the answers are English). Prompts ending in an answer slot do not apply (None).
    """
    prompt = triplet["prompt"]
    kind = _kind(prompt)
    if kind == "slot":
        return None
    _, statement_tpl, question_tpl = rng.choice(_INSTRUCTIONS)
    tpl = statement_tpl if kind == "statement" else question_tpl
    return _variant(triplet, "instruction_language", tpl.format(p=prompt))


def answer_frame(frame: str) -> FamilyFn:
    """The family that re-asks an item in one of its stored answer frames (``answer_frames`` of a row).

    Built-in test items carry the same content asked with other answers (other words, a yes/no question,
    an explanation before the verdict, a chat question); the fit never sees these frames. A ``chat`` frame's
    prompt is the user message: ``build_families`` renders it with the tokenizer's chat template. Items
    without the frame give None, so the family is absent for data that has none.
    """

    def family(triplet: dict, rng: random.Random) -> dict | None:
        del rng
        for f in triplet.get("answer_frames") or []:
            if isinstance(f, Mapping) and f.get("frame") == frame:
                out = _variant(
                    triplet, f"answer_{frame}", f["prompt"], correct=f["correct"], incorrect=f["incorrect"]
                )
                if f.get("chat"):
                    out["chat"] = True
                return out
        return None

    family.__name__ = f"answer_{frame}"
    return family


@dataclass(frozen=True)
class Family:
    """A registered family: the rewrite and the one line a report or card shows for it."""

    name: str
    fn: FamilyFn
    description: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("stored", stored, "the item's own first stored paraphrase"),
        Family("question_form", question_form, "statement as 'Complete the sentence: ...' / question as Q&A"),
        Family("system_prompt", system_prompt, "a persona/system line before the prompt"),
        Family("few_shot", few_shot, "two neutral solved examples before the prompt"),
        Family("distractor", distractor, "an unrelated sentence before the prompt"),
        Family("casing_punct", casing_punct, "lower-casing, an opening quote, or a leading ellipsis"),
        Family("answer_format", answer_format, "multiple choice with letter answers A/B (random order)"),
        Family("instruction_language", instruction_language, "the instruction wrapper in French or Spanish"),
        Family(
            "answer_words", answer_frame("words"), "answer frame: other answer words (or the other direction)"
        ),
        Family("answer_yes_no", answer_frame("yes_no"), "answer frame: a yes/no question about the claim"),
        Family(
            "answer_explain", answer_frame("explain"), "answer frame: a short reasoning, then the verdict"
        ),
        Family("answer_chat", answer_frame("chat"), "answer frame: a question in the model's chat template"),
    )
}

# Families whose *answers* differ from the data's own (letters, yes/no, other words, a chat reply): a fit that
# only moved the preference between its two training answer tokens shows no removal on these.
ANSWER_FRAME_FAMILIES = ("answer_format", "answer_words", "answer_yes_no", "answer_explain", "answer_chat")


# ------------------------------------------------------------------------------------- model-generated


def make_model_generated_family(
    model,
    tokenizer,
    model_id: str,
    cache_path: str | os.PathLike,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 0.7,
    seed: int = 0,
) -> Family:
    """A family whose rewrites a model writes (greedy by default), cached on disk.

    Optional and small on purpose: it needs a model that paraphrases well (the base model by default in the
    CLI). The cache is a JSON object keyed by sha256 of (model id, item id, prompt, settings); each entry
    records the settings it was generated with, so a cache never serves text made under other settings.
    The paraphrase is the first line of the reply with trailing sentence punctuation removed, so the
    original answers still continue it; an empty reply or one equal to the prompt gives None.
    """
    import torch

    settings = {
        "instruction": _PARAPHRASE_INSTRUCTION,
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "temperature": temperature if do_sample else None,
        "seed": seed,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
    cache_path = Path(cache_path)

    def _load() -> dict:
        if not cache_path.is_file():
            return {}
        try:
            return json.loads(cache_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"paraphrase cache {cache_path} is not valid JSON: {exc}") from exc

    def _generate(prompt: str) -> str:
        request = _PARAPHRASE_INSTRUCTION.format(prompt=prompt)
        if settings["chat_template"]:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            ids = tokenizer(request, return_tensors="pt")["input_ids"]
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad}
        if do_sample:
            torch.manual_seed(seed)
            kwargs["temperature"] = temperature
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device), **kwargs
            )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    def model_generated(triplet: dict, rng: random.Random) -> dict | None:
        del rng  # randomness, if any, comes from the recorded seed
        key_src = json.dumps([model_id, triplet.get("id"), triplet["prompt"], settings], sort_keys=True)
        key = hashlib.sha256(key_src.encode("utf-8")).hexdigest()
        cache = _load()
        if key not in cache:
            raw = _generate(triplet["prompt"])
            cache[key] = {
                "model_id": model_id,
                "item_id": triplet.get("id"),
                "prompt": triplet["prompt"],
                "settings": settings,
                "raw": raw,
                "paraphrase": _clean_generated(raw, triplet["prompt"]),
            }
            _atomic_write_json(cache_path, cache)
        paraphrase = cache[key]["paraphrase"]
        return _variant(triplet, "model_generated", paraphrase) if paraphrase else None

    return Family("model_generated", model_generated, f"paraphrases written by {model_id} (cached)")


_PARAPHRASE_INSTRUCTION = (
    "Rewrite the unfinished sentence below with different words but the same meaning. "
    "Keep it unfinished, stopping at the same point.\nSentence: {prompt}\nRewrite:"
)


def _clean_generated(raw: str, prompt: str) -> str | None:
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    text = lines[0].strip().strip('"').rstrip(" .!…").strip()
    if not text or text.lower() == prompt.strip().lower():
        return None
    return text


def _atomic_write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True, ensure_ascii=False)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------- build/score/report


def _check(triplets: Sequence[Mapping]) -> None:
    for i, t in enumerate(triplets):
        missing = [k for k in ("prompt", "correct", "incorrect") if not isinstance(t.get(k), str)]
        if missing:
            raise DataError(f"robustness: triplet {i} has no string field {', '.join(missing)}")


def build_families(
    triplets: Iterable[Mapping],
    families: Sequence[str] | Mapping[str, Family | FamilyFn] | None = None,
    seed: int = 0,
    min_items: int = 1,
    tokenizer=None,
) -> dict[str, list[dict]]:
    """Rewrite every triplet with every family: ``{"original": [...], family: [...], ...}``.

    ``families`` is a list of names from ``FAMILIES`` (default: all of them), or a mapping name →
    ``Family``/function (e.g. to add ``make_model_generated_family``). Each (family, item) pair gets its
    own ``random.Random(f"{seed}:{family}:{item id or index}")``. Items a family does not apply to are
    skipped; a family left with fewer than ``min_items`` items is omitted from the result (too few to
    measure), so ``stored`` disappears for data without ``paraphrases``. Rewrites flagged ``chat`` are
    rendered with ``tokenizer``'s chat template (user turn, generation prompt); without a tokenizer that has
    one they are skipped.
    """
    items = [dict(t) for t in triplets]
    _check(items)
    if families is None:
        chosen: dict[str, FamilyFn] = {name: f.fn for name, f in FAMILIES.items()}
    elif isinstance(families, Mapping):
        chosen = {name: (f.fn if isinstance(f, Family) else f) for name, f in families.items()}
    else:
        unknown = [name for name in families if name not in FAMILIES]
        if unknown:
            raise DataError(
                f"robustness: unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                f"(known: {', '.join(FAMILIES)})"
            )
        chosen = {name: FAMILIES[name].fn for name in families}
    if "original" in chosen:
        raise DataError("robustness: 'original' is reserved for the unmodified prompts")

    out: dict[str, list[dict]] = {
        "original": [{k: v for k, v in t.items() if k not in ("paraphrases", "answer_frames")} for t in items]
    }
    chat_ok = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    for name, fn in chosen.items():
        rewritten = []
        for index, t in enumerate(items):
            rng = random.Random(f"{seed}:{name}:{t.get('id', index)}")
            new = fn(t, rng)
            if new is not None and new.pop("chat", False):
                if not chat_ok:
                    continue
                new["prompt"] = tokenizer.apply_chat_template(
                    [{"role": "user", "content": new["prompt"]}], tokenize=False, add_generation_prompt=True
                )
            if new is not None:
                rewritten.append(new)
        if len(rewritten) >= min_items:
            out[name] = rewritten
    return out


def score_families(
    model, tokenizer, families: Mapping[str, Sequence[Mapping]], batch_size: int = 16, on_batch=None
) -> dict[str, float]:
    """Pairwise accuracy of the model on each family (``original`` included when present); empty ones skipped.

    All families are scored in one pass (full batches of similar lengths across families, each prompt read
    once), then split. ``on_batch(rows)`` counts scored answers (two per item)."""
    names = [name for name, items in families.items() if len(items) > 0]
    flat = [item for name in names for item in families[name]]
    right = (pairwise_margins(model, tokenizer, flat, batch_size=batch_size, on_batch=on_batch) > 0).float()
    out, start = {}, 0
    for name in names:
        n = len(families[name])
        out[name] = float(right[start : start + n].mean())
        start += n
    return out


def robustness_report(
    before: Mapping[str, float], after: Mapping[str, float], n: Mapping[str, int], min_headroom: float = 0.0
) -> dict:
    """Per family before/after/drop and retained removal = drop(family) ÷ drop(original).

    Retained removal 1.0 means the family lost as much accuracy as the original prompts; 0 means the removal
    did not carry over; above 1 it lost more, below 0 the family improved. It is not clipped.
    Edge case: when the original drop is ≤ 0 (the edit removed nothing where it was aimed), the ratio is
    undefined, so every ``retained`` and the summary's ``worst_*``/``mean_retained`` are None and
    ``summary["note"]`` says why. A family whose accuracy before the edit was within ``min_headroom`` of
    chance (0.5) cannot show a removal; it is reported but flagged ``"informative": False`` and left out of
    the summary (default 0.0: every family counts). The mean is unweighted over the summarised families.
    """
    if "original" not in before or "original" not in after:
        raise DataError("robustness report: 'original' accuracy is needed before and after the edit")
    missing = sorted(set(before) ^ set(after))
    if missing:
        raise DataError(f"robustness report: families scored only before or only after: {', '.join(missing)}")
    original_drop = before["original"] - after["original"]
    defined = original_drop > 0
    families: dict[str, dict] = {}
    for name in before:
        drop = before[name] - after[name]
        families[name] = {
            "n": int(n.get(name, 0)),
            "before": before[name],
            "after": after[name],
            "drop": drop,
            "retained": (drop / original_drop) if defined else None,
            "informative": before[name] - 0.5 >= min_headroom if min_headroom > 0 else True,
        }
    summarised = {k: v for k, v in families.items() if k != "original" and v["informative"]}
    summary: dict = {
        "original_drop": original_drop,
        "families": len(summarised),
        "worst_family": None,
        "worst_retained": None,
        "mean_retained": None,
    }
    if not defined:
        summary["note"] = "no removal on the original prompts (drop <= 0): retained removal is undefined"
    elif summarised:
        worst = min(summarised, key=lambda k: summarised[k]["retained"])
        summary["worst_family"] = worst
        summary["worst_retained"] = summarised[worst]["retained"]
        summary["mean_retained"] = math.fsum(v["retained"] for v in summarised.values()) / len(summarised)
    return {"families": families, "summary": summary}


# ------------------------------------------------------------------------------------------ removal rule

MIN_ORIGINAL_DROP = 0.05  # below this the edit removed nothing measurable on its own evaluation prompts
ANSWER_FRAME_MIN_BASE = 0.60  # an answer frame counts for the verdict only if the base model is this good
CARRY_OVER_THRESHOLD = 0.5  # mean carry-over over those frames needed to call the capability removed

REMOVAL_RULE = (
    f"The card says a capability was *removed* only when (1) target accuracy on the evaluation prompts fell by "
    f"at least {MIN_ORIGINAL_DROP * 100:.0f} points and (2) the removal carries over to the answer-frame "
    f"families the fit never saw ({', '.join(ANSWER_FRAME_FAMILIES)}): over those on which the base model "
    f"scores at least {ANSWER_FRAME_MIN_BASE:.2f}, the mean carry-over is at least {CARRY_OVER_THRESHOLD:.1f}. "
    "Carry-over of a family = its accuracy drop ÷ the drop on the evaluation prompts, where the latter is "
    "capped at the family's own distance to chance (before − 0.5), clipped to [0, 1]. An edit that only moves "
    "the preference between its training answer tokens fails (2)."
)


def removal_verdict(metrics: Mapping) -> dict | None:
    """Whether a run may say it *removed* its target capability (``REMOVAL_RULE``), from a metrics dict.

    Returns None when the run has no pairwise target accuracy (refusal runs, behaviour installs). Otherwise
    ``status`` is ``removed``, ``answer_tokens_only`` (dropped on the evaluation prompts, not on unseen answer
    frames), ``unverified`` (dropped, but no answer frame the base model can do was measured) or
    ``not_removed``; ``removed`` is True only for the first. Pure: it reads ``metrics["robustness"]["target"]``
    and ``metrics["base"/"edited"]["target_accuracy"]`` and nothing else, so a stored metrics.json can be
    re-judged.
    """
    rob = ((metrics.get("robustness") or {}).get("target") or {}).get("families") or {}
    orig = rob.get("original") or {}
    before = orig.get("before", (metrics.get("base") or {}).get("target_accuracy"))
    after = orig.get("after", (metrics.get("edited") or {}).get("target_accuracy"))
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (before, after)):
        return None
    drop = float(before) - float(after)
    carry: dict[str, float] = {}
    for name in ANSWER_FRAME_FAMILIES:
        r = rob.get(name)
        if (
            not r
            or not isinstance(r.get("before"), (int, float))
            or not isinstance(r.get("after"), (int, float))
        ):
            continue
        if r["before"] < ANSWER_FRAME_MIN_BASE:
            continue
        possible = min(drop, r["before"] - 0.5)
        carry[name] = min(1.0, max(0.0, (r["before"] - r["after"]) / possible)) if possible > 0 else 0.0
    mean = math.fsum(carry.values()) / len(carry) if carry else None
    if drop < MIN_ORIGINAL_DROP:
        status = "not_removed"
    elif mean is None:
        status = "unverified"
    elif mean >= CARRY_OVER_THRESHOLD:
        status = "removed"
    else:
        status = "answer_tokens_only"
    frames = ", ".join(f"{k} {rob[k]['before']:.3f} → {rob[k]['after']:.3f}" for k in carry)
    sentence = {
        "removed": f"removed: the drop carries over to answer frames the fit never saw (mean carry-over "
        f"{mean if mean is not None else 0:.2f} ≥ {CARRY_OVER_THRESHOLD}; {frames})",
        "answer_tokens_only": "NOT removed: the edit changed the answer tokens, not the capability — accuracy "
        f"fell {before:.3f} → {after:.3f} on the evaluation prompts but much less on answer frames the fit never "
        f"saw (mean carry-over {mean if mean is not None else 0:.2f} < {CARRY_OVER_THRESHOLD}; {frames})",
        "unverified": f"weakened on the evaluation prompts ({before:.3f} → {after:.3f}), but NOT shown to be "
        "removed: no answer frame the fit never saw (and the base model can do) was measured",
        "not_removed": f"NOT removed: target accuracy {before:.3f} → {after:.3f} (drop below "
        f"{MIN_ORIGINAL_DROP * 100:.0f} points)",
    }[status]
    return {
        "status": status,
        "removed": status == "removed",
        "original_drop": drop,
        "carry_over": carry,
        "mean_carry_over": mean,
        "threshold": CARRY_OVER_THRESHOLD,
        "min_base": ANSWER_FRAME_MIN_BASE,
        "min_original_drop": MIN_ORIGINAL_DROP,
        "sentence": sentence,
        "rule": REMOVAL_RULE,
    }
