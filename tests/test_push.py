"""editkit.publish.hub.push_folder against the local Hub-protocol server (real HTTP, real huggingface_hub)."""

from __future__ import annotations

import json
import logging
import socket

import pytest
import torch
from huggingface_hub import HfApi, constants
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from editkit.errors import HubError
from editkit.publish import hub
from editkit.publish.hub import push_folder
from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)
from tests.tiny import tiny_config

TOKEN = "hf_editkitTestSecret0123456789abcdef"  # must never show up anywhere
ENV = "EDITKIT_TEST_HF_TOKEN"
CARD = "---\nlicense: apache-2.0\ntags:\n- editkit\n---\n# tiny, with a capability removed\n"


@pytest.fixture
def run_folder(tmp_path):
    """What an editkit run exports: a tiny model, a card and the editkit/run.json marker."""
    torch.manual_seed(0)
    cfg = tiny_config("llama", 97, max_position_embeddings=64)
    folder = tmp_path / "run" / "model"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    (folder / "README.md").write_text(CARD)
    (folder / "editkit").mkdir()
    (folder / "editkit" / "run.json").write_text(json.dumps({"method": "heads", "run_id": "r1"}))
    return folder


@pytest.fixture
def alice(hub_server, monkeypatch):  # noqa: F811
    hub_server.add_user("alice", TOKEN)
    monkeypatch.setenv(ENV, TOKEN)
    monkeypatch.setattr(hub, "RETRY_BASE_WAIT_S", 0.01)
    return hub_server


def _local_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_creates_repo_in_one_commit_and_loads_back(alice, run_folder, tmp_path):
    out = push_folder(run_folder, "alice/tiny-edited", token_env=ENV, commit_message="editkit run r1")
    assert out["repo_id"] == "alice/tiny-edited"
    assert out["url"] == f"{alice.url}/alice/tiny-edited"
    assert alice.commits("alice/tiny-edited") == ["editkit run r1", "initial commit"]
    remote = alice.repo_files("alice/tiny-edited")
    assert remote == {".gitattributes": remote[".gitattributes"], **_local_files(run_folder)}
    assert alice.lfs_files("alice/tiny-edited") == {"model.safetensors"}
    assert not alice.is_private("alice/tiny-edited")
    assert HfApi(token=False).model_info("alice/tiny-edited").sha == out["commit"]

    reloaded = AutoModelForCausalLM.from_pretrained(
        "alice/tiny-edited", cache_dir=tmp_path / "cache", token=False
    )
    local = AutoModelForCausalLM.from_pretrained(run_folder)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, local(ids).logits)


def test_repo_id_without_namespace_goes_to_the_token_owner(alice, run_folder):
    out = push_folder(run_folder, "bare-name", token_env=ENV)
    assert out["repo_id"] == "alice/bare-name"
    assert alice.commits("alice/bare-name")[0] == "editkit: upload model"


def test_second_push_to_an_editkit_repo_with_extra_folders(alice, run_folder, tmp_path):
    first = push_folder(run_folder, "alice/m", token_env=ENV)
    artifacts = tmp_path / "artifact"
    artifacts.mkdir()
    (artifacts / "head_mask.json").write_text("[[0, 1]]")
    (run_folder / "editkit" / "run.json").write_text(json.dumps({"method": "heads", "run_id": "r2"}))
    second = push_folder(run_folder, "alice/m", token_env=ENV, extra_folders={"editkit/artifact": artifacts})
    assert second["commit"] != first["commit"]
    assert len(alice.commits("alice/m")) == 3
    remote = alice.repo_files("alice/m")
    assert remote["editkit/artifact/head_mask.json"] == b"[[0, 1]]"
    assert json.loads(remote["editkit/run.json"])["run_id"] == "r2"


def test_refuses_a_repo_editkit_did_not_make_unless_forced(alice, run_folder, tmp_path):
    api = HfApi(token=TOKEN)
    api.create_repo("alice/handmade")
    api.upload_file(path_or_fileobj=b"mine", path_in_repo="weights.txt", repo_id="alice/handmade")
    with pytest.raises(HubError, match=r"alice/handmade: the repo exists and has no editkit/ files .*force"):
        push_folder(run_folder, "alice/handmade", token_env=ENV)
    assert len(alice.commits("alice/handmade")) == 2  # untouched
    push_folder(run_folder, "alice/handmade", token_env=ENV, force=True)
    assert alice.repo_files("alice/handmade")["weights.txt"] == b"mine"
    assert "editkit/run.json" in alice.repo_files("alice/handmade")

    # An empty repo (only the Hub's .gitattributes) is fine without force.
    api.create_repo("alice/empty")
    push_folder(run_folder, "alice/empty", token_env=ENV)


def test_private_push_and_public_repo_mismatch(alice, run_folder):
    push_folder(run_folder, "alice/priv", token_env=ENV, private=True)
    assert alice.is_private("alice/priv")
    push_folder(run_folder, "alice/pub", token_env=ENV)
    with pytest.raises(HubError, match="private push requested but the existing repo is public"):
        push_folder(run_folder, "alice/pub", token_env=ENV, private=True)


