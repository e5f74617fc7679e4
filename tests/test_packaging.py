"""Packaged recipes, `editkit recipes`, `editkit init` — and all of it the way a user gets it: a wheel
installed into a fresh venv outside the checkout, run from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from editkit.cli.main import app
from editkit.errors import RecipeError
from editkit.spec.catalog import describe, packaged_recipes, resolve_recipe
from editkit.spec.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["scalpel", "refusal", "heads", "neurons", "sft"]


def test_every_recipe_in_the_repo_is_packaged_and_described():
    known = packaged_recipes()
    assert set(known) == {p.stem for p in (ROOT / "recipes").glob("*.yaml")} and len(known) >= 5
    for name, path in known.items():
        line = describe(path)
        assert line and "\n" not in line and len(line) <= 110, (name, line)
        load_recipe(path)  # every shipped recipe validates


def test_names_resolve_and_a_path_on_disk_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = packaged_recipes()["remove_moral"]
    for arg in ("remove_moral", "remove-moral", "remove_moral.yaml", "recipes/remove_moral.yaml"):
        assert resolve_recipe(arg) == packaged
    (tmp_path / "remove_moral").write_text(
        "name: mine\nmodel: demo\nmethod: {name: heads, heads: [[0, 1]]}\n"
    )
    assert resolve_recipe("remove_moral") == Path("remove_moral")
    assert load_recipe("remove_moral").name == "mine"
    with pytest.raises(RecipeError, match=r"^nope: no such recipe file.*packaged: .*remove_moral"):
        resolve_recipe("nope")
    with pytest.raises(RecipeError, match="no such recipe file"):
        resolve_recipe("some/dir/remove_moral.yaml")  # a path elsewhere is a path, not a name


@pytest.mark.parametrize("method", METHODS)
def test_init_writes_every_field_with_a_comment_and_validates(method, tmp_path, monkeypatch):
    from editkit.methods import method_params_class
    from editkit.spec.recipe import Recipe

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["init", method, "--model", "my/model"], terminal_width=300)
    assert res.exit_code == 0, res.output
    text = (tmp_path / f"{method}.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["model"]["id"] == "my/model" and data["method"]["name"] == method
    assert set(data) == set(Recipe.model_fields)
    assert set(data["method"]) == set(method_params_class(method).model_fields)
    for block in ("model", "eval", "export", "push"):
        assert set(data[block]) == set(type(getattr(Recipe.model_validate(data), block)).model_fields)
    # every method parameter with a description carries it as the comment line above it
    lines = text.splitlines()
    for key, field in method_params_class(method).model_fields.items():
        if field.description:
            i = lines.index(next(line for line in lines if line.startswith(f"  {key}:")))
            assert lines[i - 1] == "  # " + " ".join(field.description.split()), key
    if "../shared/data" in text:  # refusal/sft: the packaged recipes' prompt sets live beside the checkout
        if not (ROOT.parent / "shared" / "data").is_dir():
            pytest.skip("../shared/data not present")
        monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(app, ["validate", str(tmp_path / f"{method}.yaml")], terminal_width=300)
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path)
    again = CliRunner().invoke(app, ["init", method], terminal_width=300)
    assert again.exit_code == 2 and "exists; pass --force" in again.output


def test_init_unknown_method_is_one_line():
    res = CliRunner().invoke(app, ["init", "scalpl"], terminal_width=300)
    assert res.exit_code == 2 and "did you mean 'scalpel'" in res.output
    assert len(res.output.strip().splitlines()) == 1


def _build_wheel(dest: Path) -> Path:
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("editkit", "tui", "recipes"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dest),
            ".",
        ],
        cwd=src,
        check=True,
        capture_output=True,
    )
    return next(dest.glob("editkit-*.whl"))


def test_wheel_in_a_fresh_venv_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # the test environment's packages (torch, transformers, ...) without running its .pth hooks
    # (which would import the checkout's editable editkit)
    (site / "shared-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["COLUMNS"] = "300"

    def editkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(venv / "bin" / "editkit"), *args], cwd=empty, env=env, capture_output=True, text=True
        )

    where = subprocess.run(
        [py, "-c", "import editkit; print(editkit.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    # the monitor installs as editkit_tui, never as a top-level `tui` that could clash with another package
    tui = subprocess.run(
        [py, "-c", "import editkit_tui.app as a, importlib.util as u; print(a.__file__, u.find_spec('tui'))"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
    )
    assert tui.stdout.split() == [str(site / "editkit_tui" / "app.py"), "None"], tui.stdout + tui.stderr
    assert (site / "editkit_tui" / "styles.tcss").is_file()
    listed = editkit("recipes")
    assert listed.returncode == 0, listed.stderr
    for name in packaged_recipes():
        assert name in listed.stdout
    assert str(site / "editkit" / "recipes") in listed.stdout
    assert editkit("validate", "remove_moral", "heads_arithmetic").returncode == 0
    made = editkit("init", "scalpel", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert made.returncode == 0, made.stderr
    checked = editkit("validate", "scalpel.yaml")
    assert checked.returncode == 0 and "my-scalpel (scalpel on HuggingFaceTB/SmolLM2-135M-Instruct)" in (
        checked.stdout
    ), checked.stdout + checked.stderr
    missing = editkit("validate", "no_such_recipe")
    assert missing.returncode == 2 and "packaged: " in missing.stderr
    assert sorted(p.name for p in empty.iterdir()) == ["scalpel.yaml"]
