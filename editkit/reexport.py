"""``editkit export RUN_DIR``: write a run's saved edit onto its base model again.

Two paths with the same result: in memory (load the base model, merge, ``export_model``, reload check)
or shard-streamed (``editkit.streaming.stream_merge``: never loads the model, peak memory ≈ the largest
edited tensor). The base model is whatever the run's resolved ``recipe.yaml`` names.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from editkit import __version__
from editkit.edit import Edit
from editkit.errors import EditkitError
from editkit.export import write_editkit_folder


def _run_edit(run_dir: Path) -> Edit:
    for d in (run_dir / "edit", run_dir / "model" / "editkit"):
        if (d / "edit.json").exists():
            return Edit.load(d)
    raise EditkitError(f"{run_dir}: has no saved edit (edit/edit.json); was the fit stage reached?")


def base_checkpoint_dir(spec) -> Path:
    """The local folder of the base model's safetensors checkpoint, without loading the model.

    'demo' → the converted demo cache; a local folder → itself; a Hub id → its cached snapshot
    (downloaded with huggingface_hub when not cached yet). GGUF and pickle checkpoints cannot be streamed.
    """
    from editkit.models import ensure_demo_model
    from editkit.streaming import INDEX_NAME, SINGLE_NAME

    src = spec.id
    if src == "demo":
        return ensure_demo_model(progress=lambda m: None)
    if src.endswith(".gguf") or spec.gguf_file:
        raise EditkitError(f"model.id: {src} is a GGUF file; use the in-memory export (no --streaming)")
    p = Path(src).expanduser()
    if p.exists():
        folder = p
    else:
        from huggingface_hub import snapshot_download, try_to_load_from_cache

        hit = try_to_load_from_cache(src, "config.json", revision=spec.revision)
        if isinstance(hit, str):
            folder = Path(hit).parent
        else:
            try:
                folder = Path(
                    snapshot_download(
                        src,
                        revision=spec.revision,
                        allow_patterns=[
                            "*.json",
                            "*.safetensors",
                            "*.model",
                            "*.txt",
                            "*.jinja",
                            "*.tiktoken",
                        ],
                    )
                )
            except Exception as e:  # noqa: BLE001 - report any Hub failure as a user-facing error
                raise EditkitError(f"model.id: could not fetch {src}: {str(e).splitlines()[0]}") from None
    if not ((folder / SINGLE_NAME).exists() or (folder / INDEX_NAME).exists()):
        raise EditkitError(f"model.id: {folder} has no safetensors weights; use the in-memory export")
    return folder


def _extra_files(run_dir: Path, recipe, edit: Edit, old_export: Path | None, streaming: bool):
    from editkit.models import DEMO_BASE_MODEL

    def extra(tmp: Path) -> None:
        run_info = {
            "editkit_version": __version__,
            "recipe_hash": recipe.hash,
            "method": recipe.method.name,
            "base_model": DEMO_BASE_MODEL if recipe.model.id == "demo" else recipe.model.id,
            "run_id": run_dir.name,
            "reexported": True,
            "streaming": streaming,
        }
        write_editkit_folder(tmp, edit, run_info, (run_dir / "recipe.yaml").read_text())
        if old_export is not None and (old_export / "README.md").exists():
            shutil.copy2(old_export / "README.md", tmp / "README.md")  # the card describes the same edit
            if (old_export / "editkit" / "plots").is_dir():  # ...and links its plots
                shutil.copytree(old_export / "editkit" / "plots", tmp / "editkit" / "plots")

    return extra


def reexport_run(
    run_dir: str | Path, dest: str | Path | None = None, streaming: bool = False
) -> dict[str, Any]:
    """Apply ``run_dir/edit`` to the base model of ``run_dir/recipe.yaml`` and export to ``dest``."""
    from editkit.recipe import load_recipe

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").exists():
        raise EditkitError(f"{run_dir}: not an editkit run directory (no recipe.yaml)")
    recipe = load_recipe(run_dir / "recipe.yaml")
    edit = _run_edit(run_dir)
    default = Path(recipe.export.dir).expanduser() if recipe.export.dir else run_dir / "model"
    dest = Path(dest) if dest is not None else default
    from editkit.preflight import check_writable_destination

    check_writable_destination(dest, "--out" if dest != default else "export.dir")
    old = dest if dest.is_dir() else (default if default.is_dir() else None)
    extra = _extra_files(run_dir, recipe, edit, old, streaming)
    if streaming:
        from editkit.streaming import stream_merge

        src = base_checkpoint_dir(recipe.model)
        # 'same' means what it means in the pipeline: the dtype the recipe loads (and edits) the model in
        dtype = recipe.export.dtype
        if dtype == "same" and recipe.model.dtype != "auto":
            dtype = recipe.model.dtype
        info = stream_merge(
            edit,
            src,
            dest,
            dtype=dtype,
            max_shard_size=recipe.export.max_shard_size,
            extra=extra,
            trust_remote_code=recipe.model.trust_remote_code,
        )
        info["source"] = str(src)
        return info
    return _in_memory(recipe, edit, dest, extra)


def _in_memory(recipe, edit: Edit, dest: Path, extra) -> dict[str, Any]:
    import torch

    from editkit.export import embeddings_tied, export_model, logits_of, probe_inputs, verify_export
    from editkit.models import load_model

    loaded = load_model(recipe.model, progress=lambda m: None)
    model, tok = loaded.model, loaded.tokenizer
    inputs = probe_inputs(tok)
    with edit.applied(model):
        reference = logits_of(model, inputs)
    norms = edit.merge_into(model)
    files = export_model(
        model, tok, dest, dtype=recipe.export.dtype, max_shard_size=recipe.export.max_shard_size, extra=extra
    )
    info: dict[str, Any] = {"path": str(dest), "files": files, "norms": norms, "streaming": False}
    if recipe.export.verify:
        info["max_abs_logit_diff"] = verify_export(dest, reference, inputs, like=model)
        info["tied_embeddings"] = embeddings_tied(dest)
        exact = recipe.export.dtype in ("same", "float32") and next(model.parameters()).dtype == torch.float32
        if exact and info["max_abs_logit_diff"] > 1e-4:
            raise EditkitError(
                f"export check failed: reloaded model differs from the edited model by "
                f"{info['max_abs_logit_diff']:.3g} > 1e-4"
            )
    return info
