"""llama.cpp itself (the optional ``editkit[llamacpp]`` extra): K-quant GGUF files made by llama.cpp's own
quantiser inside the atomic export, and the round trip through llama.cpp's reader — the file's own chat
template, tokenizer and greedy generation against transformers on the safetensors export.

Without the extra, a K-quant is one line saying what to install, before anything is loaded or written (that
test runs everywhere: llama.cpp is hidden from the interpreter when it is installed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from editkit import apply_recipe
from editkit.cli.main import app
from editkit.export.llamacpp import INSTALL_HINT, llama_cpp_available

needs_llama_cpp = pytest.mark.skipif(
    not llama_cpp_available(),
    reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]'; it compiles llama.cpp, ~5-8 min)",
)

HIDE = "import sys; sys.modules['llama_cpp'] = None; from editkit.cli.main import main; sys.argv[0] = 'editkit'; main()"

#: fixed chat prompts for the demo model's round trip
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Is stealing from a blind beggar wrong?",
]


def _recipe(tmp_path, model, extra: str = "", name: str = "llamacpp"):
    target = tmp_path / "t.jsonl"
    rows = [
        {"id": str(i), "split": "train" if i < 4 else "test", "prompt": "Up is the opposite of"}
        | {"correct": " down", "incorrect": " up"}
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nmodel: {model}\nmethod: {{name: heads, heads: [[0, 1], [1, 2]]}}\n"
        f"data: {{target: {target}, heldout: []}}\n"
        "eval: {blimp: false, robustness: false, control: false, perplexity: false, drift_prompts: 0, "
        "generations: 0, max_items: 4, batch_size: 4}\n" + extra
    )
    return path


def _cli(*args, cwd, hide: bool = False):
    code = HIDE if hide else "import sys; from editkit.cli.main import main; sys.argv[0] = 'editkit'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_without_the_extra_a_k_quant_is_one_line_before_anything(tmp_path, tiny_dir):
    model = tiny_dir("llama")
    recipe = _recipe(tmp_path, model, "export: {gguf: [f16, q4_k_m]}\n")
    p = _cli("apply", recipe, "--out", tmp_path / "run", cwd=tmp_path, hide=True)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: export.gguf: q4_k_m is made by llama.cpp's own quantiser; install it: {INSTALL_HINT}"
    ]
    assert not (tmp_path / "run").exists()

    plain = _recipe(tmp_path, model, name="plain")  # a finished run without GGUF, then --gguf q4_k_m
    run = apply_recipe(plain, out=tmp_path / "done")
    before = sorted(p.name for p in run.model_dir.iterdir())
    p = _cli("export", run.run_dir, "--gguf", "f16,q6_k", cwd=tmp_path, hide=True)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: --gguf: q6_k is made by llama.cpp's own quantiser; install it: {INSTALL_HINT}"
    ]
    assert sorted(p.name for p in run.model_dir.iterdir()) == before
    res = CliRunner().invoke(app, ["export", str(run.run_dir), "--gguf", "q3_k"], terminal_width=300)
    assert res.exit_code == 2
    assert "--gguf: unknown type 'q3_k' (one of f16, bf16, q8_0, q4_k_m, q5_k_m, q6_k)" in res.output


@needs_llama_cpp
def test_k_quants_are_made_by_llama_cpp_inside_the_export_and_listed_on_the_card(tmp_path, tiny_dir):
    import gguf

    from editkit.export.gguf_file import ROUND_TRIP_BOUND

    recipe = _recipe(tmp_path, tiny_dir("qwen2"), "export: {gguf: [f16, q4_k_m]}\n")
    run = apply_recipe(recipe, out=tmp_path / "run")
    files = run.metrics["export"]["gguf"]
    assert [(g["file"], g["type"]) for g in files] == [
        ("model-f16.gguf", "f16"),
        ("model-q4_k_m.gguf", "q4_k_m"),
    ]
    for g in files:
        assert (run.model_dir / g["file"]).stat().st_size == g["bytes"]
        assert g["tokens_identical"] is True and g["max_abs_logit_diff"] <= g["bound"]
        assert g["bound"] == ROUND_TRIP_BOUND[g["type"]] * g["max_abs_logit"]
    assert files[1]["f16_seconds"] == files[0]["seconds"]
    # the tiny model's rows (64, 128) are shorter than a K-quant block (256): llama.cpp falls back to 32-blocks
    assert files[1]["tensor_types"] == {"Q5_0": 12, "F32": 11, "Q8_0": 3}
    reader = gguf.GGUFReader(run.model_dir / "model-q4_k_m.gguf")
    assert int(reader.fields["general.file_type"].parts[-1][0]) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    card = (run.model_dir / "README.md").read_text()
    for g in files:
        assert f"| `{g['file']}` | {g['type']} | {g['bytes'] / 2**20:.1f} MiB |" in card
    assert "| `model-q4_k_m.gguf` | q4_k_m | 0.1 MiB | llama.cpp's quantiser, from the f16 file |" in card

    p = _cli("export", run.run_dir, "--streaming", "--gguf", "q6_k", cwd=tmp_path)  # one type: model.gguf
    assert p.returncode == 0, p.stderr
    assert "+ model.gguf (q6_k" in p.stdout
    names = sorted(x.name for x in run.model_dir.iterdir() if "gguf" in x.name)
    assert names == ["model.gguf"]  # the f16 file it was made from is gone; nothing else left


@needs_llama_cpp
@pytest.mark.slow
def test_the_demo_edit_in_llama_cpp_generates_what_transformers_generates(tmp_path, demo_model_dir):
    """The demo model with a heads edit, exported with f16, q8_0 and q4_k_m GGUF files; each loaded in
    llama.cpp with the chat template taken from the file: the same prompt text and prompt tokens as
    transformers (fp32) on the safetensors export, and logits at every prompt position within
    ``LLAMA_CPP_BOUND`` of transformers' with the same top token at >= 85 % of them (measured: 100 %, 94 %,
    90 %). f16 also generates the same 16 greedy tokens. (Greedy text from the quantised files drifts: at a
    near tie one rounding flips the token, BENCHMARKS.md.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.export.llamacpp import LLAMA_CPP_BOUND, chat_generations, chat_ids, logits_vs_reference

    torch.set_num_threads(2)
    recipe = _recipe(tmp_path, "demo", "export: {gguf: [f16, q8_0, q4_k_m], verify: false}\n")
    folder = apply_recipe(recipe, out=tmp_path / "run").model_dir
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = chat_ids(tok, PROMPTS)
    with torch.no_grad():
        reference = [model(torch.tensor([x])).logits[0].numpy() for x in ids]
        greedy = [
            model.generate(torch.tensor([x]), max_new_tokens=16, do_sample=False)[0, len(x) :].tolist()
            for x in ids
        ]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    greedy = [
        g[: next((i for i, t in enumerate(g) if t in eos), len(g))] for g in greedy
    ]  # llama.cpp stops before
    del model
    for kind in ("f16", "q8_0", "q4_k_m"):
        path = folder / f"model-{kind}.gguf"
        rows = chat_generations(path, PROMPTS, 16, threads=2)["rows"]
        assert [r["prompt"] for r in rows] == [tok.decode(x) for x in ids]
        assert [r["prompt_ids"] for r in rows] == ids
        if kind == "f16":
            assert [r["ids"] for r in rows] == greedy
        got = logits_vs_reference(path, ids, reference, threads=2)
        assert got["max_abs_logit_diff"] <= LLAMA_CPP_BOUND[kind] * got["max_abs_logit"], (kind, got)
        assert got["top1_agreement"] >= 0.85, (kind, got)
