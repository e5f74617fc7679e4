"""The recipe's ``export`` and ``push`` blocks: ``ExportSpec`` (where and how the edited model is written:
dtype, shards, adapter, reload check, streaming, GGUF types) and ``PushSpec`` (the Hub repo it is pushed to).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from editkit.spec.base import StrictModel

GgufType = Literal["f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k"]


class ExportSpec(StrictModel):
    dir: str | None = Field(None, description="where the model goes (default: <run>/model)")
    dtype: Literal["same", "float32", "bfloat16", "float16"] = Field(
        "same", description="dtype of the exported weights"
    )
    max_shard_size: str = Field("2GB", description="safetensors shard size, e.g. '500MB'")
    adapter: bool = Field(False, description="also export the un-merged PEFT adapter (LoRA methods)")
    verify: bool = Field(True, description="reload the export with plain transformers and compare logits")
    streaming: bool | Literal["auto"] = Field(
        "auto", description="merge shard by shard without loading the model (weight-space edits)"
    )
    gguf: GgufType | list[GgufType] | None = Field(
        None,
        description="also write model.gguf (llama.cpp, Ollama, LM Studio) of this type beside the safetensors "
        "(llama, mistral, qwen2 with a byte-level BPE tokenizer); q4_k_m, q5_k_m, q6_k are made by llama.cpp "
        "(extra editkit[llamacpp]); a list writes model-<type>.gguf each",
    )

    @field_validator("max_shard_size")
    @classmethod
    def _shard(cls, v: str) -> str:
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)\s*", v, flags=re.IGNORECASE):
            raise ValueError("must look like '500MB' or '2GB'")
        return v.strip()


class PushSpec(StrictModel):
    repo_id: str | None = Field(None, description="Hub repo 'user/name' to push to")
    private: bool = Field(False, description="create the repo private")
    token_env: str = Field("HF_TOKEN", description="environment variable holding the Hub token")
    force: bool = Field(False, description="push into an existing repo not made by editkit")

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", v):
            raise ValueError("must look like 'user/name'")
        return v
