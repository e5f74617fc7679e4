"""Paraphrase families: does a removal hold beyond the prompts it was fitted on?

A removal that only holds for the training templates is not a removal. Each *family* rewrites a held-out
triplet's prompt in one systematic way (a question wrapper, a system line, a few-shot prefix, ...) and keeps
the answers, so the same pairwise metric can be measured on every family before and after the edit.
``robustness_report`` (``editkit.eval.robustness.report``) then says how much of the removal measured on the
original prompts survives on each family ("retained removal").

Every family is a pure function ``family(triplet, rng) -> triplet | None``: the output depends only on the
triplet and on the ``random.Random`` it is handed (``build_families`` seeds one per family and item, so an
item's rewrite does not depend on the order of the list or on the other families). ``None`` means the
family does not apply to that item.

This module holds the rule-based families, the answer-frame families, the registry ``FAMILIES`` and
``build_families``; a family a model writes is in ``editkit.eval.robustness.generated``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from editkit.errors import DataError

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
    "build_families",
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


# ------------------------------------------------------------------------------------------------ build


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
