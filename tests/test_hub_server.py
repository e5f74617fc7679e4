"""The local Hub server against the real huggingface_hub + transformers clients.

If these pass, a push that works against `hub_server` exercises the same requests the real Hub would get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)
from tests.tiny import tiny_config

INPUT_IDS = [[1, 5, 9, 2, 77, 3, 14, 15]]


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny random Llama saved as safetensors, plus the logits it gives on INPUT_IDS."""
    torch.manual_seed(0)
    cfg = tiny_config("llama", 97, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    with torch.no_grad():
        logits = model(torch.tensor(INPUT_IDS)).logits
    return folder, logits


def test_upload_and_from_pretrained_in_a_subprocess(hub_server, tiny_model_dir, tmp_path):  # noqa: F811
    """The honest path: a fresh interpreter that only knows HF_ENDPOINT, with an empty HF_HOME cache."""
    folder, logits = tiny_model_dir
    hub_server.add_user("alice", "hf_alice_token")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from huggingface_hub import HfApi
        from transformers import AutoModelForCausalLM
        api = HfApi()
        url = api.create_repo("alice/tiny")
        commit = api.upload_folder(folder_path={str(folder)!r}, repo_id="alice/tiny", commit_message="add model")
        model = AutoModelForCausalLM.from_pretrained("alice/tiny", dtype=torch.float32).eval()
        with torch.no_grad():
            torch.save(model(torch.tensor({INPUT_IDS})).logits, {str(tmp_path / "logits.pt")!r})
        print(url, commit.oid)
        """
    )
    env = dict(os.environ, HF_HOME=str(tmp_path / "fresh-hf-home"), HF_TOKEN="hf_alice_token")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    url, oid = proc.stdout.split()[-2:]
    assert url == f"{hub_server.url}/alice/tiny"
    assert torch.equal(torch.load(tmp_path / "logits.pt"), logits)

    files = hub_server.repo_files("alice/tiny")
    assert set(files) == {".gitattributes", "config.json", "generation_config.json", "model.safetensors"}
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert hub_server.lfs_files("alice/tiny") == {"model.safetensors"}
    assert hub_server.commits("alice/tiny") == ["add model", "initial commit"]
    assert [m for m, p, _ in hub_server.requests if p.startswith("/_lfs_upload/")] == ["PUT"]
    # the weights were downloaded by GET /resolve after a HEAD, from a clean cache
    # transformers pins the commit from model_info().sha, then HEAD+GETs each file at that commit
    assert ("GET", f"/alice/tiny/resolve/{oid}/model.safetensors", 200) in hub_server.requests
    assert ("HEAD", f"/alice/tiny/resolve/{oid}/adapter_config.json", 404) in hub_server.requests


def test_private_repo_round_trip_in_process(hub_server, tiny_model_dir, tmp_path):  # noqa: F811
    folder, logits = tiny_model_dir
    hub_server.add_user("alice", "tok-a")
    hub_server.add_user("bob", "tok-b")
    api = HfApi(token="tok-a")
    api.create_repo("alice/secret", private=True)
    first = api.upload_folder(folder_path=folder, repo_id="alice/secret")
    assert hub_server.is_private("alice/secret")

    model = AutoModelForCausalLM.from_pretrained(
        "alice/secret", token="tok-a", cache_dir=tmp_path / "cache", dtype=torch.float32
    ).eval()
    with torch.no_grad():
        assert torch.equal(model(torch.tensor(INPUT_IDS)).logits, logits)

    info = api.model_info("alice/secret", files_metadata=True)
    assert info.private is True and info.sha == first.oid
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["model.safetensors"] == (folder / "model.safetensors").stat().st_size
    assert next(s for s in info.siblings if s.rfilename == "model.safetensors").lfs is not None

    # Invisible to anonymous callers and to other users, exactly like a missing repo.
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token="tok-b").model_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/secret", "config.json", token="tok-b", cache_dir=tmp_path / "c2")
    with pytest.raises(OSError):  # transformers wraps RepositoryNotFoundError
        AutoModelForCausalLM.from_pretrained("alice/secret", token=False, cache_dir=tmp_path / "c3")


def test_wrong_token_is_401_and_foreign_namespace_is_403(hub_server, tmp_path):  # noqa: F811
    hub_server.add_user("alice", "tok-a")
    hub_server.add_user("reader", "tok-r", write=False)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="not-a-token").whoami()
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="not-a-token").create_repo("alice/x")
    assert err.value.response.status_code == 401

    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="tok-a").create_repo("someone-else/x")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="tok-r").create_repo("reader/x")
    assert err.value.response.status_code == 403

    HfApi(token="tok-a").create_repo("alice/pub")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="tok-r").upload_file(
            path_or_fileobj=tmp_path / "a.txt", path_in_repo="a.txt", repo_id="alice/pub"
        )
    assert err.value.response.status_code == 403
    assert set(hub_server.repo_files("alice/pub")) == {".gitattributes"}


def test_existing_repo_second_push_and_errors(hub_server, tiny_model_dir, tmp_path):  # noqa: F811
    folder, _ = tiny_model_dir
    hub_server.add_user("alice", "tok-a")
    api = HfApi(token="tok-a")
    api.create_repo("alice/m")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/m")
    assert err.value.response.status_code == 409
    assert api.create_repo("alice/m", exist_ok=True) == f"{hub_server.url}/alice/m"

    first = api.upload_folder(folder_path=folder, repo_id="alice/m", commit_message="one")
    uploads_before = sum(p.startswith("/_lfs_upload/") for _, p, _ in hub_server.requests)
    # Same content again: the client sees the oids from /preupload and skips the commit entirely.
    again = api.upload_folder(folder_path=folder, repo_id="alice/m", commit_message="same")
    assert again.oid == first.oid
    # A changed small file + unchanged weights: a new commit, no new LFS upload (dedup by sha256).
    cfg = json.loads((folder / "config.json").read_text())
    cfg["editkit_note"] = "second push"
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "notes").mkdir()
    (folder / "notes" / "a.md").write_text("# notes\n")
    second = api.upload_folder(folder_path=folder, repo_id="alice/m", commit_message="two")
    assert second.oid != first.oid
    assert sum(p.startswith("/_lfs_upload/") for _, p, _ in hub_server.requests) == uploads_before
    assert hub_server.commits("alice/m") == ["two", "one", "initial commit"]
    assert json.loads(hub_server.repo_files("alice/m")["config.json"])["editkit_note"] == "second push"
    assert (
        json.loads(hub_server.repo_files("alice/m", revision=first.oid)["config.json"]).get("editkit_note")
        is None
    )

    tree = {e.path for e in api.list_repo_tree("alice/m")}
    assert tree == {".gitattributes", "config.json", "generation_config.json", "model.safetensors", "notes"}
    assert {e.path for e in api.list_repo_tree("alice/m", path_in_repo="notes")} == {"notes/a.md"}
    assert api.list_repo_files("alice/m") == sorted(tree - {"notes"} | {"notes/a.md"})

    path = hf_hub_download(
        "alice/m", "config.json", revision=first.oid, token="tok-a", cache_dir=tmp_path / "c"
    )
    assert "editkit_note" not in json.loads(open(path).read())
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/m", "nope.json", token="tok-a", cache_dir=tmp_path / "c")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/m", "config.json", revision="v9", token="tok-a", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        (folder / "README.md").write_text("---\nlicense: [unclosed\n---\nbody\n")
        api.upload_file(path_or_fileobj=folder / "README.md", path_in_repo="README.md", repo_id="alice/m")

    api.delete_file("notes/a.md", repo_id="alice/m")
    assert "notes/a.md" not in hub_server.repo_files("alice/m")


def test_unrouted_requests_are_recorded(hub_server):  # noqa: F811
    """The fixture's guard: anything the server does not implement is recorded (then the test would fail)."""
    hub_server.add_user("alice", "tok-a")
    HfApi(token="tok-a").create_repo("alice/m")
    with pytest.raises(HfHubHTTPError):
        HfApi(token="tok-a").list_repo_commits("alice/m")
    assert hub_server.unrouted == ["GET /api/models/alice/m/commits/main"]
    hub_server.unrouted.clear()  # expected here; any other test with an entry fails at teardown
