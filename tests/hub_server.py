"""A local Hugging Face Hub-protocol HTTP server for tests: real sockets, the real huggingface_hub client.

It speaks the part of the Hub protocol that huggingface_hub 2.4 uses with ``HF_HUB_DISABLE_XET=1``: whoami,
README metadata validation, repo create/delete, preupload, NDJSON commits, the git-LFS batch API (basic
transfer: signed PUT + verify), model/dataset info, tree listing, refs and ``/resolve`` downloads (HEAD and GET
with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``/``X-Linked-Size``). Access control follows the real Hub:
private repos are "not found" for everyone but their owner, a token the server does not know is a 401, a
read-only token or a foreign namespace is a 403.

Faults (``HubServer.fault``) make the server misbehave on purpose for the requests matching a pattern: answer
an HTTP error (with ``Retry-After`` if asked), cut the connection halfway through the request body (nothing
processed), or process the request and cut the connection before answering (the client never learns the
outcome). ``requests`` records a cut connection with status ``DROPPED``.

Every request the server has no route for (or a commit line it does not understand) is recorded in
``unrouted``; the ``hub_server`` fixture fails the test when anything was recorded, so a huggingface_hub
upgrade that changes the protocol is noticed instead of silently talking to a wrong fake.

Use in a test module (or conftest.py)::

    from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import yaml

DROPPED = 0  # the status ``HubServer.requests`` records for a connection a fault cut before any answer
REGULAR_MAX_BYTES = 10 * 1024 * 1024  # the Hub refuses larger non-LFS files
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gguf *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack"
        " *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/*"
        " *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
    ).split()
)


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _Entry:
    """One file of one commit. Content lives in the blob store under its sha256."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str  # git blob oid of the content (regular) or of the LFS pointer (LFS), as the Hub reports it

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class _Commit:
    oid: str
    parent: str | None
    summary: str
    description: str
    files: dict[str, _Entry]
    date: str


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    owner: str
    private: bool
    created_at: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


@dataclass
class _User:
    name: str
    token: str
    write: bool


@dataclass
class Fault:
    """Misbehave on the requests whose ``"METHOD /path"`` matches ``pattern`` (``re.search``).

    The first ``skip`` matching requests go through; the next ``times`` (every later one when None) get
    ``status`` (plus ``Retry-After: retry_after`` when given), or ``drop="request"``: the connection is cut
    halfway through the request body and nothing is processed, or ``drop="response"``: the request is
    processed, then the connection is cut before the answer. ``hits`` counts the requests it hit."""

    pattern: str
    status: int | None = None
    retry_after: int | None = None
    drop: str | None = None
    skip: int = 0
    times: int | None = 1
    seen: int = 0
    hits: int = 0

    def __post_init__(self):
        if (self.status is None) == (self.drop is None) or self.drop not in (None, "request", "response"):
            raise ValueError("a Fault needs either status=... or drop='request'|'response'")

    def take(self, request_line: str) -> bool:
        if not re.search(self.pattern, request_line):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.hits >= self.times):
            return False
        self.hits += 1
        return True


class _HttpError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, body=None
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.body = body


class _Unrouted(Exception):
    """The request is well-formed HTTP but this server does not implement it."""


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_TYPE = r"(?P<type>models|datasets)"
_PREFIX = r"(?:(?P<prefix>datasets)/)?"


