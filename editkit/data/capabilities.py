"""Capability triplets: the built-in sets shipped with editkit, local files, or Hub datasets.

Everything goes through the ``datasets`` library so that a built-in name, a user's CSV and a Hub id all come
back as the same ``datasets.Dataset`` with the columns ``prompt``, ``correct``, ``incorrect`` (and
``paraphrases`` and ``answer_frames`` when the source has them). Methods and the eval suite never care where the data came from.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Mapping
from pathlib import Path

from editkit.errors import DataError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

BUILTIN_CAPABILITIES: dict[str, str] = {
    "moral": 'moral judgement as statement completion: "Stealing money from a blind beggar is" -> " bad" / " good"',
    "arithmetic": 'sums of two numbers from 1 to 20: "Calculate: 7 + 5 =" -> " 12" / " 14"',
    "translation": 'English to French and Spanish single words: \'The French word for "dog" is\' -> " chien"',
    "capitals": 'capital cities, both directions: "The capital of France is" -> " Paris" / " Madrid"',
    "antonyms": 'word opposites: "The opposite of hot is" -> " cold" / " loud"',
    "sentiment": 'review polarity: \'Review: "The food was awful." Sentiment:\' -> " negative" / " positive"',
    "categories": 'commonsense taxonomy: "A robin is a kind of" -> " bird" / " fish"',
}

REQUIRED_COLUMNS = ("prompt", "correct", "incorrect")
OPTIONAL_COLUMNS = ("paraphrases", "answer_frames", "frame", "id", "split")
_FILE_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def builtin_path(name: str) -> Path:
    """Path of a built-in capability's .jsonl file; DataError (with a suggestion) for unknown names."""
    if name not in BUILTIN_CAPABILITIES:
        close = difflib.get_close_matches(name, list(BUILTIN_CAPABILITIES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DataError(
            f"unknown built-in capability '{name}' (known: {', '.join(sorted(BUILTIN_CAPABILITIES))}){hint}"
        )
    path = BUILTIN_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"built-in capability '{name}' has no data file at {path}; reinstall editkit")
    return path


def _looks_like_path(source: str) -> bool:
    """Files are recognised by extension, a path prefix, or existing; "owner/name" is left to the Hub."""
    suffix = Path(source).suffix.lower()
    return (
        suffix in _FILE_LOADERS
        or source.startswith((".", "/", "~"))
        or Path(source).expanduser().exists()
        or (bool(suffix) and "/" not in source)
    )


def _csv_as_text(path: Path) -> dict:
    """load_dataset kwargs that make every CSV column a string column (header read with the csv module)."""

    import datasets

    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    if not header:
        raise DataError(f"capability data file {path} is empty (no header row)")
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return {"features": features, "keep_default_na": False}


def _load_raw(source: str):
    """The whole source as a Dataset (split column untouched) or a DatasetDict for Hub datasets."""
    import datasets

    if source in BUILTIN_CAPABILITIES:
        return datasets.load_dataset("json", data_files=str(builtin_path(source)), split="train")
    if _looks_like_path(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"capability data file {source} does not exist")
        if path.is_dir():
            raise DataError(
                f"capability data {source} is a directory; give a .jsonl, .json, .csv or .parquet file"
            )
        builder = _FILE_LOADERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"capability data file {source} has unsupported extension '{path.suffix}'"
                " (use .jsonl, .json, .csv or .parquet)"
            )
        # CSV cells are read as text: otherwise " 4" becomes the integer 4 and loses the leading space that
        # makes it a completion, and an answer like "None" becomes a missing value.
        extra = _csv_as_text(path) if builder == "csv" else {}
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", **extra)
        except Exception as exc:  # datasets raises many types for malformed files
            if "corresponds to no data" in str(exc):  # a header-only CSV or an empty JSON list
                raise DataError(f"capability data {source} has no rows") from exc
            raise DataError(f"capability data file {source} could not be read: {exc}") from exc
    if "/" in source and not source.startswith("/"):
        try:
            return datasets.load_dataset(source)
        except Exception as exc:
            raise DataError(f"capability dataset '{source}' could not be loaded from the Hub: {exc}") from exc
    # A bare word that is neither a built-in nor a file: most likely a typo of a built-in name.
    builtin_path(source)
    raise AssertionError("unreachable")  # pragma: no cover


def load_triplets(
    name_or_path: str,
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    limit: int | None = None,
):
    """Load capability triplets as a ``datasets.Dataset`` with prompt/correct/incorrect columns.

    ``name_or_path``: a built-in name (see ``BUILTIN_CAPABILITIES``), a local .jsonl/.json/.csv/.parquet file,
    or a Hub dataset id. ``split``: for files with a ``split`` column, the rows whose split equals it; for Hub
    datasets, the dataset split of that name; None keeps everything (Hub: the "train" split, else the only
    one). ``columns`` maps the source's column names to editkit's (``{"question": "prompt", ...}``).
    ``limit`` keeps the first N rows after filtering.
    """
    import datasets

    source = str(name_or_path)
    raw = _load_raw(source)

    if isinstance(raw, datasets.DatasetDict):
        if split is not None:
            if split not in raw:
                raise DataError(
                    f"capability dataset '{source}' has no split '{split}' (has: {', '.join(raw)})"
                )
            ds = raw[split]
        elif "train" in raw:
            ds = raw["train"]
        elif len(raw) == 1:
            ds = next(iter(raw.values()))
        else:
            raise DataError(
                f"capability dataset '{source}' has several splits ({', '.join(raw)}); choose one"
            )
        split_applied = True
    else:
        ds = raw
        split_applied = False

    if columns:
        unknown = [c for c in columns if c not in ds.column_names]
        if unknown:
            raise DataError(
                f"capability data {source}: column mapping names '{unknown[0]}', which is not in the data"
                f" (columns: {', '.join(ds.column_names)})"
            )
        renames = {src: dst for src, dst in columns.items() if src != dst}
        clashing = [dst for dst in renames.values() if dst in ds.column_names and dst not in renames]
        if clashing:
            ds = ds.remove_columns(clashing)
        ds = ds.rename_columns(renames)

    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(
            f"capability data {source} is missing required column '{missing[0]}'"
            f" (columns: {', '.join(ds.column_names) or 'none'}; map yours with columns=)"
        )

    if split is not None and not split_applied:
        if "split" not in ds.column_names:
            raise DataError(
                f"capability data {source} has no 'split' column, so split='{split}' cannot be chosen"
            )
        ds = ds.filter(lambda row: row["split"] == split)

    keep = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in ds.column_names]
    ds = ds.select_columns(keep)
    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    if len(ds) == 0:
        where = f" (split '{split}')" if split is not None else ""
        raise DataError(f"capability data {source}{where} has no rows")
    for col in REQUIRED_COLUMNS:
        bad = next((i for i, v in enumerate(ds[col]) if not isinstance(v, str) or not v), None)
        if bad is not None:
            raise DataError(f"capability data {source}: row {bad} has an empty or non-text '{col}'")
    return ds
