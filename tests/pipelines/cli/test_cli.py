"""The CLI as a person uses it: subprocesses, exit codes, printed summaries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "pipelines"]


def run(*args, cwd=None, env=None):
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip


STEPS = ["generate", "land", "validate", "features", "train", "index", "evaluate", "promote",
         "rollback", "registry", "recommend", "run"]  # fmt: skip


@pytest.mark.parametrize("command", STEPS)
def test_every_step_has_help(command):
    result = run(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: two-tower {command}")


def test_console_script_is_the_same_cli():
    script = Path(sys.executable).parent / "two-tower"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("generate", "validate", "features", "train", "recommend", "run"):
        assert command in result.stdout


def test_generate_then_validate(tmp_path):
    out = tmp_path / "landing"
    gen = run("generate", "--preset", "small", "--seed", "3", "--days", "5", "--out", out)
    assert gen.returncode == 0, gen.stderr
    assert f"in 5 daily partitions to {out}" in gen.stdout
    assert "generate: [" in gen.stderr  # progress
    assert len(list((out / "interactions").iterdir())) == 5

    report_dir, artifacts = tmp_path / "report", tmp_path / "artifacts"
    val = run("validate", "--source", out, "--report-dir", report_dir, "--artifact-root", artifacts)
    assert val.returncode == 0, val.stdout + val.stderr
    assert val.stdout.startswith("Raw data validation PASSED")
    assert f"report: {report_dir / 'index.html'}" in val.stdout
    assert (report_dir / "gx_interactions.html").is_file()
    # The validate step keeps what it checked as a snapshot in a run of its own.
    [snapshot] = (artifacts / "runs").glob("validate-*/snapshot/snapshot.json")
    assert json.loads(snapshot.read_text())["validation"]["source"] == str(out)


def test_validate_failure_exits_1_and_names_file_column_rule(tmp_path):
    root = tmp_path / "ml"
    root.mkdir()
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,978300760\n,11,3.5,978300761\n"
    )
    (root / "movies.csv").write_text(
        "movieId,title,genres\n10,Toy Story (1995),Animation\n11,Heat (1995),Action\n"
    )
    result = run("validate", "--source", root, "--report-dir", tmp_path / "rep", "--json",
                 "--artifact-root", tmp_path / "artifacts")  # fmt: skip
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["format"] == "ml-latest" and report["success"] is False
    [failure] = [r for r in report["results"] if not r["success"]]
    assert failure["file"] == str(root / "ratings.csv")
    assert failure["column"] == "user_id" and failure["rule"] == "user_id must not be null"
    assert failure["samples"][0].startswith("ratings.csv line 3:")
    assert not list((tmp_path / "artifacts" / "runs").glob("*/snapshot"))  # nothing kept


def test_usage_errors_exit_2_with_a_reason(tmp_path):
    missing = run("validate", "--source", tmp_path / "nowhere", "--report-dir", tmp_path / "r")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_config = tmp_path / "c.yaml"
    bad_config.write_text("checks:\n  max_duplicate_rate: 3\n")
    config = run("validate", "--source", tmp_path, "--config", bad_config)
    assert config.returncode == 2
    assert "checks.max_duplicate_rate" in config.stderr and "0.0 <= x <= 1.0" in config.stderr
    no_bundle = run("recommend", "--user", "u1", "--artifact-root", tmp_path / "empty")
    assert no_bundle.returncode == 2 and "no production bundle" in no_bundle.stderr
    no_previous = run("rollback", "--artifact-root", tmp_path / "empty")
    assert no_previous.returncode == 2 and "no previous production bundle" in no_previous.stderr


@pytest.mark.slow
def test_train_prints_validation_recall_against_popularity(small_features, tmp_path):
    result = run(
        "train",
        "--features",
        small_features.features_dir,
        "--model-dir",
        tmp_path / "model",
        "--epochs",
        "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(
        r"Recall@100 on [\d,]+ validation queries \(selection only; the evaluate step scores "
        r"the eval period\): model (0\.\d+), popularity (0\.\d+)",
        result.stdout,
    )
    assert found and float(found.group(1)) > float(found.group(2))
    assert (tmp_path / "model" / "query_tower" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_train_refuses_to_warm_start_from_a_model_trained_past_the_eval_start(
    small_features, tmp_path
):
    """The train step's leakage guard applies to the `train` command: a model that trained on
    this eval period (here: up to the window's end) must not initialise the new one."""
    window = small_features.manifest["window"]
    assert window["window_end"] > window["eval_start"]
    seen_eval = tmp_path / "trained-past-eval-start"
    seen_eval.mkdir()
    (seen_eval / "train_manifest.json").write_text(
        json.dumps({"trained_until": window["window_end"], "features_window": window})
    )
    result = run(
        "train", "--features", small_features.features_dir, "--model-dir", tmp_path / "model",
        "--epochs", "1", "--warm-start", seen_eval, env={"TTR_TRAIN__FINAL_FIT": "false"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"WARNING .*not warm-starting from {seen_eval}: trained on", result.stderr)
    assert (
        f"not warm-started from {seen_eval}: trained on interactions up to "
        f"{window['window_end']}, after this eval period starts ({window['eval_start']}); "
        "trained from scratch"
    ) in result.stdout
    manifest = json.loads((tmp_path / "model" / "train_manifest.json").read_text())
    assert manifest["warm_start"] is None and manifest["resumed_from_epoch"] == 0


def test_features_as_of_replays_the_past(small_world, tmp_path):
    result = run("features", "--source", small_world, "--engine", "local", "--as-of",
                 "2026-01-10", "--run-dir", tmp_path / "run")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2026-01-10T00:00:00+00:00), eval from" in result.stdout
    early = run("features", "--source", small_world, "--engine", "local", "--as-of",
                "2025-06-01", "--run-dir", tmp_path / "early")  # fmt: skip
    assert early.returncode == 2
    assert "features.as_of=2025-06-01T00:00:00+00:00" in early.stderr
    assert "no interactions before it" in early.stderr


def test_registry_gc_removes_debris_and_keeps_production(tmp_path, capsys):
    from pipelines.cli import main
    from pipelines.registry import Registry

    registry = Registry(tmp_path)
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "weights.bin").write_bytes(b"w" * 100)
    production = registry.publish(bundle, {"run_id": "r1"})
    registry.promote(production)
    debris = tmp_path / "registry" / "bundles" / ".tmp-killed-publish"
    debris.mkdir()
    (debris / "weights.bin").write_bytes(b"half")
    assert main(["registry", "gc", "--artifact-root", str(tmp_path), "--older-than", "0"]) == 0
    out = capsys.readouterr().out
    assert "removed bundles/.tmp-killed-publish" in out and not debris.exists()
    assert registry.production() == production and registry.verify(production)
    assert main(["registry", "gc", "--artifact-root", str(tmp_path), "--older-than", "-1"]) == 2
