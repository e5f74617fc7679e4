"""The datasets a recipe names, loaded before any model (so a mistake in them surfaces in seconds).

``load_data`` returns the roles a method reads (``target_train``, ``general_train``, ``data.sets`` names,
...) and the evaluation data every run measures (target test, held-out capabilities, general text, and
each suite part's own data). Every error names the recipe field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset

from editkit.data.capabilities import BUILTIN_CAPABILITIES, load_triplets
from editkit.data.general import load_general_text
from editkit.data.prompt_sets import BUILTIN_PROMPT_SETS, load_prompt_set
from editkit.errors import DataError, RecipeError
from editkit.eval.subsets import stratified_subset
from editkit.eval.suite import EvalData, part_data
from editkit.spec.inputs import DataSource
from editkit.spec.recipe import Recipe


@dataclass
class LoadedData:
    roles: dict[str, Any] = field(default_factory=dict)  # for FitContext.data
    eval: Any = None  # EvalData


# ------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------


def _triplets(src: DataSource, split: str | None, field_name: str) -> list[dict]:
    try:
        ds = load_triplets(src.source, split=split or src.split, columns=src.columns or None, limit=src.limit)
    except DataError as e:
        raise DataError(f"{field_name}: {e}") from None
    return [dict(r) for r in ds]


def load_data(recipe: Recipe, method_needs: tuple[str, ...]) -> LoadedData:
    """Load every dataset the recipe names (before any model is loaded, so mistakes surface fast)."""
    d, ev = recipe.data, recipe.eval
    out = LoadedData()
    target_test = None
    if d.target is not None:
        out.roles["target_train"] = _triplets(d.target, "train", "data.target")
        target_test = _triplets(d.target, "test", "data.target")
        target_test = stratified_subset(target_test, ev.max_items, recipe.seed)
        out.roles["target_test"] = target_test
    if d.heldout == "auto":
        names = [n for n in BUILTIN_CAPABILITIES if d.target is None or n != d.target.source]
        heldout = {n: _triplets(DataSource(source=n), "test", "data.heldout") for n in names}
    else:
        heldout = {Path(s.source).stem: _triplets(s, s.split or "test", "data.heldout") for s in d.heldout}
    heldout = {k: stratified_subset(v, ev.max_items, recipe.seed) for k, v in heldout.items()}
    out.roles["heldout"] = heldout
    try:
        g = d.general
        out.roles["general_train"] = list(
            load_general_text(g.source, split="train" if g.source == "builtin" else g.split, limit=g.limit)[
                "text"
            ]
        )
        general_test = list(
            load_general_text(g.source, split="test" if g.source == "builtin" else g.split, limit=g.limit)[
                "text"
            ]
        )
    except DataError as e:
        raise DataError(f"data.general: {e}") from None
    out.roles["general_test"] = general_test
    for name, src in d.sets.items():
        out.roles[name] = _load_set(src, f"data.sets.{name}")
    out.eval = EvalData(
        target_test=target_test,
        heldout=heldout,
        general_test=general_test,
        parts=part_data(ev, general_test, recipe.seed, target_test=target_test),
    )
    for role in method_needs:
        if role == "target" and d.target is None:
            raise RecipeError(
                f"data.target: method '{recipe.method.name}' needs target data (the capability to remove)"
            )
        if role.startswith("sets.") and role[5:] not in d.sets:
            raise RecipeError(f"data.{role}: method '{recipe.method.name}' needs this prompt set")
    return out


def _load_set(src: DataSource, field_name: str) -> list[dict]:
    """A named prompt set: a built-in set (harmful, harmless), any JSON/JSONL/CSV/parquet file or Hub
    dataset (e.g. heretic's mlabonne/harmful_behaviors), through `datasets`."""
    p = Path(src.source).expanduser()
    builders = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    try:
        if src.source in BUILTIN_PROMPT_SETS and not p.exists():
            ds = Dataset.from_list(load_prompt_set(src.source, src.split, field_name))
        elif p.suffix.lower() in builders or p.exists():
            if not p.is_file():
                raise DataError(f"{field_name}: file {p} does not exist")
            if p.suffix.lower() not in builders:
                raise DataError(
                    f"{field_name}: {p}: unsupported file type (use .jsonl, .json, .csv or .parquet)"
                )
            ds = load_dataset(builders[p.suffix.lower()], data_files=str(p), split="train")
        else:
            ds = load_dataset(src.source, src.subset, split=src.split or "train")
    except DataError:
        raise
    except Exception as e:  # datasets raises many types
        raise DataError(
            f"{field_name}: could not load {src.source}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if src.columns:
        ds = ds.rename_columns({k: v for k, v in src.columns.items() if k in ds.column_names})
    if src.limit:
        ds = ds.select(range(min(src.limit, len(ds))))
    if len(ds) == 0:
        raise DataError(f"{field_name}: {src.source} is empty")
    return [dict(r) for r in ds]
