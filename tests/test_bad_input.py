"""The bad-input corpus: every mistake gives one line naming the file/field, exit code 2, and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from editkit.cli.main import app

GOOD = """\
name: t
model: {model}
method:
  name: heads
  heads: [[0, 1]]
data:
  target: {target}
  heldout: [{target}]
eval:
  blimp: false
  robustness: false
  max_items: 4
"""

TRIPLETS = [
    {
        "id": f"x-{i}",
        "split": "train" if i < 6 else "test",
        "prompt": "Stealing is",
        "correct": " wrong",
        "incorrect": " good",
    }
    for i in range(10)
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tests.tiny import save_tiny

    ws = tmp_path_factory.mktemp("bad")
    save_tiny("llama", ws / "tiny")
    target = ws / "moral.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in TRIPLETS))
    (ws / "empty.jsonl").write_text("")
    (ws / "nocol.jsonl").write_text(json.dumps({"question": "q", "answer": " a"}) + "\n")
    (ws / "words.txt").write_text("hello\n")
    (ws / "noconfig").mkdir()
    (ws / "noconfig" / "model.safetensors").write_bytes(b"")
    pickle_dir = ws / "pickled"
    pickle_dir.mkdir()
    (pickle_dir / "config.json").write_text((ws / "tiny" / "config.json").read_text())
    (pickle_dir / "pytorch_model.bin").write_bytes(b"not really")
    opt = ws / "opt"
    from transformers import AutoModelForCausalLM

    from tests.tiny import tiny_config

    AutoModelForCausalLM.from_config(tiny_config("opt", 320)).save_pretrained(opt)
    notrun = ws / "notrun"
    notrun.mkdir()
    (notrun / "precious.txt").write_text("do not touch")
    return ws


def good(ws: Path, **kw) -> str:
    return GOOD.format(model=kw.get("model", ws / "tiny"), target=kw.get("target", ws / "moral.jsonl"))


def _cases(ws: Path):
    g = good(ws)
    return [
        # (id, recipe text or None, extra CLI args, expected substring in the one-line error)
        ("malformed-yaml", "name: t\nmodel: [demo\n", [], "not valid YAML"),
        ("bad-indent", "name: t\n model: demo\n", [], "not valid YAML"),
        ("not-a-mapping", "- name: t\n", [], "a recipe must be a mapping"),
        ("empty", "", [], "the recipe is empty"),
        ("duplicate-key", g + "seed: 1\nseed: 2\n", [], "duplicate key 'seed'"),
        (
            "unknown-method",
            g.replace("name: heads", "name: haeds"),
            [],
            "method: unknown method 'haeds' (did you mean 'heads'?)",
        ),
        ("method-no-name", g.replace("  name: heads\n", ""), [], "method: needs a 'name'"),
        ("typo-top", g + "exprot: {}\n", [], "exprot: unknown field (did you mean 'export'?)"),
        (
            "typo-method",
            g.replace("heads: [[0, 1]]", "haeds: [[0, 1]]"),
            [],
            "method.haeds: unknown field (did you mean 'heads'?)",
        ),
        (
            "wrong-type",
            g.replace("max_items: 4", "max_items: lots"),
            [],
            "eval.max_items: Input should be a valid integer",
        ),
        (
            "negative",
            g.replace("max_items: 4", "max_items: -1"),
            [],
            "eval.max_items: Input should be greater than or equal to 1",
        ),
        ("missing-name", g.replace("name: t\n", "", 1), [], "name: required field is missing"),
        ("missing-model", g.replace(f"model: {ws / 'tiny'}\n", ""), [], "model: required field is missing"),
        ("bad-name", g.replace("name: t\n", "name: 'my run!'\n", 1), [], "name: must be 1-100 characters"),
        (
            "bad-dtype",
            g.replace(f"model: {ws / 'tiny'}", f"model: {{id: {ws / 'tiny'}, dtype: float64}}"),
            [],
            "model.dtype: Input should be",
        ),
        ("bad-shard", g + "export: {max_shard_size: lots}\n", [], "export.max_shard_size: must look like"),
        ("bad-repo", g + "push: {repo_id: noslash}\n", [], "push.repo_id: must look like 'user/name'"),
        (
            "empty-heads",
            g.replace("heads: [[0, 1]]", "heads: []"),
            [],
            "method.heads: must list at least one",
        ),
        ("heads-shape", g.replace("heads: [[0, 1]]", "heads: [[0]]"), [], "method.heads.0"),
        ("set-no-equals", g, ["--set", "method.scale"], "expected KEY=VALUE"),
        (
            "set-bad-type",
            g,
            ["--set", "method.scale=abc"],
            "error: --set 'method.scale=abc': method.scale: Input should be a valid number",
        ),
        (
            "bad-refine",
            g,
            ["--set", "method.refine=-1"],
            "--set 'method.refine=-1': method.refine: Input should be greater than or equal to 0",
        ),
        (
            "set-unknown",
            g,
            ["--set", "method.sacle=1"],
            "error: --set 'method.sacle=1': method.sacle: unknown field (did you mean 'scale'?)",
        ),
        ("missing-data", good(ws, target=ws / "nope.jsonl"), [], "data.target"),
        ("empty-data", good(ws, target=ws / "empty.jsonl"), [], "empty"),
        ("data-no-column", good(ws, target=ws / "nocol.jsonl"), [], "prompt"),
        ("data-bad-ext", good(ws, target=ws / "words.txt"), [], "data.target"),
        ("unknown-builtin", good(ws, target="moarl"), [], "did you mean 'moral'?"),
        ("model-missing", good(ws, model=ws / "nomodel"), [], "does not exist"),
        ("model-no-config", good(ws, model=ws / "noconfig"), [], "not a model directory (no config.json)"),
        ("model-pickle", good(ws, model=ws / "pickled"), [], "pickle (.bin) weights are refused"),
        ("unsupported-arch", good(ws, model=ws / "opt"), [], "unsupported architecture OPTForCausalLM"),
        ("out-not-run", g, ["--out", str(ws / "notrun")], "is not an editkit run"),
        ("push-no-repo", g, ["--push"], "push.repo_id: --push needs a Hub repo id"),
        ("resume-overwrite", g, ["--resume", "--overwrite"], "--resume and --overwrite contradict"),
        ("resume-no-out", g, ["--resume"], "--resume needs --out"),
        (
            "adapter-no-lora",
            g + "export: {adapter: true}\n",
            [],
            "export.adapter: method 'heads' makes no adapter",
        ),
        (
            "heads-out-of-range",
            g.replace("heads: [[0, 1]]", "heads: [[7, 0]]"),
            [],
            "method.heads: [7, 0] is out of range",
        ),
        ("recipe-missing", None, [], "no such recipe file, and no packaged recipe of that name"),
    ]


CASE_IDS = [c[0] for c in _cases(Path("/x"))]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, workspace, tmp_path, monkeypatch):
    _, text, args, expected = next(c for c in _cases(workspace) if c[0] == case)
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    if text is not None:
        recipe.write_text(text)
    before_ws, before_tmp = _snapshot(workspace), _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["apply", str(recipe), "--runs", str(tmp_path / "runs"), *args])
    msg = result.output.strip()
    assert result.exit_code == 2, (result.exit_code, msg, result.exception)
    assert result.output.startswith("error: "), repr(result.output[:40])  # no blank line before it
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith("error: "), msg
    assert expected in msg, msg
    assert _snapshot(workspace) == before_ws, "something was written next to the inputs"
    assert _snapshot(tmp_path) == before_tmp, "something was written (a run directory?)"


def test_corpus_is_big_enough():
    assert len(CASE_IDS) >= 30 and len(set(CASE_IDS)) == len(CASE_IDS)


def test_recipe_errors_name_the_file_and_line(workspace, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(good(workspace).replace("heads: [[0, 1]]", "haeds: [[0, 1]]"))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert f"{recipe}:5: method.haeds: unknown field (did you mean 'heads'?)" in result.output


def test_validate_accepts_good_and_reports_hash(workspace, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(good(workspace))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "✓" in result.output and "heads on" in result.output


def test_validate_checks_local_paths_without_a_model(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: t\nmodel: {tmp_path / 'no-model'}\nmethod: {{name: heads, heads: [[0, 1]]}}\n"
        f"data:\n  target: {tmp_path / 'no.jsonl'}\n  heldout: [morall, capitals]\n"
        "  sets: {extra: ./missing.csv}\neval: {blimp: ./no-blimp}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(recipe)], terminal_width=300)
    assert result.exit_code == 2, result.output
    out = result.output
    assert f"model.id: {tmp_path / 'no-model'} does not exist" in out
    assert f"data.target: file {tmp_path / 'no.jsonl'} does not exist" in out
    assert "data.heldout[0]: unknown built-in capability 'morall'" in out
    assert "data.sets.extra: file ./missing.csv does not exist" in out
    assert "eval.blimp: ./no-blimp does not exist" in out
    assert "✓" not in out
    assert "not checked without loading the model: that its architecture is supported" in out


def test_set_typo_is_blamed_on_the_argument_not_a_recipe_line(workspace, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(good(workspace))
    result = CliRunner().invoke(app, ["validate", str(recipe), "--set", "method.haeds=[[0, 1]]"])
    assert result.exit_code == 2
    assert (
        "✗ --set 'method.haeds=[[0, 1]]': method.haeds: unknown field (did you mean 'heads'?)"
        in result.output
    )
    assert f"{recipe}:" not in result.output


def test_help_shows_no_type_after_flags():
    result = CliRunner().invoke(app, ["apply", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "--push" in result.output and "KEY=VALUE" in result.output


def test_hub_model_without_network_is_one_line(tmp_path):
    """No network: one line naming the model and the endpoint, not transformers' retry log (23 lines)."""
    exe = Path(sys.executable).with_name("editkit")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), COLUMNS="300")
    res = subprocess.run(
        [str(exe), "eval", "someone/some-model", "--skip", "blimp"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: model.id: cannot download someone/some-model: the Hub")
    assert "http://127.0.0.1:9" in lines[0] and res.stdout == ""


def test_eval_skip_of_an_unknown_part_is_one_line_naming_the_parts(tmp_path):
    """`editkit eval --skip` takes the names of the registered suite parts; anything else stops before a model
    is looked for (the model here does not exist), exit 2, one line listing them."""
    from editkit.eval.parts import PARTS

    result = CliRunner().invoke(
        app, ["eval", str(tmp_path / "nothing"), "--skip", "blimpp"], terminal_width=300
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --skip: no suite part 'blimpp' (the parts: {', '.join(PARTS)})"
    ]


def test_real_console_script_exit_code(workspace, tmp_path):
    """The installed `editkit` entry point (not the in-process runner) exits 2 with one line on stderr."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nmodel: demo\nmethod: {name: heads, heads: [[0, 1]]}\nexprot: {}\n")
    exe = Path(sys.executable).with_name("editkit")
    env = {**os.environ, "COLUMNS": "200"}
    res = subprocess.run([str(exe), "validate", str(recipe)], capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"✗ {recipe}:4: exprot: unknown field (did you mean 'export'?)"
    ]


def test_apply_refuses_device_map_under_several_processes(workspace, tmp_path, monkeypatch):
    """Several processes each spreading their own copy over all devices: refuse before anything starts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(good(workspace))
    result = CliRunner().invoke(
        app, ["apply", str(recipe), "--runs", str(tmp_path / "runs"), "--set", "model.device_map=auto"]
    )
    assert result.exit_code == 2 and "model.device_map: spreading one model" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