class HubServer:
    """In-memory repos + on-disk content-addressed blobs, served over HTTP on 127.0.0.1."""

    def __init__(self, storage: Path):
        self.storage = Path(storage)
        (self.storage / "blobs").mkdir(parents=True, exist_ok=True)
        self.users: dict[str, _User] = {}
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.unrouted: list[str] = []
        self.errors: list[str] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status); never headers
        self._lock = threading.RLock()
        self._secret = secrets.token_bytes(16)
        self._fail_next: list[int] = []
        self.faults: list[Fault] = []
        self._counter = 0
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ----------------------------------------------------------------- control (test side)
    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections, so clients really see a dead server."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._httpd = None

    def add_user(self, name: str, token: str, *, write: bool = True) -> None:
        self.users[token] = _User(name=name, token=token, write=write)

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next `n` requests with `status` (a flaky Hub, for retry tests)."""
        with self._lock:
            self._fail_next.extend([status] * n)

    def fault(self, pattern: str, **plan) -> Fault:
        """Add a `Fault` (see there) for the requests matching `pattern`; the first matching fault applies."""
        fault = Fault(pattern, **plan)
        with self._lock:
            self.faults.append(fault)
        return fault

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            return next((f for f in self.faults if f.take(f"{method} {path}")), None)

    def repo_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        commit = repo.commits[repo.branches.get(revision, revision)]
        return {path: self._blob(entry.sha256).read_bytes() for path, entry in sorted(commit.files.items())}

    def lfs_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> set[str]:
        repo = self.repos[(repo_type, repo_id)]
        commit = repo.commits[repo.branches.get(revision, revision)]
        return {path for path, entry in commit.files.items() if entry.lfs}

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Commit summaries of `main`, newest first (the repo-creation commit included)."""
        repo = self.repos[(repo_type, repo_id)]
        out, oid = [], repo.branches["main"]
        while oid is not None:
            out.append(repo.commits[oid].summary)
            oid = repo.commits[oid].parent
        return out

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        return self.repos[(repo_type, repo_id)].private

    def point_client_here(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Aim huggingface_hub (this process and subprocesses) at this server, online, without Xet."""
        from huggingface_hub import constants

        token_path = str(self.storage / "saved-login" / "token")
        for name, value in {
            "ENDPOINT": self.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": self.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_TOKEN_PATH": token_path,
            "HF_STORED_TOKENS_PATH": str(Path(token_path).parent / "stored_tokens"),
        }.items():
            monkeypatch.setattr(constants, name, value)
        monkeypatch.setenv("HF_ENDPOINT", self.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_TOKEN_PATH", token_path)
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE"):
            monkeypatch.delenv(var, raising=False)

    # ----------------------------------------------------------------- storage helpers
    def _blob(self, sha256: str) -> Path:
        return self.storage / "blobs" / sha256

    def _store_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self._blob(sha)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def _new_commit(self, repo: _Repo, parent: str | None, summary: str, description: str, files) -> _Commit:
        with self._lock:
            self._counter += 1
            seed = json.dumps([repo.repo_id, parent, summary, self._counter, sorted(files)], sort_keys=True)
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = _Commit(oid, parent, summary, description, dict(files), _now())
        repo.commits[oid] = commit
        return commit

    def _repo_url(self, repo: _Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.url}/{prefix}{repo.repo_id}"

    # ----------------------------------------------------------------- request plumbing
    def _routes(self):
        return [
            ("GET", r"^/api/whoami-v2$", self._whoami),
            ("GET", r"^/api/agent-harnesses$", self._agent_harnesses),
            ("POST", r"^/api/validate-yaml$", self._validate_yaml),
            ("POST", r"^/api/repos/create$", self._create_repo),
            ("DELETE", r"^/api/repos/delete$", self._delete_repo),
            ("GET", rf"^/api/{_TYPE}/{_REPO}$", self._info),
            ("GET", rf"^/api/{_TYPE}/{_REPO}/revision/(?P<rev>[^/]+)$", self._info),
            ("GET", rf"^/api/{_TYPE}/{_REPO}/refs$", self._refs),
            ("GET", rf"^/api/{_TYPE}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", self._tree),
            ("POST", rf"^/api/{_TYPE}/{_REPO}/preupload/(?P<rev>[^/]+)$", self._preupload),
            ("POST", rf"^/api/{_TYPE}/{_REPO}/commit/(?P<rev>[^/]+)$", self._commit),
            ("POST", rf"^/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch$", self._lfs_batch),
            ("POST", rf"^/{_PREFIX}{_REPO}\.git/info/lfs/objects/verify$", self._lfs_verify),
            ("PUT", r"^/_lfs_upload/(?P<oid>[0-9a-f]{64})$", self._lfs_put),
            ("HEAD", rf"^/{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", self._resolve),
            ("GET", rf"^/{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", self._resolve),
        ]

    def handle(self, req: _Handler) -> None:
        split = urlsplit(req.path)
        query = parse_qs(split.query, keep_blank_values=True)
        fault = self._fault_for(req.command, split.path)
        if fault is not None and fault.drop == "request":
            self.requests.append((req.command, split.path, DROPPED))  # before the client can notice
            req.cut(read_half_body=True)
            return
        body = req.read_body()
        status = 500
        try:
            with self._lock:
                fail = self._fail_next.pop(0) if self._fail_next else None
            if fail is not None:
                raise _HttpError(fail, f"Injected failure {fail}")
            if fault is not None and fault.status is not None:
                extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                raise _HttpError(fault.status, f"Injected failure {fault.status}", headers=extra)
            for method, pattern, fn in self._routes():
                match = re.match(pattern, split.path)
                if match and method == req.command:
                    groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    if "type" in groups:
                        groups["type"] = groups["type"][:-1]  # models -> model
                    if "prefix" in groups:
                        groups["type"] = groups.pop("prefix")[:-1]
                    status, headers, payload = fn(req, query, body, **groups)
                    break
            else:
                raise _Unrouted()
        except _Unrouted as err:
            detail = f": {err}" if str(err) else ""
            self.unrouted.append(f"{req.command} {req.path}{detail}")
            status, headers, payload = (
                404,
                {"X-Error-Message": "not routed"},
                {"error": "Not routed by test hub"},
            )
        except _HttpError as err:
            status = err.status
            headers = dict(err.headers)
            headers["X-Error-Message"] = err.message
            if err.code:
                headers["X-Error-Code"] = err.code
            payload = err.body if err.body is not None else {"error": err.message}
        except Exception as err:  # a server bug: report it, fail the test
            self.errors.append(f"{req.command} {req.path}: {type(err).__name__}: {err}")
            status, headers, payload = 500, {}, {"error": "internal test-server error"}
        if fault is not None and fault.drop == "response":
            status = DROPPED
        self.requests.append((req.command, split.path, status))
        if status == DROPPED:
            req.cut()
        else:
            req.respond(status, headers, payload)

    # ----------------------------------------------------------------- auth & lookup
    def _user(self, req: _Handler) -> _User | None:
        auth = req.headers.get("Authorization")
        if auth is None:
            return None
        scheme, _, token = auth.partition(" ")
        user = self.users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise _HttpError(401, INVALID_CREDENTIALS)
        return user

    def _readable(self, req: _Handler, repo_type: str, repo_id: str) -> tuple[_Repo, _User | None]:
        user = self._user(req)
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and (user is None or user.name != repo.owner)):
            # Like the Hub: anonymous callers get 401, others 404; both say RepoNotFound.
            raise _HttpError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo, user

    def _writable(self, req: _Handler, repo_type: str, repo_id: str) -> tuple[_Repo, _User]:
        repo, user = self._readable(req, repo_type, repo_id)
        if user is None:
            raise _HttpError(401, "You must be authenticated to write to this repo", "RepoNotFound")
        if not user.write or user.name != repo.owner:
            raise _HttpError(403, f"You don't have the rights to write to {repo_type} {repo_id}")
        return repo, user

    @staticmethod
    def _commit_at(repo: _Repo, rev: str) -> _Commit:
        oid = repo.branches.get(rev, rev)
        if oid not in repo.commits:
            raise _HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]

    @staticmethod
    def _json(body: bytes):
        try:
            return json.loads(body or b"null")
        except ValueError as err:
            raise _HttpError(400, f"Invalid JSON body: {err}") from None

    # ----------------------------------------------------------------- routes
    def _whoami(self, req, query, body):
        user = self._user(req)
        if user is None:
            raise _HttpError(401, "Invalid username or password.")
        role = "write" if user.write else "read"
        return (
            200,
            {},
            {
                "type": "user",
                "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
                "name": user.name,
                "fullname": user.name,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            },
        )

    def _agent_harnesses(self, req, query, body):
        """huggingface_hub >= 2.x fetches this registry once a day to tag its user agent; serve an empty one."""
        return 200, {}, {"standardEnvVars": [], "harnesses": {}}

    def _validate_yaml(self, req, query, body):
        self._user(req)
        content = (self._json(body) or {}).get("content", "")
        try:
            _front_matter(content)
        except yaml.YAMLError as err:
            message = " ".join(str(err).split())
            raise _HttpError(
                400, "Invalid YAML", body={"errors": [{"message": message}], "warnings": []}
            ) from None
        return 200, {}, {"errors": [], "warnings": []}

    def _create_repo(self, req, query, body):
        user = self._user(req)
        if user is None:
            raise _HttpError(401, "You must be authenticated to create a repo")
        payload = self._json(body) or {}
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "dataset"):
            raise _Unrouted(f"repo type {repo_type!r}")
        namespace = payload.get("organization") or user.name
        repo_id = f"{namespace}/{payload['name']}"
        if not user.write or namespace != user.name:
            raise _HttpError(
                403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"'
            )
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                repo = self.repos[(repo_type, repo_id)]
                raise _HttpError(
                    409,
                    f"You already created this {repo_type} repo",
                    body={"error": f"You already created this {repo_type} repo", "url": self._repo_url(repo)},
                )
            private = payload.get("visibility") == "private" or payload.get("private") is True
            repo = _Repo(repo_id, repo_type, user.name, private, _now())
            data = DEFAULT_GITATTRIBUTES.encode()
            entry = _Entry(self._store_blob(data), len(data), False, _git_blob_oid(data))
            repo.branches["main"] = self._new_commit(
                repo, None, "initial commit", "", {".gitattributes": entry}
            ).oid
            self.repos[(repo_type, repo_id)] = repo
        return (
            200,
            {},
            {
                "url": self._repo_url(repo),
                "name": repo_id,
                "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            },
        )

    def _delete_repo(self, req, query, body):
        payload = self._json(body) or {}
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or getattr(self._user(req), 'name', '')}/{payload['name']}"
        self._writable(req, repo_type, repo_id)
        with self._lock:
            del self.repos[(repo_type, repo_id)]
        return 200, {}, {}

    def _info(self, req, query, body, type, repo, rev="main"):
        repo_obj, _ = self._readable(req, type, repo)
        commit = self._commit_at(repo_obj, rev)
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if entry.lfs:
                    sibling["lfs"] = {
                        "size": entry.size,
                        "sha256": entry.sha256,
                        "pointerSize": entry.pointer_size,
                    }
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "author": repo_obj.owner,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo_obj.created_at,
            "private": repo_obj.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if type == "model":
            info["modelId"] = repo
        if "README.md" in commit.files:
            card = _front_matter(self._blob(commit.files["README.md"].sha256).read_text("utf-8"))
            if isinstance(card, dict):
                info["cardData"] = card
                info["tags"] = list(card.get("tags") or [])
                if card.get("library_name"):
                    info["library_name"] = card["library_name"]
        if "config.json" in commit.files and type == "model":
            try:
                config = json.loads(self._blob(commit.files["config.json"].sha256).read_bytes())
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
            except ValueError:
                pass
        if "expand" in query:
            keep = set(query["expand"]) | {"_id", "id"}
            info = {k: v for k, v in info.items() if k in keep}
        return 200, {}, info

    def _refs(self, req, query, body, type, repo):
        repo_obj, _ = self._readable(req, type, repo)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
            for name, oid in repo_obj.branches.items()
        ]
        return 200, {}, {"branches": branches, "converts": [], "tags": []}

    def _tree(self, req, query, body, type, repo, rev, path=""):
        repo_obj, _ = self._readable(req, type, repo)
        commit = self._commit_at(repo_obj, rev)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        folders: set[str] = set()
        files = []
        for file_path, entry in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                item = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": file_path}
                if entry.lfs:
                    item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
                files.append(item)
        if path and not files and not folders:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        dirs = [
            {
                "type": "directory",
                "oid": hashlib.sha1(f"{commit.oid}:{d}".encode()).hexdigest(),
                "size": 0,
                "path": d,
            }
            for d in sorted(folders)
        ]
        return 200, {}, dirs + files

    def _lfs_mode(self, commit: _Commit, path: str, size: int, sample: bytes) -> bool:
        patterns = []
        if ".gitattributes" in commit.files:
            for line in self._blob(commit.files[".gitattributes"].sha256).read_text("utf-8").splitlines():
                pattern, *attrs = line.split()
                if "filter=lfs" in attrs:
                    patterns.append(pattern)
        name = path.rsplit("/", 1)[-1]
        matched = any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns)
        return matched or size > REGULAR_MAX_BYTES or b"\0" in sample

    def _preupload(self, req, query, body, type, repo, rev):
        repo_obj, _ = self._writable(req, type, repo)
        if "create_pr" in query:
            raise _Unrouted("pull requests")
        commit = self._commit_at(repo_obj, rev)
        out = []
        for item in (self._json(body) or {}).get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            lfs = self._lfs_mode(commit, item["path"], int(item["size"]), sample)
            info = {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            existing = commit.files.get(item["path"])
            if existing is not None:  # lets the client skip unchanged files
                info["oid"] = existing.sha256 if existing.lfs else existing.git_oid
            out.append(info)
        return 200, {}, {"files": out, "commitOid": commit.oid}

    def _commit(self, req, query, body, type, repo, rev):
        repo_obj, user = self._writable(req, type, repo)
        if "create_pr" in query:
            raise _Unrouted("pull requests")
        if rev not in repo_obj.branches:
            raise _HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        with self._lock:
            head = repo_obj.commits[repo_obj.branches[rev]]
            parent = header.get("parentCommit")
            if parent is not None and parent != head.oid:
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _Unrouted(f"commit file encoding {value.get('encoding')!r}")
                    data = base64.b64decode(value["content"])
                    if len(data) > REGULAR_MAX_BYTES:
                        raise _HttpError(400, f"{path} is larger than 10 MiB: upload it with LFS")
                    files[path] = _Entry(self._store_blob(data), len(data), False, _git_blob_oid(data))
                elif key == "lfsFile":
                    oid, size = value["oid"], value.get("size")
                    blob = self._blob(oid)
                    if value.get("algo") != "sha256" or not blob.exists():
                        raise _HttpError(422, f"LFS object {oid} for {path} was never uploaded")
                    if size is not None and blob.stat().st_size != size:
                        raise _HttpError(422, f"LFS object {oid} for {path} has the wrong size")
                    size = blob.stat().st_size
                    files[path] = _Entry(oid, size, True, _git_blob_oid(_lfs_pointer(oid, size)))
                elif key == "deletedFile":
                    if path not in files:
                        raise _HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    gone = [p for p in files if p.startswith(prefix)]
                    if not gone:
                        raise _HttpError(404, "A folder with this name doesn't exist", "EntryNotFound")
                    for p in gone:
                        del files[p]
                else:
                    raise _Unrouted(f"commit operation {key!r}")
            commit = self._new_commit(
                repo_obj, head.oid, header.get("summary", ""), header.get("description", ""), files
            )
            repo_obj.branches[rev] = commit.oid
        url = f"{self._repo_url(repo_obj)}/commit/{commit.oid}"
        return 200, {}, {"success": True, "commitOid": commit.oid, "commitUrl": url, "hookOutput": ""}

    def _sign(self, repo: str, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{repo}|{oid}|{size}".encode(), hashlib.sha256).hexdigest()

    def _lfs_batch(self, req, query, body, repo, type="model"):
        self._writable(req, type, repo)
        payload = self._json(body) or {}
        if payload.get("operation") != "upload":
            raise _Unrouted(f"LFS operation {payload.get('operation')!r}")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise _Unrouted(f"LFS transfers {payload.get('transfers')!r}")
        prefix = "" if type == "model" else f"{type}s/"
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            out = {"oid": oid, "size": size, "authenticated": True}
            blob = self._blob(oid)
            if not (blob.exists() and blob.stat().st_size == size):
                query_string = f"repo={quote(repo, safe='')}&size={size}&sig={self._sign(repo, oid, size)}"
                out["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs_upload/{oid}?{query_string}"},
                    "verify": {
                        "href": f"{self.url}/{prefix}{repo}.git/info/lfs/objects/verify",
                        "header": {},
                    },
                }
            objects.append(out)
        headers = {"Content-Type": "application/vnd.git-lfs+json"}
        return 200, headers, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_put(self, req, query, body, oid):
        """The storage side (S3 on the real Hub): no auth header, a signed URL instead."""
        repo = query.get("repo", [""])[0]
        size = int(query.get("size", ["-1"])[0])
        if not hmac.compare_digest(query.get("sig", [""])[0], self._sign(repo, oid, size)):
            raise _HttpError(403, "Bad upload signature")
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise _HttpError(400, "Uploaded content does not match its oid/size")
        self._store_blob(body)
        return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""

    def _lfs_verify(self, req, query, body, repo, type="model"):
        self._writable(req, type, repo)
        payload = self._json(body) or {}
        blob = self._blob(payload.get("oid", ""))
        if not blob.exists() or blob.stat().st_size != payload.get("size"):
            raise _HttpError(404, "Object not found in LFS storage")
        return 200, {}, {"success": True}

    def _resolve(self, req, query, body, repo, rev, path, type="model"):
        repo_obj, _ = self._readable(req, type, repo)
        commit = self._commit_at(repo_obj, rev)
        entry = commit.files.get(path)
        if entry is None:
            raise _HttpError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        blob = self._blob(entry.sha256)
        start, end, status = 0, entry.size, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
        if match and entry.size:
            start = int(match.group(1))
            end = min(entry.size, int(match.group(2)) + 1) if match.group(2) else entry.size
            if start >= entry.size:
                raise _HttpError(
                    416, "Range not satisfiable", headers={"Content-Range": f"bytes */{entry.size}"}
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        return status, headers, _FileSlice(blob, start, end)


@dataclass(frozen=True)
class _FileSlice:
    path: Path
    start: int
    end: int


def _front_matter(text: str):
    """The YAML block between the leading '---' lines of a model card (None when absent)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    return yaml.safe_load(match.group(1)) if match else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the client expects from the Hub
    server_hub: HubServer

    def setup(self):
        super().setup()
        with self.server_hub._lock:
            self.server_hub._connections.add(self.connection)

    def finish(self):
        with self.server_hub._lock:
            self.server_hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):  # quiet: the hub records requests itself
        pass

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def cut(self, *, read_half_body: bool = False) -> None:
        """Drop the connection without an answer (after reading half the request body, if asked)."""
        if read_half_body and self.headers.get("Content-Length"):
            self.rfile.read(int(self.headers["Content-Length"]) // 2)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def respond(self, status: int, headers: dict, payload) -> None:
        if isinstance(payload, _FileSlice):
            length = payload.end - payload.start
        else:
            if not isinstance(payload, bytes):
                payload = json.dumps(payload).encode()
                headers.setdefault("Content-Type", "application/json; charset=utf-8")
            length = len(payload)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        if isinstance(payload, _FileSlice):
            with open(payload.path, "rb") as fh:
                fh.seek(payload.start)
                remaining = length
                while remaining:
                    chunk = fh.read(min(remaining, 1 << 20))
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        else:
            self.wfile.write(payload)

    def _dispatch(self):
        self.server_hub.handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch


@pytest.fixture
def hub_server(tmp_path_factory, monkeypatch):
    """A running HubServer with huggingface_hub aimed at it; fails the test on unrouted requests."""
    server = HubServer(tmp_path_factory.mktemp("hub-storage")).start()
    server.point_client_here(monkeypatch)
    try:
        yield server
    finally:
        server.stop()
        try:
            from huggingface_hub.utils import close_session

            close_session()  # drop pooled keep-alive connections to this (now dead) server
        except ImportError:
            pass
    problems = [f"unrouted: {u}" for u in server.unrouted] + [f"server error: {e}" for e in server.errors]
    if problems:
        pytest.fail(
            "test Hub server saw requests it does not implement:\n" + "\n".join(problems), pytrace=False
        )
