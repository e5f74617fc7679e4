"""The evaluation cache's storage: where entries live, what identifies a model's weights, and one entry file.

Two caches keep the base model's measurements here, so a later run with the same weights and settings reads
them instead of measuring again: the refusal evaluation (``editkit.eval.refusal.base_cache``) and the base
phase of the general suite and removal checks (``editkit.eval.phase_cache``).

* Where: ``$EDITKIT_EVAL_CACHE``, default ``$EDITKIT_HOME/eval-cache`` (``~/.cache/editkit/eval-cache``). Every
  file there is safe to delete: a missing entry is measured again.
* Weights: sha256 of every top-level file of the model folder (name and content), each file's sha256 memoised
  by (path, size, mtime, ctime, inode) in ``file-sha256.json``; a Hub model by its commit.
* Entry: one ``.safetensors`` file — tensors as tensors, everything else as JSON in its metadata, with a sha256
  over both. Written to a temporary file, flushed and renamed, so a reader sees a whole entry or none; a file
  that does not read back whole raises :class:`DamagedEntry` (the caller measures again).
* Code in a key: ``source_digest`` — the syntax tree, without comments, docstrings or layout, so an edit to
  the documentation of a scorer keeps its entries (a qwen judge pass is ~12 min on 2 cores).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import transformers

from editkit.model.pypi import editkit_home

CACHE_ENV = "EDITKIT_EVAL_CACHE"
MEMO = "file-sha256.json"


def cache_dir() -> Path:
    """``$EDITKIT_EVAL_CACHE``, else ``$EDITKIT_HOME/eval-cache``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else editkit_home() / "eval-cache"


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def source_digest(source: bytes | str) -> str:
    """sha256 of Python source as the interpreter runs it: its syntax tree without comments, docstrings and
    layout (source that does not parse: its bytes)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return sha(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return sha(ast.dump(tree))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, flush it to disk, rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------
# what the weights are
# ------------------------------------------------------------------------------------------------------


def _read_memo(root: Path) -> dict:
    try:
        memo = json.loads((root / MEMO).read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def file_sha256(path: Path, memo: dict) -> str:
    """sha256 of a file's content; reused from ``memo`` while its (size, mtime, ctime, inode) are the same."""
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    rec = memo.get(real)
    if isinstance(rec, list) and rec[:4] == stamp and isinstance(rec[-1], str):
        return rec[-1]
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        while chunk := fh.read(1 << 23):
            h.update(chunk)
    memo[real] = stamp + [h.hexdigest()]
    return h.hexdigest()


def folder_digest(folder: Path, root: Path, write_memo: bool = True) -> tuple[str, int]:
    """sha256 over every top-level file of a model folder (name and content; hidden files left out), and
    how many bytes had to be read (0 when every file's digest was memoised in ``root``)."""
    memo = _read_memo(root)
    lines, read = [], 0
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        real = os.path.realpath(f)
        old = memo.get(real)
        lines.append(f"{f.name}\0{file_sha256(f, memo)}")
        if memo[real] is not old:  # read, not memoised
            read += memo[real][0]
    if write_memo and read:
        live = {k: v for k, v in memo.items() if os.path.exists(k)}
        try:
            atomic_write(root / MEMO, lambda t: t.write_text(json.dumps(live, indent=0)))
        except OSError:  # a read-only or full cache: the hashes are computed again next time
            pass
    return sha("\n".join(lines)), read


def model_identity(path: str, model, root: Path, write_memo: bool = True) -> tuple[str | None, str, int]:
    """(identity, why not, bytes hashed): ``files:<sha256>`` of a model folder, ``hub:<id>@<commit>`` of a
    Hub model transformers resolved to a commit; None (and the reason) when neither is known."""
    if path and Path(path).is_dir():
        digest, read = folder_digest(Path(path), root, write_memo)
        return f"files:{digest}", "", read
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if path and commit:
        return f"hub:{path}@{commit}", "", 0
    return None, "the model was not loaded from a folder or a known Hub commit", 0


def spec_fields(spec) -> dict:
    """The model spec's fields that change the loaded weights (beyond the folder's content)."""
    keys = ("dtype", "revision", "gguf_file", "trust_remote_code")
    return {k: getattr(spec, k, None) for k in keys} if spec is not None else {}


def runtime_fields(model, spec) -> dict:
    """What besides the weights' content decides a loaded model's outputs: the spec's loading fields, the
    parameters' dtype and device, the attention implementation, the torch and transformers versions."""
    param = next(model.parameters())
    return {
        "model_spec": spec_fields(spec),
        "dtype": str(param.dtype),
        "device": param.device.type,
        "attn": getattr(getattr(model, "config", None), "_attn_implementation", None),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


# ------------------------------------------------------------------------------------------------------
# one entry file
# ------------------------------------------------------------------------------------------------------


class DamagedEntry(Exception):
    """A cache file that cannot be read back whole (truncated, altered, or not an entry of this key)."""


def _checksum(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_payload(path: Path, field: str, payload: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Store ``payload`` (JSON) under metadata ``field`` and ``tensors`` in one file, atomically."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    text = json.dumps(payload, ensure_ascii=False)
    meta = {field: text, "sha256": _checksum(text, tensors)}
    atomic_write(path, lambda t: safetensors.torch.save_file(tensors, str(t), metadata=meta))


def read_payload(path: Path, field: str) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """(payload, tensors) of ``path``; None when there is no such file; DamagedEntry when it is not whole."""
    if not path.exists():
        return None
    try:
        with safetensors.safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except Exception as e:  # safetensors raises its own error types for a torn or foreign file
        raise DamagedEntry(f"unreadable: {type(e).__name__}") from None
    text = meta.get(field)
    if not text or meta.get("sha256") != _checksum(text, tensors):
        raise DamagedEntry("checksum mismatch")
    try:
        payload = json.loads(text)
    except ValueError:
        raise DamagedEntry("bad JSON") from None
    if not isinstance(payload, dict):
        raise DamagedEntry("not an entry")
    return payload, tensors
