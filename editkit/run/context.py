"""A run of a recipe outside the pipeline's stages: its FitContext, and re-opening a finished run."""

from __future__ import annotations

from pathlib import Path

import yaml

from editkit.data.recipe_data import LoadedData, load_data
from editkit.edit.edit import Edit
from editkit.errors import EditkitError
from editkit.methods import get_method
from editkit.methods.base import FitContext
from editkit.model.anatomy import Anatomy, find_anatomy
from editkit.model.load import LoadedModel, load_model
from editkit.run.events import NullEventLog, is_run_dir
from editkit.spec.recipe import Recipe


def fit_context(recipe: Recipe, loaded: LoadedModel, anatomy: Anatomy, data: LoadedData, run_dir: Path, **kw):
    """The FitContext of a run of ``recipe`` (events, resume and is_main in ``kw``)."""
    return FitContext(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        anatomy=anatomy,
        params=recipe.method,
        data=data.roles,
        run_dir=run_dir,
        seed=recipe.seed,
        model_path=str(loaded.path),
        save_adapter=recipe.export.adapter,
        refusal_judge=recipe.eval.refusal_judge,
        base_eval_cache=recipe.eval.cache,
        model_spec=recipe.model,
        **{"events": NullEventLog(), **kw},
    )


def open_run(run_dir: str | Path):
    """Re-open a finished run: (recipe, data, loaded base model, anatomy, edit, FitContext). No events written."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise EditkitError(f"{run_dir}: not an editkit run directory")
    if not (run_dir / "edit" / "edit.json").exists():
        raise EditkitError(f"{run_dir}: the run has no edit artifact yet (edit/edit.json)")
    recipe = Recipe.model_validate(yaml.safe_load((run_dir / "recipe.yaml").read_text()))
    method_cls = get_method(recipe.method.name)
    data = load_data(recipe, method_cls.needs)
    loaded = load_model(recipe.model)
    anatomy = find_anatomy(loaded.model)
    edit = Edit.load(run_dir / "edit")
    ctx = fit_context(recipe, loaded, anatomy, data, run_dir)
    return recipe, data, loaded, anatomy, edit, ctx
