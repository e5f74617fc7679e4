"""metrics.json is written and read through one typed model (editkit.run.record.RunRecord): its schema page is
generated from it, a wrong section stops the writer, and a damaged or foreign file fails in one line that names
the field, while files of earlier editkit versions load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from editkit.errors import OutputError
from editkit.publish.card import write_card
from editkit.run.events import RUN_MARKER, read_metrics, read_record, write_metrics
from editkit.run.record import RunRecord, schema_markdown, validate_record
from tests.launch import ROOT

#: the sections a run of an early editkit (before provenance, weights, checks) wrote
OLD = {
    "recipe_hash": "0b457db3bed8",
    "editkit_version": "0.1.0",
    "model": "demo",
    "method": "heads",
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "method_paper": "Compressed sensing for capability localization in LLMs (arXiv 2603.03335)",
    "anatomy": {"n_layers": 30},
    "base": {"target_accuracy": 0.8, "perplexity": 10.0},
    "edited": {"target_accuracy": 0.5, "perplexity": 10.5, "heldout/capitals": 0.9},
    "edit": {"method": "heads", "modules": 2, "info": {"heads": [[3, 1]]}},
    "edit_norms": {"model.layers.3.self_attn.o_proj": 1.5},
    "export": {"path": "model", "dtype": "same", "files": ["model.safetensors"], "streaming": False},
    "fit_seconds": 0.0,
    "total_seconds": 240.94,
}


def test_the_schema_page_is_generated_from_the_model():
    assert (ROOT / "docs" / "metrics.md").read_text() == schema_markdown()
    out = subprocess.run(
        [sys.executable, "-m", "editkit.run.record"], capture_output=True, text=True, check=True
    )
    assert out.stdout == schema_markdown()
    assert set(RunRecord.model_fields) <= {
        ln.split("`")[1] for ln in schema_markdown().splitlines() if ln.startswith("| `")
    }


def test_an_old_file_loads_typed(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(OLD))
    rec = read_record(tmp_path)
    assert rec.edit.modules == 2 and rec.export.streaming is False and rec.base["perplexity"] == 10.0
    assert rec.weights is None and rec.checks is None  # sections it never had
    assert read_metrics(tmp_path) == OLD


@pytest.mark.parametrize(
    "change, where",
    [
        ({"verdict": "removed"}, "verdict: unknown field (written by another editkit version?)"),
        ({"edit": {"method": "heads", "modules": "two"}}, "edit.modules: Input should be a valid integer"),
        ({"edit_norms": {"m": "big"}}, "edit_norms.m: Input should be a valid number"),
        ({"generations": [{"base": "x"}]}, "generations.0.prompt: Field required"),
    ],
)
def test_a_foreign_file_fails_in_one_line_naming_the_field(tmp_path, change, where):
    (tmp_path / "metrics.json").write_text(json.dumps({**OLD, **change}))
    with pytest.raises(OutputError) as e:
        read_metrics(tmp_path)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "metrics.json") + ": ") and where in msg and "\n" not in msg


def test_the_writer_refuses_a_section_of_the_wrong_shape(tmp_path):
    write_metrics(tmp_path, OLD)
    with pytest.raises(ValueError, match=r"^metrics.json \(as this run would write it\): edited: "):
        write_metrics(tmp_path, {**OLD, "edited": 0.5})
    assert json.loads((tmp_path / "metrics.json").read_text()) == OLD  # the previous file stays


def test_the_card_reads_the_record(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).write_text("")
    (run / "recipe.yaml").write_text("name: x\nmodel: demo\nmethod: {name: heads}\n")
    (run / "metrics.json").write_text(json.dumps({**OLD, "edited": 0.5}))
    with pytest.raises(OutputError, match=r"metrics.json: edited: "):
        write_card(run)
    validate_record(OLD)