def test_missing_marker_is_refused_before_any_request(alice, run_folder):
    (run_folder / "editkit" / "run.json").unlink()
    with pytest.raises(HubError, match="no editkit/run.json"):
        push_folder(run_folder, "alice/x", token_env=ENV)
    assert alice.requests == []


def test_no_token_names_the_variable_and_login(alice, run_folder, monkeypatch):
    monkeypatch.delenv(ENV)
    with pytest.raises(HubError) as err:
        push_folder(run_folder, "alice/x", token_env=ENV)
    assert str(err.value) == f"no Hugging Face token: set {ENV} or run `hf auth login`; nothing was pushed"


def test_saved_login_is_used_when_the_variable_is_unset(alice, run_folder, monkeypatch):
    monkeypatch.delenv(ENV)
    path = constants.HF_TOKEN_PATH  # patched by the fixture into the server's tmp dir
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(TOKEN)
    assert push_folder(run_folder, "alice/via-login", token_env=ENV)["repo_id"] == "alice/via-login"


def test_wrong_token_is_a_clear_401(alice, run_folder, monkeypatch):
    monkeypatch.setenv(ENV, "hf_wrongWrongWrong")
    with pytest.raises(HubError) as err:
        push_folder(run_folder, "alice/x", token_env=ENV)
    assert str(err.value) == (
        f"the token from ${ENV} was rejected by {alice.url} (401): set a valid token in {ENV}; nothing was pushed"
    )
    assert "hf_wrongWrongWrong" not in str(err.value)


def test_no_write_access_is_a_clear_403(alice, run_folder, monkeypatch):
    alice.add_user("bob", "hf_bobToken")
    HfApi(token="hf_bobToken").create_repo("bob/theirs")
    with pytest.raises(HubError, match=r"^bob/theirs: the token has no write access .*\(403\)"):
        push_folder(run_folder, "bob/theirs", token_env=ENV)
    with pytest.raises(
        HubError, match=r"^carol/new: the repo does not exist and .* cannot create repos under 'carol'"
    ):
        push_folder(run_folder, "carol/new", token_env=ENV)
    alice.add_user("reader", "hf_readOnly", write=False)
    monkeypatch.setenv(ENV, "hf_readOnly")
    with pytest.raises(HubError, match="^reader/x: the token is read-only"):
        push_folder(run_folder, "reader/x", token_env=ENV)


def test_transient_errors_are_retried_with_backoff(alice, run_folder):
    alice.fail_next(3, status=503)  # the first request of each of 3 attempts fails
    out = push_folder(run_folder, "alice/flaky", token_env=ENV, retries=3)
    assert [s for m, p, s in alice.requests if p == "/api/whoami-v2"] == [503, 503, 503, 200]
    assert alice.commits("alice/flaky")[0] == "editkit: upload model" and out["commit"]

    alice.fail_next(3, status=502)
    with pytest.raises(HubError) as err:
        push_folder(run_folder, "alice/flaky2", token_env=ENV, retries=2)
    assert str(err.value).startswith("the Hub kept answering HTTP 502 after 3 attempts")
    assert str(err.value).endswith("nothing was pushed")
    assert ("model", "alice/flaky2") not in alice.repos


def test_stopped_server_fails_saying_nothing_was_pushed(alice, run_folder):
    alice.stop()
    with pytest.raises(HubError) as err:
        push_folder(run_folder, "alice/x", token_env=ENV, retries=2)
    msg = str(err.value)
    assert msg.startswith(f"could not talk to {alice.url} after 3 attempts (ConnectError")
    assert msg.endswith("; nothing was pushed") and "\n" not in msg


def test_closed_port_endpoint(alice, run_folder):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(HubError, match=rf"could not talk to http://127.0.0.1:{port} after 2 attempts"):
        push_folder(run_folder, "alice/x", token_env=ENV, retries=1, endpoint=f"http://127.0.0.1:{port}")


def test_offline_mode_is_reported(alice, run_folder, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="offline mode is on"):
        push_folder(run_folder, "alice/x", token_env=ENV)


def test_token_is_never_printed_logged_or_written(alice, run_folder, tmp_path, caplog, capfd, monkeypatch):
    caplog.set_level(logging.DEBUG)
    alice.add_user("bob", "hf_bobToken")
    HfApi(token="hf_bobToken").create_repo("bob/theirs")
    messages = []
    for kwargs in ({"repo_id": "bob/theirs"}, {"repo_id": "alice/ok"}, {"repo_id": "alice/ok"}):
        try:
            push_folder(run_folder, token_env=ENV, **kwargs)
        except HubError as err:
            messages.append(str(err))
    alice.fail_next(2)
    push_folder(run_folder, "alice/ok2", token_env=ENV, retries=2)
    alice.stop()
    with pytest.raises(HubError) as err:
        push_folder(run_folder, "alice/down", token_env=ENV, retries=1)
    messages.append(str(err.value))
    assert len(messages) == 2
    out, errs = capfd.readouterr()
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    written += b"".join(p.read_bytes() for p in alice.storage.rglob("*") if p.is_file())
    for place in [*messages, caplog.text, out, errs]:
        assert TOKEN not in place
    assert TOKEN.encode() not in written
