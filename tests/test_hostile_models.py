"""Hostile local model folders (issue 28, item 5): pickle-only weights, custom code (auto_map), symbolic
links leading outside the folder, damaged tokenizer/config/weights files. Each is one line naming the file,
exit code 2 and nothing written, through `editkit validate` and `editkit apply` (the real CLI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from editkit.cli.main import app
from tests.test_bad_input import TRIPLETS, _snapshot, good

#: importing this module would prove the custom code ran: it writes a file next to the model folders
EVIL_CODE = "from pathlib import Path\nPath(__file__).parent.parent.joinpath('PWNED').write_text('ran')\n"


def _copy(ws: Path, name: str) -> Path:
    d = ws / name
    shutil.copytree(ws / "tiny", d)
    return d


def _edit_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _pickle_only(ws: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    d = _copy(ws, "pickle-only")
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")  # a real pickle checkpoint
    (d / "model.safetensors").unlink()
    return d


def _auto_map(ws: Path) -> Path:
    d = _copy(ws, "auto-map")
    (d / "modeling_evil.py").write_text(EVIL_CODE)
    (d / "configuration_evil.py").write_text(EVIL_CODE)
    _edit_json(
        d / "config.json",
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        },
    )
    return d


def _auto_map_tokenizer(ws: Path) -> Path:
    d = _copy(ws, "auto-map-tok")
    (d / "tokenization_evil.py").write_text(EVIL_CODE)
    _edit_json(
        d / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    )
    return d


def _link_out(ws: Path) -> Path:
    d = _copy(ws, "link-out")
    (ws / "elsewhere").mkdir()
    (d / "model.safetensors").rename(ws / "elsewhere" / "x.safetensors")
    (d / "model.safetensors").symlink_to(ws / "elsewhere" / "x.safetensors")
    return d


def _relative_link_out(ws: Path) -> Path:
    """A harmless-looking extra file that is a relative link to a private file beside the folder."""
    d = _copy(ws, "relative-link-out")
    (ws / "secret.txt").write_text("hf_not_for_publication")
    (d / "notes.txt").symlink_to(Path("..") / "secret.txt")
    return d


def _dir_link_out(ws: Path) -> Path:
    d = _copy(ws, "dir-link-out")
    (ws / "outside-dir").mkdir()
    (d / "extra").mkdir()
    (d / "extra" / "data").symlink_to(ws / "outside-dir", target_is_directory=True)
    return d


def _broken_link(ws: Path) -> Path:
    d = _copy(ws, "broken-link")
    (d / "special_tokens_map.json").symlink_to(d / "gone.json")
    return d


def _write(name: str, file: str, text: str | bytes):
    def make(ws: Path) -> Path:
        d = _copy(ws, name)
        (d / file).write_bytes(text if isinstance(text, bytes) else text.encode())
        return d

    return make


def _truncated_weights(ws: Path) -> Path:
    d = _copy(ws, "truncated-weights")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return d


BUILDERS = {
    "pickle-only": _pickle_only,
    "auto-map": _auto_map,
    "auto-map-tok": _auto_map_tokenizer,
    "link-out": _link_out,
    "relative-link-out": _relative_link_out,
    "dir-link-out": _dir_link_out,
    "broken-link": _broken_link,
    "tokenizer-json-syntax": _write(
        "tokenizer-json-syntax", "tokenizer.json", '{"version": "1.0",\n  "model": }'
    ),
    "tokenizer-json-not-a-tokenizer": _write("tokenizer-json-not-a-tokenizer", "tokenizer.json", "{}"),
    "tokenizer-json-a-list": _write("tokenizer-json-a-list", "tokenizer.json", "[1, 2]"),
    "tokenizer-config-syntax": _write("tokenizer-config-syntax", "tokenizer_config.json", '{"eos_token": '),
    "tokenizer-config-binary": _write(
        "tokenizer-config-binary", "tokenizer_config.json", b"\xff\xfe\x00garbage"
    ),
    "config-syntax": _write("config-syntax", "config.json", "{'model_type': 'llama'}"),
    "garbage-weights": _write("garbage-weights", "model.safetensors", "this is not a safetensors file"),
    "truncated-weights": _truncated_weights,
}


def _weights_problem(d: Path, must_say: str) -> str:
    """editkit's safetensors header check (editkit.model.safetensors_header, shared with the streaming export)
    words the weights problems; the line must name the file and say ``must_say``."""
    from editkit.errors import EditkitError
    from editkit.model.safetensors_header import read_checked_header

    with pytest.raises(EditkitError) as e:
        read_checked_header(d / "model.safetensors")
    line = f"model.id: {e.value}"
    assert line.startswith(f"model.id: {d}/model.safetensors: ") and must_say in line, line
    return line


def expected(case: str, d: Path, ws: Path) -> str:
    """The one line each case must give (after 'error: ' or '✗ RECIPE: ')."""
    if case == "garbage-weights":  # the first 8 bytes, "this is ", read as the header length
        return _weights_problem(d, "not a safetensors file (header length 2338328219631577204)")
    if case == "truncated-weights":
        return _weights_problem(
            d,
            "truncated: tensor model.layers.0.mlp.gate_proj.weight claims bytes 196864..229632 of its data, "
            "the file holds 228944",
        )
    code = "refused unless you set model.trust_remote_code: true (only for code you have read)"
    link = "outside the model folder; refused (an export copies and publishes the folder's files): copy the file in instead"
    return {
        "pickle-only": f"model.id: {d} has no .safetensors weights; pickle (.bin) weights are refused "
        "unless you set model.allow_pickle: true",
        "auto-map": f"model.id: {d}/config.json asks to run code shipped with the model "
        f"(auto_map: AutoConfig, AutoModelForCausalLM); {code}",
        "auto-map-tok": f"model.id: {d}/tokenizer_config.json asks to run code shipped with the model "
        f"(auto_map: AutoTokenizer); {code}",
        "link-out": f"model.id: {d}: model.safetensors is a symbolic link to {ws.resolve()}/elsewhere/x.safetensors, "
        + link,
        "relative-link-out": f"model.id: {d}: notes.txt is a symbolic link to {ws.resolve()}/secret.txt, "
        + link,
        "dir-link-out": f"model.id: {d}: extra/data is a symbolic link to {ws.resolve()}/outside-dir, "
        + link,
        "broken-link": f"model.id: {d}: special_tokens_map.json is a broken symbolic link (to {d}/gone.json)",
        "tokenizer-json-syntax": f"model.id: {d}/tokenizer.json is not valid JSON (line 2 column 12: Expecting value)",
        "tokenizer-json-not-a-tokenizer": f"model.id: {d}/tokenizer.json is not a valid tokenizer file: "
        "Model missing. at line 1 column 2",
        "tokenizer-json-a-list": f"model.id: {d}/tokenizer.json must hold a JSON object (a mapping)",
        "tokenizer-config-syntax": f"model.id: {d}/tokenizer_config.json is not valid JSON "
        "(line 1 column 15: Expecting value)",
        "tokenizer-config-binary": f"model.id: {d}/tokenizer_config.json is not UTF-8 text",
        "config-syntax": f"model.id: {d}/config.json is not valid JSON "
        "(line 1 column 2: Expecting property name enclosed in double quotes)",
    }[case]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from tests.tiny import save_tiny

    root = tmp_path_factory.mktemp("hostile")
    save_tiny("llama", root / "tiny")
    (root / "moral.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRIPLETS))
    folders = {case: build(root) for case, build in BUILDERS.items()}
    return root, folders


def _recipe(tmp_path: Path, ws_root: Path, model: Path) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(good(ws_root, model=model))
    return recipe


@pytest.mark.parametrize("case", list(BUILDERS))
def test_apply_refuses_in_one_line_and_writes_nothing(case, ws, tmp_path, monkeypatch):
    root, folders = ws
    d = folders[case]
    monkeypatch.chdir(tmp_path)
    recipe = _recipe(tmp_path, root, d)
    before_ws, before_tmp = _snapshot(root), _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["apply", str(recipe), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.output.splitlines() == [f"error: {expected(case, d, root)}"]
    assert not (tmp_path / "runs").exists()
    assert _snapshot(tmp_path) == before_tmp, "something was written (a run directory?)"
    assert _snapshot(root) == before_ws, "something was written next to the model folders"
    assert not (root / "PWNED").exists(), "the model's own code ran"


@pytest.mark.parametrize("case", list(BUILDERS))
def test_validate_refuses_in_one_line(case, ws, tmp_path):
    root, folders = ws
    d = folders[case]
    recipe = _recipe(tmp_path, root, d)
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"✗ {recipe}: {expected(case, d, root)}"
    assert len(lines) == 2 and lines[1].startswith("not checked without loading the model")
    assert not (root / "PWNED").exists()


def test_each_refusal_is_opened_by_its_own_switch(ws, tmp_path):
    """The pickle and custom-code refusals are gates, not dead ends: the recipe field lets them through."""
    root, folders = ws
    for case, switch in (
        ("pickle-only", "model.allow_pickle=true"),
        ("auto-map", "model.trust_remote_code=true"),
    ):
        recipe = _recipe(tmp_path, root, folders[case])
        result = CliRunner().invoke(app, ["validate", str(recipe), "--set", switch])
        assert result.exit_code == 0, (case, result.output)
        assert result.output.startswith(f"✓ {recipe}: t (heads on {folders[case]}), hash "), result.output
    assert not (root / "PWNED").exists()


def test_links_that_stay_inside_are_accepted(ws, tmp_path):
    """A link inside the folder, and a Hub cache snapshot (files linked to ../../blobs), are fine."""
    root, _ = ws
    inside = root / "link-inside"
    shutil.copytree(root / "tiny", inside)
    (inside / "weights").mkdir()
    (inside / "model.safetensors").rename(inside / "weights" / "model.safetensors")
    (inside / "model.safetensors").symlink_to(Path("weights") / "model.safetensors")
    snap = root / "hub" / "models--org--tiny" / "snapshots" / "0123abc"
    blobs = root / "hub" / "models--org--tiny" / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in sorted((root / "tiny").iterdir()):
        shutil.copy(f, blobs / f"blob-{f.name}")
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / f"blob-{f.name}")
    for folder in (inside, snap):
        recipe = _recipe(tmp_path, root, folder)
        result = CliRunner().invoke(app, ["validate", str(recipe)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"✓ {recipe}: t (heads on {folder}), hash "), result.output
    # the same layout outside a Hub cache (no models--* folder above) is refused: the links leave the folder
    plain = root / "not-a-cache" / "snapshots" / "rev"
    plain.parent.mkdir(parents=True)
    shutil.copytree(snap, plain, symlinks=True)
    (root / "not-a-cache" / "blobs").symlink_to(blobs, target_is_directory=True)
    result = CliRunner().invoke(app, ["validate", str(_recipe(tmp_path, root, plain))])
    assert result.exit_code == 2
    assert (
        f"model.id: {plain}: config.json is a symbolic link to {blobs.resolve()}/blob-config.json, "
        in result.output
    )


def test_tokenizer_that_transformers_cannot_read_is_one_line_at_load(ws, tmp_path, monkeypatch):
    """A tokenizer.json the tokenizers library reads but transformers does not (no added_tokens): caught
    when the model loads, still before the run directory exists."""
    root, _ = ws
    d = root / "no-added-tokens"
    shutil.copytree(root / "tiny", d)
    data = json.loads((d / "tokenizer.json").read_text())
    del data["added_tokens"]
    (d / "tokenizer.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    recipe = _recipe(tmp_path, root, d)
    result = CliRunner().invoke(app, ["apply", str(recipe), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output.splitlines() == [
        f"error: model.id: could not load the tokenizer of {d}: KeyError: 'added_tokens'"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


@pytest.mark.parametrize(("command", "case"), [("apply", "link-out"), ("validate", "auto-map")])
def test_installed_console_script(command, case, ws, tmp_path):
    """The real `editkit` entry point in a fresh process: exit 2, one line on stderr, no run directory."""
    root, folders = ws
    recipe = _recipe(tmp_path, root, folders[case])
    exe = Path(sys.executable).with_name("editkit")
    env = {**os.environ, "COLUMNS": "300"}
    args = ["--runs", str(tmp_path / "runs")] if command == "apply" else []
    res = subprocess.run(
        [str(exe), command, str(recipe), *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert res.returncode == 2, res.stderr
    prefix = "error: " if command == "apply" else f"✗ {recipe}: "
    assert res.stderr.splitlines() == [prefix + expected(case, folders[case], root)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]
    assert not (root / "PWNED").exists()
