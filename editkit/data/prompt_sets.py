"""Built-in prompt sets shipped with editkit: ``harmful`` and ``harmless`` (train / val / test).

A recipe names them like files: ``harmful: {source: harmful, split: train}``. Sources and licences are in
``editkit/data/refusal/NOTICE.md`` (AdvBench, MIT; harmless prompts written for editkit, Apache-2.0).
"""

from __future__ import annotations

from pathlib import Path

from editkit.errors import DataError

PROMPT_SET_DIR = Path(__file__).resolve().parent / "refusal"

BUILTIN_PROMPT_SETS: dict[str, str] = {
    "harmful": "AdvBench harmful behaviours (MIT): 256 train / 64 val / 200 test",
    "harmless": "harmless instructions written for editkit (Apache-2.0): 266 train / 64 val / 200 test",
}
SPLITS = ("train", "val", "test")


def load_prompt_set(name: str, split: str | None, where: str) -> list[dict]:
    """Rows ``{"prompt", "split", "source"}`` of one split (default train) of a built-in prompt set."""
    import datasets

    split = split or "train"
    if split not in SPLITS:
        raise DataError(
            f"{where}.split: built-in prompt set '{name}' has splits {', '.join(SPLITS)}, not '{split}'"
        )
    path = PROMPT_SET_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(
            f"{where}: built-in prompt set '{name}' has no data file at {path}; reinstall editkit"
        )
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    return [dict(r) for r in ds if r["split"] == split]
