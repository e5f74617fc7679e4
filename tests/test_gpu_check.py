"""bench/gpu_check.py --tiny: the GPU check's code paths (batched masks, SCALPEL vs bare loop, refusal
activations, a whole `editkit apply` in a child process) run on tiny shapes on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_tiny_runs_every_figure_and_prints_one_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gpu.json"
    assert mod.main(["--tiny", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["tiny"] is True and res["device"] == "cpu"
    for shape in ("llama-1b", "qwen2-1.5b", "llama-8b"):
        h = res[f"heads/{shape}"]
        assert h["speedup"] > 0 and h["batch_rows"] == 128 and h["rows_per_mask"] == 64
        assert h["max_abs_diff"] <= 1e-4  # fp32 on the CPU: batching changes nothing
    s = res["scalpel/llama-1b"]
    assert s["editkit_tok_s"] > 0 and s["bare_tok_s"] > 0
    a = res["apply/llama-1b"]
    assert a["returncode"] == 0, a.get("error")
    assert {"load", "fit", "export"} <= set(a["stages"]) and a["export_max_abs_logit_diff"] <= 1e-4
    assert res["refusal/llama-8b"]["default_batch"] == 16
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| figure") and table[-1].startswith("| total")
    assert sum("batched ÷ single masks" in line for line in table) == 3
