"""A shipped recipe validates on a machine that has run nothing (issue 28): the refusal recipes name the
planted model `demo-refusal`, which the first apply that needs it makes with its packaged recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from editkit import apply_recipe
from editkit.model.load import PLANTED_MODELS, planted_model_missing
from tests.test_run_faults import RECIPE, TRIPLETS

ROOT = Path(__file__).resolve().parents[1]
EDITKIT = str(Path(sys.executable).with_name("editkit"))


def test_every_shipped_recipe_validates_in_a_fresh_home(tmp_path):
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    env = {**os.environ, "HOME": str(tmp_path), "EDITKIT_HOME": str(tmp_path / "editkit")}
    p = subprocess.run(
        [EDITKIT, "validate", *map(str, recipes)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("✓") == len(recipes) and "✗" not in p.stdout + p.stderr
    assert "refusal on demo-refusal" in p.stdout


def test_the_first_apply_naming_a_planted_model_makes_it(tmp_path, tiny_dir, monkeypatch):
    """The mechanism on a tiny stand-in (the real plant takes ~19 min): a planted model named in a recipe
    is made once by its own recipe, as a run of its own, then loaded from its folder; the second apply
    finds it made."""
    monkeypatch.setenv("EDITKIT_HOME", str(tmp_path / "home"))
    target = tmp_path / "moral.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in TRIPLETS))
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        RECIPE.format(model=tiny_dir("llama"), target=target).replace("name: faults", "name: plant")
    )
    monkeypatch.setitem(PLANTED_MODELS, "tiny-planted", (str(plant), "tiny-planted"))
    use = tmp_path / "use.yaml"
    use.write_text(RECIPE.format(model="tiny-planted", target=target).replace("name: faults", "name: use"))
    assert planted_model_missing("tiny-planted")
    notes: list[str] = []
    res = apply_recipe(use, runs_root=tmp_path / "runs", notice=notes.append)
    made = tmp_path / "home" / "models" / "tiny-planted"
    assert (made / "config.json").is_file() and (made / "editkit" / "edit.json").is_file()
    assert not planted_model_missing("tiny-planted")
    assert sorted(d.name.split("-")[0] for d in (tmp_path / "runs").iterdir()) == ["plant", "use"]
    assert notes[0].startswith("model tiny-planted is not made yet: making it once with the packaged recipe")
    assert res.metrics["base_model"] is not None
    notes.clear()
    apply_recipe(use, runs_root=tmp_path / "runs", notice=notes.append)
    assert not any("not made yet" in n for n in notes)
    assert len(list((tmp_path / "runs").iterdir())) == 3
