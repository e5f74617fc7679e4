"""The CLI surface: --help with examples, eval/robustness/models on real (tiny) runs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from editkit import apply_recipe
from editkit.cli.main import app

COMMANDS = ["apply", "validate", "eval", "models", "card", "push", "monitor", "robustness", "export"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_with_an_example(command):
    res = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "Example" in res.output and f"editkit {command}" in res.output


def test_top_level_help_lists_every_command():
    res = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert res.exit_code == 0
    for c in COMMANDS:
        assert c in res.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.tiny import save_tiny

    tmp = tmp_path_factory.mktemp("cli")
    model = save_tiny("llama", tmp / "tiny")
    rows = [
        {
            "id": f"a-{i}",
            "split": "train" if i < 8 else "test",
            "prompt": p,
            "correct": c,
            "incorrect": w,
            "paraphrases": [f"Surely, {p.lower()}"],
        }
        for i, (p, c, w) in enumerate(
            [("Up is the opposite of", " down", " up"), ("Hot is the opposite of", " cold", " hot")] * 8
        )
    ]
    target = tmp / "antonyms.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp / "r.yaml"
    recipe.write_text(
        f"name: cli\nmodel: {model}\nmethod: {{name: heads, heads: [[1, 0]]}}\ndata: {{target: {target}, heldout: [{target}]}}\n"
        "eval: {blimp: false, max_items: 8, robustness: true, robustness_families: [stored, distractor]}\n"
    )
    return apply_recipe(recipe, out=tmp / "run")


def test_eval_a_run_directory(tiny_run, tmp_path):
    out = tmp_path / "m.json"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            str(tiny_run.run_dir),
            "-c",
            "moral",
            "--max-items",
            "4",
            "--skip",
            "blimp",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert set(m) >= {"target_accuracy", "perplexity", "general_capability_score"}
    assert "heldout/moral" not in m and "heldout/arithmetic" in m


def test_eval_nonexistent_model_is_exit_2():
    res = CliRunner().invoke(app, ["eval", "./no/such/model"])
    assert res.exit_code == 2 and res.output.startswith("error: ")


def test_checks_stage_has_a_total_and_sends_the_paraphrase_families(tiny_run):
    """The paraphrase families run in the checks stage (one more removal check): counted progress, and one
    ``families`` event per set for the monitor, with the numbers stored in metrics.json."""
    from editkit.run.events import read_events

    events = read_events(tiny_run.run_dir)
    prog = [e for e in events if e["type"] == "progress" and e["stage"] == "checks"]
    assert prog and prog[0]["total"] > 0 and prog[-1]["done"] == prog[-1]["total"]
    assert "robustness" not in [e["stage"] for e in events if e["type"] == "stage_start"]
    checks = {e["check"]: e for e in events if e["type"] == "check"}
    stored = tiny_run.metrics["checks"]
    assert set(checks) == {n for n in stored if n != "verdict"} | {"verdict"}
    for name, e in checks.items():
        if name != "verdict":
            assert (e["passed"], e["summary"]) == (
                stored[name]["judge"]["pass"],
                stored[name]["judge"]["summary"],
            )
    assert checks["verdict"]["summary"] == stored["verdict"]["label"]
    fams = {e["capability"]: e for e in events if e["type"] == "families"}
    reports = tiny_run.metrics["checks"]["robustness"]["judge"]["reports"]
    assert set(fams) == set(reports) == {"target", "control:antonyms"}
    for label, e in fams.items():
        assert e["check"] == "robustness"
        assert {f["family"]: f["before"] for f in e["families"]} == {
            k: v["before"] for k, v in reports[label]["families"].items()
        }


def test_recipe_comments_give_user_commands():
    """Recipe comments are read by users: no development-machine habits (flock on a shared lock)."""
    from pathlib import Path

    for recipe in (Path(__file__).parents[1] / "recipes").glob("*.yaml"):
        assert "flock" not in recipe.read_text(), recipe


def test_robustness_recomputes_and_stores(tiny_run):
    res = CliRunner().invoke(app, ["robustness", str(tiny_run.run_dir)], terminal_width=200)
    assert res.exit_code == 0, res.output
    m = json.loads((tiny_run.run_dir / "metrics.json").read_text())
    got, first = m["checks"]["robustness"], tiny_run.metrics["checks"]["robustness"]
    assert set(got["judge"]["reports"]["target"]["families"]) == {"original", "stored", "distractor"}
    assert got["phases"] == first["phases"] and got["judge"] == first["judge"]  # same seed, same numbers
    assert "│ distractor │" in res.output and "robustness: target" in res.output


def test_monitor_missing_path_is_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["monitor", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_models_lists_demo():
    res = CliRunner().invoke(app, ["models"], terminal_width=200)
    assert res.exit_code == 0 and "HuggingFaceTB/SmolLM2-135M-Instruct" in res.output
    assert "Q4_1 GGUF" in res.output and "dequantised" in res.output  # not the original weights


def test_apply_progress_shows_load_time_early_stop_and_totals():
    """The CLI's progress view, fed a run's events: load's real time, a fit that stopped early, eval totals."""
    import io

    from rich.console import Console

    from editkit.cli.progress import _StageProgress

    console = Console(file=io.StringIO(), width=160, record=True, force_terminal=False)
    prog = _StageProgress(console)
    events = [
        {"type": "run_start"},
        {"type": "stage_start", "stage": "load", "total": None},
        {"type": "stage_end", "stage": "load", "seconds": 33.2},
        {"type": "stage_start", "stage": "eval_base", "total": None},
        {"type": "progress", "stage": "eval_base", "done": 0, "total": 400},
        {"type": "progress", "stage": "eval_base", "done": 400, "total": 400},
        {"type": "stage_end", "stage": "eval_base", "seconds": 5.0},
        {"type": "stage_start", "stage": "fit", "total": 80},
        *[{"type": "step", "stage": "fit", "step": i, "total": 80, "loss": 0.5} for i in range(1, 31)],
        {"type": "stage_end", "stage": "fit", "seconds": 9.0},
    ]
    with prog:
        for ev in events:
            prog.on_event(ev)
    text = console.export_text()
    load = next(line for line in text.splitlines() if line.strip().startswith("load"))
    assert "0:00:33" in load
    fit = next(line for line in text.splitlines() if line.strip().startswith("fit"))
    assert "stopped early at 30/80" in fit and "80/80" not in fit
    assert "400/400" in text and "ETA" in text
