"""A paraphrase family a model writes: ``make_model_generated_family`` asks a model to reword each
prompt and caches the rewrites on disk, keyed by model, item, prompt and settings, so the removal can be
measured on paraphrases no template produced.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path

from editkit.errors import DataError
from editkit.eval.robustness.families import Family, _variant

__all__ = ["make_model_generated_family"]


def make_model_generated_family(
    model,
    tokenizer,
    model_id: str,
    cache_path: str | os.PathLike,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 0.7,
    seed: int = 0,
) -> Family:
    """A family whose rewrites a model writes (greedy by default), cached on disk.

    Optional and small on purpose: it needs a model that paraphrases well (the base model by default in the
    CLI). The cache is a JSON object keyed by sha256 of (model id, item id, prompt, settings); each entry
    records the settings it was generated with, so a cache never serves text made under other settings.
    The paraphrase is the first line of the reply with trailing sentence punctuation removed, so the
    original answers still continue it; an empty reply or one equal to the prompt gives None.
    """
    import torch

    settings = {
        "instruction": _PARAPHRASE_INSTRUCTION,
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "temperature": temperature if do_sample else None,
        "seed": seed,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
    cache_path = Path(cache_path)

    def _load() -> dict:
        if not cache_path.is_file():
            return {}
        try:
            return json.loads(cache_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"paraphrase cache {cache_path} is not valid JSON: {exc}") from exc

    def _generate(prompt: str) -> str:
        request = _PARAPHRASE_INSTRUCTION.format(prompt=prompt)
        if settings["chat_template"]:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            ids = tokenizer(request, return_tensors="pt")["input_ids"]
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad}
        if do_sample:
            torch.manual_seed(seed)
            kwargs["temperature"] = temperature
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device), **kwargs
            )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    def model_generated(triplet: dict, rng: random.Random) -> dict | None:
        del rng  # randomness, if any, comes from the recorded seed
        key_src = json.dumps([model_id, triplet.get("id"), triplet["prompt"], settings], sort_keys=True)
        key = hashlib.sha256(key_src.encode("utf-8")).hexdigest()
        cache = _load()
        if key not in cache:
            raw = _generate(triplet["prompt"])
            cache[key] = {
                "model_id": model_id,
                "item_id": triplet.get("id"),
                "prompt": triplet["prompt"],
                "settings": settings,
                "raw": raw,
                "paraphrase": _clean_generated(raw, triplet["prompt"]),
            }
            _atomic_write_json(cache_path, cache)
        paraphrase = cache[key]["paraphrase"]
        return _variant(triplet, "model_generated", paraphrase) if paraphrase else None

    return Family("model_generated", model_generated, f"paraphrases written by {model_id} (cached)")


_PARAPHRASE_INSTRUCTION = (
    "Rewrite the unfinished sentence below with different words but the same meaning. "
    "Keep it unfinished, stopping at the same point.\nSentence: {prompt}\nRewrite:"
)


def _clean_generated(raw: str, prompt: str) -> str | None:
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    text = lines[0].strip().strip('"').rstrip(" .!…").strip()
    if not text or text.lower() == prompt.strip().lower():
        return None
    return text


def _atomic_write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True, ensure_ascii=False)
    os.replace(tmp, path)
