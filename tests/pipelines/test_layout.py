"""RunLayout, ModelLayout and RunSummary: the paths of a run and its summary.json."""

from __future__ import annotations

import json

import pytest

from pipelines.errors import PipelineError
from pipelines.layout import ModelLayout, RunLayout, RunSummary, evaluated_weights_dir


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden", "..", "../escape"])
def test_a_run_id_must_be_a_plain_name(tmp_path, bad):
    with pytest.raises(PipelineError, match="must be a plain name"):
        RunLayout.for_run(tmp_path, bad)


def test_paths_of_a_run(tmp_path):
    layout = RunLayout.for_run(tmp_path, "r1")
    assert layout.run_dir == tmp_path / "runs" / "r1" and layout.run_id == "r1"
    assert layout.features_manifest == layout.run_dir / "features" / "manifest.json"
    assert layout.metrics == layout.run_dir / "evaluation" / "metrics.json"
    assert layout.gate_md == layout.run_dir / "evaluation" / "gate.md"
    assert layout.summary == layout.run_dir / "summary.json"
    assert RunLayout(str(layout.run_dir)) == layout  # a directory a person named


def trained(directory):
    directory.mkdir(parents=True)
    ModelLayout(directory).train_manifest.write_text("{}")
    return directory


def test_a_run_ships_its_final_fit_only_when_it_finished(tmp_path):
    layout = RunLayout(tmp_path / "run")
    trained(layout.model)
    layout.model_final.mkdir()  # a final fit killed before its manifest
    assert layout.shipped_model() == layout.model
    ModelLayout(layout.model_final).train_manifest.write_text("{}")
    assert layout.shipped_model() == layout.model_final


def test_evaluated_weights_of_a_bundle_after_a_final_fit(tmp_path):
    bundle = trained(tmp_path / "bundle")
    assert evaluated_weights_dir(bundle) == bundle
    trained(ModelLayout(bundle).evaluated)
    assert evaluated_weights_dir(bundle) == bundle / "evaluated"


def test_run_summary_round_trips_through_summary_json(tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.run_dir.mkdir()
    summary = RunSummary.of(
        layout, champion=None, decision="promote", promoted=True, production_bundle="b" * 16,
        steps={"gate": {"promote": True, "rules": []}},
    )  # fmt: skip
    summary.write(layout)
    assert RunSummary.read(layout) == summary
    saved = json.loads(layout.summary.read_text())
    assert saved["production_bundle"] == "b" * 16 and saved["gate_report"] == str(layout.gate_md)


def test_an_unreadable_summary_names_the_file(tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.run_dir.mkdir()
    layout.summary.write_text('{"run_id": "r"}')
    with pytest.raises(PipelineError, match=r"summary.json: not a readable run summary"):
        RunSummary.read(layout)
