"""The recipe's inputs: the ``model`` block (``ModelSpec``) and the ``data`` block (``DataSpec`` of
``DataSource`` entries: the target capability, the general text, the held-out capabilities and named prompt
sets), each accepting a plain string as shorthand for its id or source.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from editkit.spec.base import StrictModel


class ModelSpec(StrictModel):
    id: str = Field(description="'demo', a Hub model id, a local directory or a .gguf file")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit)")
    gguf_file: str | None = Field(None, description="GGUF file name inside a Hub repo or directory")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="dtype the model is loaded (and edited) in"
    )
    device_map: str | None = Field(None, description="passed to from_pretrained, e.g. 'auto' on GPUs")
    trust_remote_code: bool = Field(False, description="run code from the model repo (off by default)")
    allow_pickle: bool = Field(
        False, description="allow loading .bin (pickle) weights; safetensors only unless set"
    )

    @field_validator("id")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class DataSource(StrictModel):
    source: str = Field(description="built-in name, local .jsonl/.json/.csv/.parquet path, or Hub dataset id")
    split: str | None = Field(None, description="split to read (Hub datasets, or built-in train/test)")
    subset: str | None = Field(None, description="Hub dataset configuration name")
    columns: dict[str, str] = Field(default_factory=dict, description="map of your column -> editkit column")
    limit: int | None = Field(None, ge=1, description="use at most this many rows")

    @field_validator("source")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


def _source_shorthand(v: Any) -> Any:
    return {"source": v} if isinstance(v, str) else v


class DataSpec(StrictModel):
    target: DataSource | None = Field(None, description="the capability to remove (triplets)")
    general: DataSource = Field(
        default_factory=lambda: DataSource(source="builtin"),
        description="general text: regulariser (train split) and perplexity (test split)",
    )
    heldout: list[DataSource] | Literal["auto"] = Field(
        "auto", description="held-out capabilities ('auto' = every other built-in capability)"
    )
    sets: dict[str, DataSource] = Field(
        default_factory=dict, description="named extra prompt sets a method asks for"
    )

    @field_validator("target", "general", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _source_shorthand(v)

    @field_validator("heldout", mode="before")
    @classmethod
    def _heldout_shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [_source_shorthand(x) for x in v]
        return v

    @field_validator("sets", mode="before")
    @classmethod
    def _sets_shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _source_shorthand(x) for k, x in v.items()}
        return v
