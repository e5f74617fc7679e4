"""lm-evaluation-harness as an evaluator (``eval.lm_eval``): real lm-eval, editkit's offline task, the in-memory
base / edited / control models; bad blocks are one line before the run directory exists."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from editkit.cli.main import app
from editkit.eval.lm_eval import TASKS_DIR, capability_task_rows

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[lm-eval]')")


def _recipe(tmp_path, model, eval_extra: str) -> object:
    target = tmp_path / "t.jsonl"
    rows = [
        {"id": str(i), "split": "train" if i < 4 else "test", "prompt": "Up is the opposite of"}
        | {"correct": " down", "incorrect": " up"}
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: lm-eval\nmodel: {model}\nmethod: {{name: heads, heads: [[0, 1]]}}\n"
        f"data: {{target: {target}, heldout: []}}\n"
        "eval: {blimp: false, robustness: false, perplexity: false, drift_prompts: 0, generations: 0, "
        f"max_items: 4, batch_size: 4{eval_extra}}}\nexport: {{verify: false}}\n"
    )
    return path


def test_the_shipped_task_data_is_the_builtin_test_items():
    shipped = [json.loads(x) for x in (TASKS_DIR / "editkit_capabilities.jsonl").read_text().splitlines()]
    assert shipped == capability_task_rows()
    assert len(shipped) == 686 and [r["label"] for r in shipped[:4]] == [0, 1, 0, 1]


def test_a_run_reports_lm_eval_base_edited_control_in_metrics_card_and_progress(tmp_path, tiny_dir):
    recipe = _recipe(tmp_path, tiny_dir("llama"), ", lm_eval: {tasks: [editkit_capabilities], limit: 12}")
    res = CliRunner().invoke(app, ["apply", str(recipe), "--out", str(tmp_path / "run")], terminal_width=200)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    le = metrics["lm_eval"]
    assert le["lm_eval_version"] == lm_eval.__version__ and le["limit"] == 12
    task = le["tasks"]["editkit_capabilities"]
    assert task["n"] == 12 and task["num_fewshot"] == 0 and list(task["metrics"]) == ["acc"]
    acc = task["metrics"]["acc"]
    assert list(acc) == ["base", "edited", "control"] and list(task["stderr"]["acc"]) == list(acc)
    assert all(
        acc[p] * 12 == round(acc[p] * 12) for p in ("base", "edited", "control")
    )  # a share of 12 items
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    for stage in ("eval_base", "eval_edited", "control"):
        last = [e for e in events if e["type"] == "progress" and e["stage"] == stage][-1]
        # the suite's rows (target 2 x 4) plus lm-eval's requests (2 choices x 12 documents), all done
        assert last["done"] == last["total"] == 2 * 4 + 2 * 12
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    row = f"| editkit_capabilities | acc | 12 | {_num(acc['base'])} ± "
    assert "### lm-evaluation-harness" in card and row in card


def _num(x: float) -> str:
    from editkit.methods.report import num

    return num(x)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "{tasks: [editkit_capabilites]}",
            "eval.lm_eval.tasks[0]: unknown lm-eval task 'editkit_capabilites' (did you mean 'editkit_capabilities'?)",
        ),
        ("{tasks: []}", "eval.lm_eval.tasks: List should have at least 1 item after validation, not 0"),
        (
            "{tasks: [editkit_capabilities], limit: 0}",
            "eval.lm_eval.limit: Input should be greater than or equal to 1",
        ),
    ],
)
def test_a_bad_block_is_one_line_before_the_run_directory(tmp_path, tiny_dir, block, message):
    recipe = _recipe(tmp_path, tiny_dir("llama"), f", lm_eval: {block}")
    res = CliRunner().invoke(app, ["apply", str(recipe), "--out", str(tmp_path / "run")], terminal_width=400)
    assert res.exit_code == 2
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_without_lm_eval_one_line_says_what_to_install(tmp_path, tiny_dir):
    """lm-eval hidden from the interpreter (``sys.modules['lm_eval'] = None`` makes its import fail)."""
    recipe = _recipe(tmp_path, tiny_dir("llama"), ", lm_eval: {tasks: [editkit_capabilities]}")
    code = "import sys; sys.modules['lm_eval'] = None; from editkit.cli.main import main; sys.argv[0] = 'editkit'; main()"
    p = subprocess.run(
        [sys.executable, "-c", code, "apply", str(recipe), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: eval.lm_eval: needs lm-evaluation-harness; install it: pip install 'editkit[lm-eval]'"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_lm_eval_accuracy_on_the_demo_model_is_editkits_pairwise_accuracy(demo_model_dir):
    """The same items, two harnesses: lm-eval sums an answer's token log-likelihoods (joint tokenisation of
    prompt + answer), editkit averages them (prompt and answer tokenised apart). Where both answers have as
    many tokens, the two decide every item alike; the log-likelihoods agree to float rounding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.eval.lm_eval import run_lm_eval
    from editkit.eval.pairwise import score_answers
    from editkit.spec.eval import LmEvalSpec

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32).eval()
    n = 140  # the first 140 items: moral and arithmetic, both classes of answer position
    got = run_lm_eval(model, tok, LmEvalSpec(tasks=["editkit_capabilities"], limit=n), batch_size=32)
    acc = got["editkit_capabilities"]["metrics"]["acc"]

    rows = capability_task_rows()[:n]
    right = [r["choices"][r["label"]] for r in rows]
    wrong = [r["choices"][1 - r["label"]] for r in rows]
    prompts = [r["prompt"] for r in rows]
    length = lambda a: len(tok(a, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert all(length(a) == length(b) for a, b in zip(right, wrong, strict=True))  # so sum and mean agree
    mean_right = score_answers(model, tok, prompts, right, batch_size=32)
    mean_wrong = score_answers(model, tok, prompts, wrong, batch_size=32)
    editkit_right = int((torch.as_tensor(mean_right) > torch.as_tensor(mean_wrong)).sum())
    assert acc == editkit_right / n  # lm-eval's mean of 0/1 over the same 140 items
    assert 0.5 < acc < 1.0
