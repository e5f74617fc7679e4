"""Publish an editkit run folder to the Hugging Face Hub as one commit.

Why the care: a push is the only step that touches someone else's property (a Hub namespace) with a secret
(the token). So it refuses to overwrite repos editkit did not create, never lets the token reach a message or
a log, makes one atomic commit (a half-pushed model is worse than none), and on network trouble retries with
exponential backoff and then says plainly whether anything landed. huggingface_hub retries the upload requests
itself (preupload, LFS); editkit retries the whole push when another request fails (whoami, repo info and
creation, the commit), waiting at least what a ``Retry-After`` asks. A retried commit whose first try did land
is not made twice: huggingface_hub skips a commit that changes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from editkit.errors import HubError, scrub_secrets
from editkit.run.events import is_run_dir, load_metrics, run_model_dir

RUN_MARKER = "editkit/run.json"  # present in every editkit push; how a later push recognises the repo
RETRY_BASE_WAIT_S = 1.0  # first backoff wait; doubles on each retry
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# Stages whose requests huggingface_hub already retries itself (``http_backoff``: preupload, LFS batch, PUT and
# verify): retrying the whole push on top would multiply its ~23 s of backoff per failing request.
_HF_RETRIED_STAGES = {"upload"}
_SKIP_PARTS = {".git", ".cache", "__pycache__"}
_EMPTY_REPO_FILES = {".gitattributes"}  # what the Hub puts in a freshly created repo

log = logging.getLogger(__name__)


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    token_env: str = "HF_TOKEN",
    force: bool = False,
    commit_message: str | None = None,
    extra_folders: dict[str, Path] | None = None,
    retries: int = 3,
    endpoint: str | None = None,
) -> dict:
    """Push `folder` (plus `extra_folders`, keyed by their path in the repo) to `repo_id` in one commit.

    The token comes from the environment variable `token_env`, else from the saved login (`hf auth login`).
    An existing repo is only written to if it already holds editkit files (`editkit/...`) or is empty,
    unless `force`. `endpoint` defaults to huggingface_hub's (HF_ENDPOINT). Returns {repo_id, url, commit}.
    """
    files = _collect_files(Path(folder), extra_folders or {})
    if RUN_MARKER not in files:
        raise HubError(
            f"{folder}: no {RUN_MARKER} in the folder to push; only editkit run outputs can be pushed"
        )
    token, token_source = _find_token(token_env)

    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise HubError("cannot push: Hugging Face offline mode is on (HF_HUB_OFFLINE=1); unset it and retry")
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"editkit: upload {Path(folder).resolve().name}"
    state = {"created": False, "stage": "start"}

    attempt = 0
    while True:
        try:
            return _push_once(api, repo_id, files, private=private, force=force, message=message, state=state)
        except HubError:
            raise
        except (
            Exception
        ) as err:  # classify below; never re-raise the raw error (it may carry request details)
            if not _is_transient(err):
                raise HubError(_explain(err, repo_id, api.endpoint, token, token_source, token_env)) from None
            if attempt >= retries or state["stage"] in _HF_RETRIED_STAGES:
                raise HubError(
                    _network_failure(err, repo_id, api.endpoint, attempt + 1, state, token)
                ) from None
            wait = max(RETRY_BASE_WAIT_S * 2**attempt, _retry_after(err) or 0)
            log.warning(
                "Hub request failed (%s); retry %d/%d in %.1fs",
                type(err).__name__,
                attempt + 1,
                retries,
                wait,
            )
            time.sleep(wait)
            attempt += 1


def _push_once(api, repo_id: str, files: dict[str, Path], *, private, force, message, state) -> dict:
    from huggingface_hub import CommitOperationAdd

    state["stage"] = "check"
    repo_id, info = _check_repo(api, repo_id, private=private, force=force)
    if info is None:
        state["stage"] = "create"
        api.create_repo(repo_id, private=private)
        state["created"] = True
        info = api.model_info(repo_id)

    operations = [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in sorted(files.items())
    ]
    state["stage"] = "upload"
    api.preupload_lfs_files(repo_id, additions=operations, free_memory=False)
    state["stage"] = "commit"
    commit = api.create_commit(repo_id, operations=operations, commit_message=message, parent_commit=info.sha)
    state["stage"] = "done"
    return {"repo_id": repo_id, "url": f"{api.endpoint}/{repo_id}", "commit": commit.oid}


def _check_repo(api, repo_id: str, *, private: bool, force: bool):
    """(full repo id, its info or None when it does not exist yet) after checking we may write there.

    Read-only requests only: the token works and may write, the repo is editkit's (or empty, or ``force``)
    or does not exist and lies in a namespace the token may create repos in."""
    from huggingface_hub.errors import RepositoryNotFoundError

    me = api.whoami()
    if "/" not in repo_id:
        repo_id = f"{me['name']}/{repo_id}"
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"{repo_id}: the token is read-only; create a token with write access and retry")
    try:
        info = api.model_info(repo_id)
    except RepositoryNotFoundError:
        info = None
    if info is None:
        namespace = repo_id.split("/", 1)[0]
        orgs = {o.get("name"): o.get("roleInOrg") for o in me.get("orgs") or [] if isinstance(o, dict)}
        if namespace != me.get("name") and (namespace not in orgs or orgs[namespace] == "read"):
            raise HubError(
                f"{repo_id}: the repo does not exist and the token's user {me.get('name')!r} cannot create "
                f"repos under {namespace!r}; use your own namespace or an organisation you can write to"
            )
        return repo_id, None
    remote = {s.rfilename for s in info.siblings or []}
    ours = any(p.startswith("editkit/") for p in remote)
    if not ours and not remote <= _EMPTY_REPO_FILES and not force:
        raise HubError(
            f"{repo_id}: the repo exists and has no editkit/ files (not made by editkit); "
            "pick another repo id or pass force=True (--force) to add this run to it"
        )
    if private and not info.private:
        raise HubError(
            f"{repo_id}: private push requested but the existing repo is public; "
            "make it private on the Hub or push without --private"
        )
    return repo_id, info


def check_push_access(
    repo_id: str,
    *,
    private: bool = False,
    token_env: str = "HF_TOKEN",
    force: bool = False,
    endpoint: str | None = None,
) -> str:
    """Before any long work: a token is there, the Hub accepts it and it can write ``repo_id``.

    Nothing is created or uploaded. Returns the full repo id; raises HubError with one line otherwise."""
    token, token_source = _find_token(token_env)
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise HubError("cannot push: Hugging Face offline mode is on (HF_HUB_OFFLINE=1); unset it and retry")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        return _check_repo(api, repo_id, private=private, force=force)[0]
    except HubError:
        raise
    except Exception as err:  # noqa: BLE001 - never re-raise the raw error (it may carry request details)
        if _is_transient(err):
            raise HubError(
                f"cannot check push access: {_network_failure(err, repo_id, api.endpoint, 1, {'stage': 'check', 'created': False}, token)}"
            ) from None
        raise HubError(_explain(err, repo_id, api.endpoint, token, token_source, token_env)) from None


def _collect_files(folder: Path, extra_folders: dict[str, Path]) -> dict[str, Path]:
    """path_in_repo -> local file, for the folder and each extra folder (mounted under its key)."""
    files: dict[str, Path] = {}
    for prefix, root in [("", folder), *sorted(extra_folders.items())]:
        root = Path(root)
        if not root.is_dir():
            raise HubError(f"{root}: not a folder; nothing was pushed")
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or _SKIP_PARTS & set(rel.parts):
                continue
            key = "/".join(filter(None, [prefix.strip("/"), rel.as_posix()]))
            if key in files:
                raise HubError(f"{path}: {key} is provided twice (folder and extra_folders overlap)")
            files[key] = path
    return files


def _find_token(token_env: str) -> tuple[str, str]:
    token = (os.environ.get(token_env) or "").strip()
    if token:
        return token, f"${token_env}"
    from huggingface_hub import get_token

    token = get_token()
    if token:
        return token, "the saved login (hf auth login)"
    raise HubError(f"no Hugging Face token: set {token_env} or run `hf auth login`; nothing was pushed")


def _causes(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _status(err: BaseException) -> int | None:
    for e in _causes(err):
        response = getattr(e, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return response.status_code
    return None


def _retry_after(err: BaseException) -> int | None:
    """Seconds the Hub asked us to wait (``Retry-After: N`` on a 429/503), if it did."""
    for e in _causes(err):
        headers = getattr(getattr(e, "response", None), "headers", None) or {}
        value = str(headers.get("Retry-After", "")).strip()
        if value.isdigit():
            return int(value)
    return None


def _httpx():
    try:  # huggingface_hub 2.x talks through httpx2
        import httpx2 as httpx
    except ImportError:  # huggingface_hub 1.x
        import httpx
    return httpx


def _is_transient(err: BaseException) -> bool:
    if any(isinstance(e, _httpx().TransportError) for e in _causes(err)):
        return True
    return _status(err) in _TRANSIENT_STATUS


def _scrub(text: str, token: str) -> str:
    """One line, token removed (even though no huggingface_hub message should hold it), and URLs without
    their query (an LFS upload URL is pre-signed: its query is a credential too)."""
    text = scrub_secrets(str(text).replace(token, "<token>"))
    text = re.sub(r"(https?://[^\s'\"?]+)\?[^\s'\"]*", r"\1", text)
    return " ".join(text.split())


def _explain(err, repo_id, endpoint, token, token_source, token_env) -> str:
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError

    status = _status(err)
    kinds = [type(e) for e in _causes(err)]
    if OfflineModeIsEnabled in kinds:
        return "cannot push: Hugging Face offline mode is on (HF_HUB_OFFLINE=1); unset it and retry"
    if status == 401 and RepositoryNotFoundError not in kinds:
        fix = (
            f"set a valid token in {token_env}"
            if token_source.startswith("$")
            else "run `hf auth login --force`"
        )
        return f"the token from {token_source} was rejected by {endpoint} (401): {fix}; nothing was pushed"
    if status == 403:
        return (
            f"{repo_id}: the token has no write access to this repo or namespace (403); "
            "use a write token of the repo's owner; nothing was pushed"
        )
    if RepositoryNotFoundError in kinds:
        return f"{repo_id}: repo not found or not visible to this token ({status}); nothing was pushed"
    if status == 409:
        return f"{repo_id}: the repo was created by someone else meanwhile (409); run the push again"
    if status == 412:
        return f"{repo_id}: the repo changed while pushing (412); nothing was pushed, run the push again"
    first = _scrub(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, token)
    where = f" (HTTP {status})" if status else ""
    return f"{repo_id}: push failed{where}: {type(err).__name__}: {first}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _network_failure(err, repo_id, endpoint, attempts, state, token) -> str:
    """One line: what went wrong (status, unreachable, dropped connection), after how many tries, what to
    do, and whether anything landed."""
    httpx = _httpx()
    causes = list(_causes(err))
    # the request's own error (huggingface_hub wraps a failed LFS upload in "Error while uploading 'f'...")
    inner = next((e for e in causes if getattr(e, "response", None) is not None), None)
    inner = inner or next((e for e in causes if isinstance(e, httpx.TransportError)), err)
    reason = f"{type(inner).__name__}: {_first_line(inner)}"
    if inner is not err:
        reason = f"{_first_line(err)} {reason}"
    reason = _scrub(reason, token)
    status = _status(err)
    if status:
        what = f"the Hub kept answering HTTP {status}"
        todo = (
            f"the Hub is rate-limiting: wait a few minutes, then push {repo_id} again"
            if status == 429
            else f"the Hub is having trouble: push {repo_id} again later"
        )
    else:
        if any(isinstance(e, httpx.ConnectError) for e in causes):
            what = f"could not talk to {endpoint}"
        elif any(isinstance(e, httpx.TimeoutException) for e in causes):
            what = f"{endpoint} stopped answering (timeout)"
        else:
            what = f"the connection to {endpoint} dropped"
        todo = f"check the network (and HF_ENDPOINT), then push {repo_id} again"
    if state["stage"] in _HF_RETRIED_STAGES:
        tries = "after huggingface_hub's retries"
    else:
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    never_sent = any(isinstance(e, httpx.ConnectError) for e in causes) or status is not None
    if state["stage"] == "commit" and not never_sent:
        outcome = f"the commit may or may not have been recorded: check {endpoint}/{repo_id}"
    else:
        outcome = "nothing was pushed"
        if state["created"]:
            outcome += f" (the empty repo {repo_id} was created)"
    return f"{what} {tries} ({reason}); {todo}; {outcome}"


def push_run(
    run_dir: str | Path,
    repo_id: str | None = None,
    *,
    private: bool | None = None,
    token_env: str | None = None,
    force: bool = False,
) -> dict:
    """Push a run's exported model folder (weights, config, tokenizer, card, editkit/ artifact, adapter/).

    Defaults come from the run's resolved recipe (``push:`` block). Returns {repo_id, url, commit}.
    """
    import yaml

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise HubError(f"{run_dir}: not an editkit run directory")
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    push_cfg = recipe.get("push") or {}
    repo_id = repo_id or push_cfg.get("repo_id")
    if not repo_id:
        raise HubError(f"{run_dir}: no repo id; pass --repo user/name or set push.repo_id in the recipe")
    metrics, record = load_metrics(run_dir)
    model_dir = run_model_dir(run_dir, metrics)
    if not (model_dir / "config.json").exists():
        raise HubError(f"{run_dir}: no exported model to push (run `editkit apply` to the end first)")
    target = ((recipe.get("data") or {}).get("target") or {}).get("source")
    message = (
        f"editkit: {recipe.get('method', {}).get('name', '?')} edit"
        + (f" removing '{target}'" if target else "")
        + f" from {record.base_model or recipe.get('model', {}).get('id')} (recipe {record.recipe_hash or '?'})"
    )
    return push_folder(
        model_dir,
        repo_id,
        private=bool(push_cfg.get("private", False) if private is None else private),
        token_env=token_env or push_cfg.get("token_env") or "HF_TOKEN",
        force=force or bool(push_cfg.get("force", False)),
        commit_message=message,
    )
