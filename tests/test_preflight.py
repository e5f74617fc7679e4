"""Fail before the long work: `apply --push` checks the token and the repo, and every run checks the export
destination, before the model is loaded — one line, exit code 2, nothing written (local Hub server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from editkit.cli.main import app
from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)

EDITKIT = str(Path(sys.executable).with_name("editkit"))
TOKEN = "hf_alice_preflight_token_123456"
READ_TOKEN = "hf_alice_readonly_token_654321"

RECIPE = """\
name: tiny-preflight
model: {model}
method: {{name: heads, heads: [[0, 1]]}}
data:
  target: {target}
  heldout: [{target}]
eval: {{blimp: false, robustness: false, max_items: 4, batch_size: 4}}
push: {{repo_id: alice/tiny-edited}}
"""


@pytest.fixture
def recipe(tmp_path):
    """A recipe whose model folder does not exist: reaching the model load would fail differently."""
    target = tmp_path / "t.jsonl"
    rows = [
        {"id": str(i), "split": "train" if i < 4 else "test", "prompt": "Up is", "correct": " up"}
        | {"incorrect": " down"}
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=tmp_path / "no-such-model", target=target))
    return path


def _apply(recipe: Path, run: Path, *extra: str):
    res = CliRunner().invoke(
        app, ["apply", str(recipe), "--out", str(run), *extra], terminal_width=400, catch_exceptions=False
    )
    return res.exit_code, res.output


@pytest.mark.parametrize(
    "token, sets, says",
    [
        (None, [], "no Hugging Face token: set HF_TOKEN"),
        ("hf_wrong_token_abcdefgh", [], "was rejected"),
        (READ_TOKEN, [], "read-only"),
        (TOKEN, ["push.repo_id=bob/not-mine"], "cannot create repos under 'bob'"),
        (TOKEN, ["push.repo_id=alice/handmade"], "--force"),
        (TOKEN, ["push.repo_id=alice/public", "push.private=true"], "is public"),
    ],
)
def test_push_problems_fail_before_the_model_loads(
    hub_server,  # noqa: F811
    recipe,
    tmp_path,
    monkeypatch,
    token,
    sets,
    says,
):
    hub_server.add_user("alice", TOKEN)
    hub_server.add_user("alice", READ_TOKEN, write=False)
    from huggingface_hub import HfApi

    api = HfApi(token=TOKEN)
    api.create_repo("alice/handmade")
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="notes.txt", repo_id="alice/handmade")
    api.create_repo("alice/public")
    n_requests = len(hub_server.requests)
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    run = tmp_path / "run"
    args = [a for s in sets for a in ("--set", s)]
    code, output = _apply(recipe, run, *args, "--push")
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], output
    assert "no-such-model" not in output  # the model was never looked at
    assert not run.exists()  # nothing written
    assert (token or "") not in output or token is None
    writes = [r for r in hub_server.requests[n_requests:] if r[0] not in ("GET", "HEAD")]
    assert writes == []  # the check only reads


def test_a_push_that_can_go_ahead_passes_the_check(hub_server, recipe, tmp_path, monkeypatch):  # noqa: F811
    """The same recipe with a good token gets past the check and fails only at the (missing) model."""
    hub_server.add_user("alice", TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, output = _apply(recipe, tmp_path / "run", "--push")
    assert code == 2 and "no-such-model" in output, output
    from editkit.publish.hub import check_push_access

    assert check_push_access("tiny-edited") == "alice/tiny-edited"  # bare names go to the token's owner


def test_export_destination_is_checked_before_the_model_loads(recipe, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "thesis.tex").write_text("years of work")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for dest, says in [(occupied, "is not an editkit export"), (a_file, "is not a folder")]:
        run = tmp_path / f"run-{dest.name}"
        code, output = _apply(recipe, run, "--set", f"export.dir={dest}")
        assert code == 2 and output.strip().startswith("error: export.dir: ") and says in output, output
        assert not run.exists()
    assert (occupied / "thesis.tex").read_text() == "years of work"


def test_cli_subprocess_no_token_is_one_line_exit_2(recipe, tmp_path):
    """As a new user meets it: a real process, offline Hub settings off, no token anywhere."""
    import os

    env = dict(os.environ, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="0", COLUMNS="300")
    env.pop("HF_TOKEN", None)
    run = tmp_path / "run"
    proc = subprocess.run(
        [EDITKIT, "apply", str(recipe), "--out", str(run), "--push"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was pushed"
    ]
    assert not run.exists()
