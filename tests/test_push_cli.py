"""`editkit apply --push` and `editkit push` as subprocesses against the real local Hub-protocol server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)

EDITKIT = str(Path(sys.executable).with_name("editkit"))
TOKEN = "hf_alice_secret_token_123456"

RECIPE = """\
name: tiny-push
model: {model}
method: {{name: heads, heads: [[0, 1]]}}
data:
  target: {target}
  heldout: [{target}]
eval: {{blimp: false, robustness: false, max_items: 4, batch_size: 4}}
push: {{repo_id: alice/tiny-edited}}
"""


def _env(tmp_path: Path, token: str | None = TOKEN) -> dict:
    env = dict(os.environ, HF_HOME=str(tmp_path / "client-hf-home"), COLUMNS="200")
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def _logits_from_hub(repo: str, tmp_path: Path, token: str | None) -> torch.Tensor:
    out = tmp_path / f"logits-{len(list(tmp_path.glob('logits-*')))}.pt"
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({repo!r}, dtype=torch.float32).eval()
        with torch.no_grad():
            torch.save(m(torch.tensor([[5, 17, 42, 7, 99]])).logits, {str(out)!r})
        """
    )
    env = _env(tmp_path, token)
    env["HF_HOME"] = str(tmp_path / f"clean-cache-{out.stem}")  # from a clean cache every time
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    return torch.load(out)


def _local_logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(torch.tensor([[5, 17, 42, 7, 99]])).logits


def test_apply_push_then_push_again_and_load_back(hub_server, tmp_path, tiny_dir):  # noqa: F811
    hub_server.add_user("alice", TOKEN)
    target = tmp_path / "t.jsonl"
    rows = [
        {
            "id": str(i),
            "split": "train" if i < 4 else "test",
            "prompt": "Stealing is",
            "correct": " wrong",
            "incorrect": " good",
        }
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=tiny_dir("llama"), target=target))
    run = tmp_path / "run"

    proc = subprocess.run(
        [EDITKIT, "apply", str(recipe), "--out", str(run), "--push"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert TOKEN not in proc.stdout + proc.stderr
    files = hub_server.repo_files("alice/tiny-edited")
    assert {
        "config.json",
        "model.safetensors",
        "README.md",
        "editkit/run.json",
        "editkit/edit.json",
        "editkit/tensors.safetensors",
    } <= set(files)
    assert len(hub_server.commits("alice/tiny-edited")) == 2  # "initial commit" + ONE editkit commit
    assert hub_server.commits("alice/tiny-edited")[0].startswith("editkit: heads edit")
    push_events = [
        json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if '"push"' in line
    ]
    assert any(e["type"] == "push" and e["repo_id"] == "alice/tiny-edited" for e in push_events)
    for f in run.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f

    # loading back with plain transformers from a clean cache gives the exported model
    assert torch.equal(_logits_from_hub("alice/tiny-edited", tmp_path, TOKEN), _local_logits(run / "model"))

    # the card that landed parses and says what it is
    from huggingface_hub import ModelCard

    card = ModelCard(files["README.md"].decode())
    assert "editkit" in card.data.tags and "capability-ablation" in card.data.tags

    # pushing twice works (editkit's own repo)
    again = subprocess.run(
        [EDITKIT, "push", str(run)], env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "pushed alice/tiny-edited" in again.stdout


def test_wrong_token_private_and_foreign_repo(hub_server, tmp_path, tiny_dir):  # noqa: F811
    from editkit import apply_recipe

    hub_server.add_user("alice", TOKEN)
    target = tmp_path / "t.jsonl"
    rows = [
        {
            "id": str(i),
            "split": "train" if i < 4 else "test",
            "prompt": "Up is the opposite of",
            "correct": " down",
            "incorrect": " up",
        }
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=tiny_dir("qwen2"), target=target))
    run = apply_recipe(recipe, out=tmp_path / "run").run_dir

    wrong = subprocess.run(
        [EDITKIT, "push", str(run), "--repo", "alice/x"],
        env=_env(tmp_path, "hf_wrong_token_abcdefgh"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 2
    lines = wrong.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: ") and "hf_wrong_token_abcdefgh" not in wrong.stderr
    )

    none = subprocess.run(
        [EDITKIT, "push", str(run), "--repo", "alice/x"],
        env=_env(tmp_path, None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert none.returncode == 2 and "HF_TOKEN" in none.stderr

    ok = subprocess.run(
        [EDITKIT, "push", str(run), "--repo", "alice/secret", "--private"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert hub_server.is_private("alice/secret")
    try:
        _logits_from_hub("alice/secret", tmp_path, None)
        raise AssertionError("a private repo was readable without a token")
    except RuntimeError:
        pass
    assert torch.equal(_logits_from_hub("alice/secret", tmp_path, TOKEN), _local_logits(run / "model"))

    # a repo that exists and was not made by editkit is refused unless --force
    from huggingface_hub import HfApi

    api = HfApi(token=TOKEN)
    api.create_repo("alice/handmade")
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="notes.txt", repo_id="alice/handmade")
    refused = subprocess.run(
        [EDITKIT, "push", str(run), "--repo", "alice/handmade"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "--force" in refused.stderr
    forced = subprocess.run(
        [EDITKIT, "push", str(run), "--repo", "alice/handmade", "--force"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert forced.returncode == 0, forced.stderr[-2000:]
