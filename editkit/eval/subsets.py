"""Seeded, stratified evaluation subsets (``eval.max_items`` / ``editkit eval --max-items``).

Cutting a test set to its first N items measures whatever the file happens to start with: the first 50
built-in moral test items all have " bad" as the right answer, so a model that always says " good" scored
0.0 on them. A subset keeps every stratum (answer class, and answer-frame family where items carry one) in
proportion, drawn with a fixed seed, in the original order.

Hand-written rather than ``sklearn.model_selection.train_test_split(stratify=...)``: that one refuses strata
with a single item and sizes smaller than the number of strata, both normal here (a family of one item,
``--max-items 4`` over six families).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

FAMILY_FIELDS = ("family", "frame")
MAX_ANSWER_CLASSES = 10
"""Sets with more distinct right answers than this (numbers, capitals) have no answer classes to balance."""


def answer_class(item: Mapping) -> str:
    """The right answer of a triplet, as written (" bad", " good", " 12", ...)."""
    return str(item.get("correct"))


def family_of(item: Mapping) -> str:
    """The item's answer-frame family ('' when it has none)."""
    return next((str(item[f]) for f in FAMILY_FIELDS if item.get(f) not in (None, "")), "")


def answer_classes(items: Sequence[Mapping]) -> list[str] | None:
    """The distinct right answers, sorted, when there are few enough to be classes (2..MAX_ANSWER_CLASSES)."""
    classes = sorted({answer_class(it) for it in items})
    return classes if 2 <= len(classes) <= MAX_ANSWER_CLASSES else None


def stratum(item: Mapping, by_class: bool = True) -> tuple[str, str]:
    """(family, answer class); '' where the set has no families or no answer classes."""
    return family_of(item), answer_class(item) if by_class else ""


def stratified_subset(items: Sequence[Mapping], n: int | None, seed: int = 0) -> list:
    """At most ``n`` items, every stratum (family × answer class) in proportion (largest remainders; each stratum gets at least one
    item while ``n`` allows), chosen with ``random.Random(seed)``, returned in their original order."""
    items = list(items)
    if not n or n >= len(items):
        return items
    by_class = answer_classes(items) is not None
    groups: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(stratum(it, by_class), []).append(i)
    keys = sorted(groups)
    total = len(items)
    quota = {k: n * len(groups[k]) / total for k in keys}
    take = {k: int(quota[k]) for k in keys}
    rng = random.Random(seed)
    # every stratum represented while there is room (smallest first, ties in a seeded order)
    empty = [k for k in keys if take[k] == 0]
    rng.shuffle(empty)
    empty.sort(key=lambda k: len(groups[k]))
    room = n - sum(take.values())
    for k in empty:
        if room <= 0:
            break
        take[k], room = 1, room - 1
    # the rest by largest remainder
    for k in sorted(keys, key=lambda k: (take[k] - quota[k], rng.random())):
        if room <= 0:
            break
        if take[k] < len(groups[k]):
            take[k], room = take[k] + 1, room - 1
    chosen: list[int] = []
    for k in keys:
        chosen += rng.sample(groups[k], take[k])
    return [items[i] for i in sorted(chosen)]
