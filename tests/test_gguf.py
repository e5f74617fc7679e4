"""GGUF export: written with the gguf library, loaded back with transformers (`gguf_file=`), compared with the
safetensors export — logits within the stated bound per type, identical token ids and chat template."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from editkit import apply_recipe
from editkit.cli.main import app
from editkit.errors import EditkitError
from editkit.export.gguf_file import ROUND_TRIP_BOUND, check_gguf, write_gguf

CHAT = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}<pad>{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)


@pytest.fixture
def chat_model(tmp_path):
    """A tiny random model saved with the real (tiny) BPE tokenizer and a chat template."""
    from transformers import AutoTokenizer

    from tests.tiny import save_tiny

    def make(family: str):
        path = save_tiny(family, tmp_path / family)
        tok = AutoTokenizer.from_pretrained(path)
        tok.chat_template = CHAT
        tok.save_pretrained(path)
        return path

    return make


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("kind", ["f16", "bf16", "q8_0"])
def test_round_trip_through_transformers(chat_model, family, kind):
    folder = chat_model(family)
    info = write_gguf(folder, kind=kind)
    assert info["file"] == "model.gguf" and (folder / "model.gguf").stat().st_size == info["bytes"]
    got = check_gguf(folder, "model.gguf", kind)
    assert got["tokens_identical"] is True
    assert got["max_abs_logit_diff"] <= ROUND_TRIP_BOUND[kind] * got["max_abs_logit"] == got["bound"]
    assert got["max_abs_logit_diff"] > 0  # the weights really went through f16/bf16/q8_0

    import gguf

    reader = gguf.GGUFReader(folder / "model.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    want = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[kind]
    assert types["blk.0.attn_q.weight"] == want and types["blk.0.attn_norm.weight"] == "F32"
    assert ("output.weight" in types) == (family != "qwen2")  # qwen2's tiny config ties its embeddings
    assert bytes(reader.fields["tokenizer.chat_template"].parts[-1]).decode() == CHAT


def test_a_wrong_layout_fails_the_round_trip(chat_model, monkeypatch):
    """Without llama.cpp's q/k row order the file loads, but its logits are wrong: the check must say so."""
    from editkit.export import gguf_file

    folder = chat_model("llama")
    monkeypatch.setattr(gguf_file, "_permute_qk", lambda w, n: w)
    write_gguf(folder, kind="f16")
    with pytest.raises(EditkitError, match=r"GGUF check failed: model.gguf \(f16\) differs"):
        check_gguf(folder, "model.gguf", "f16")


def _recipe(tmp_path, model, extra=""):
    target = tmp_path / "t.jsonl"
    rows = [
        {"id": str(i), "split": "train" if i < 4 else "test", "prompt": "Up is the opposite of"}
        | {"correct": " down", "incorrect": " up"}
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: gguf\nmodel: {model}\nmethod: {{name: heads, heads: [[0, 1]]}}\n"
        f"data: {{target: {target}, heldout: [{target}]}}\n"
        "eval: {blimp: false, robustness: false, control: false, max_items: 4, batch_size: 4}\n" + extra
    )
    return path


def test_apply_writes_checks_and_lists_the_gguf_and_export_adds_one(chat_model, tmp_path):
    recipe = _recipe(tmp_path, chat_model("llama"), "export: {gguf: q8_0}\n")
    run = apply_recipe(recipe, out=tmp_path / "run")
    [g] = run.metrics["export"]["gguf"]
    assert g["file"] == "model.gguf" and g["type"] == "q8_0" and g["tokens_identical"] is True
    assert g["max_abs_logit_diff"] <= g["bound"]
    assert (run.model_dir / "model.gguf").stat().st_size == g["bytes"]
    assert "model.gguf" in run.metrics["export"]["files"]
    card = (run.model_dir / "README.md").read_text()
    assert "| `model.gguf` | q8_0 | " in card and "llama.cpp" in card
    assert not [p for p in tmp_path.rglob(".*tmp*")]  # no temporary folders left

    res = CliRunner().invoke(
        app, ["export", str(run.run_dir), "--streaming", "--gguf", "bf16"], terminal_width=200
    )
    assert res.exit_code == 0, res.output
    assert "model.gguf (bf16" in res.output
    import gguf

    reader = gguf.GGUFReader(run.model_dir / "model.gguf")
    assert {t.tensor_type.name for t in reader.tensors} == {"BF16", "F32"}
    # the card and metrics.json name the new file, not the q8_0 one it replaced
    [g] = json.loads((run.run_dir / "metrics.json").read_text())["export"]["gguf"]
    assert g["type"] == "bf16" and g["bytes"] == (run.model_dir / "model.gguf").stat().st_size
    card = (run.model_dir / "README.md").read_text()
    assert "| `model.gguf` | bf16 | " in card and "| q8_0 |" not in card

    res = CliRunner().invoke(app, ["export", str(run.run_dir)], terminal_width=200)  # the recipe's type again
    assert res.exit_code == 0, res.output
    [g] = json.loads((run.run_dir / "metrics.json").read_text())["export"]["gguf"]
    assert g["type"] == "q8_0" and g["bytes"] == (run.model_dir / "model.gguf").stat().st_size
    card = (run.model_dir / "README.md").read_text()
    assert "| `model.gguf` | q8_0 | " in card and "| bf16 |" not in card


@pytest.mark.parametrize("family", ["gpt2", "phi3"])
def test_unsupported_architecture_fails_before_the_fit(tmp_path, tiny_dir, family):
    recipe = _recipe(tmp_path, tiny_dir(family), "export: {gguf: f16}\n")
    res = CliRunner().invoke(app, ["apply", str(recipe), "--out", str(tmp_path / "run")], terminal_width=300)
    assert res.exit_code == 2
    assert (
        f"export.gguf: GGUF export supports llama, mistral, qwen2, qwen2_moe, qwen3_moe models; this one is '{family}'"
        in res.output
    )
    assert not (tmp_path / "run").exists()
