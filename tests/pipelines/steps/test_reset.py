"""The re-run reset `run` and the DAG share: everything goes but the training checkpoints."""

from __future__ import annotations

from pipelines.layout import ModelLayout, RunLayout
from pipelines.steps.pipeline import reset_run_dir


def used_run(tmp_path) -> RunLayout:
    layout = RunLayout.for_run(tmp_path, "again")
    for directory in (layout.snapshot, layout.features, layout.evaluation, layout.model_final):
        directory.mkdir(parents=True)
        (directory / "file").write_text("stale")
    checkpoints = ModelLayout(layout.model).checkpoints
    checkpoints.mkdir(parents=True)
    (checkpoints / "ckpt-3.index").write_text("weights")
    ModelLayout(layout.model).train_manifest.write_text("{}")
    layout.summary.write_text("{}")
    return layout


def test_a_re_run_keeps_only_its_checkpoints(tmp_path):
    layout = used_run(tmp_path)
    reset_run_dir(layout)
    assert sorted(p.relative_to(layout.run_dir).as_posix() for p in layout.run_dir.rglob("*")) == [
        "model", "model/checkpoints", "model/checkpoints/ckpt-3.index",
    ]  # fmt: skip


def test_without_resume_the_run_directory_is_emptied(tmp_path):
    layout = used_run(tmp_path)
    reset_run_dir(layout, keep_checkpoints=False)
    assert layout.run_dir.is_dir() and not list(layout.run_dir.iterdir())
    reset_run_dir(RunLayout.for_run(tmp_path, "new"))  # a new run id: created empty
    assert not list(RunLayout.for_run(tmp_path, "new").run_dir.iterdir())
