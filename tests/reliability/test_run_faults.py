"""Runs under faults: the source changing after validation, a tampered snapshot, an unreadable
day, SIGKILL at every step, two runs at once, a full disk. Production must always name a
complete bundle and the same run id must recover."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.errors import DataValidationError, PipelineError
from pipelines.layout import RunLayout, RunSummary
from pipelines.registry import Registry
from pipelines.steps.features import build_features
from pipelines.steps.pipeline import new_run_id, run_lock
from pipelines.steps.validate import validate_raw

REPO = Path(__file__).resolve().parents[2]


def config(root: Path, source: Path, **train):
    return load_config(
        env={},
        overrides={
            "data": {"source": str(source), "artifact_root": str(root)},
            "train": {"epochs": 1, "final_fit": False, **train},
        },
    )


@pytest.fixture
def world(small_world, tmp_path) -> Path:
    """A private copy of the small synthetic world (tests edit it)."""
    return Path(shutil.copytree(small_world, tmp_path / "landing"))


def _append_partition(world: Path, frame: pd.DataFrame) -> Path:
    last = sorted((world / "interactions").iterdir())[-1]
    path = last / "part-late.parquet"
    frame.to_parquet(path, index=False)
    return path


def _late_rows(world: Path) -> pd.DataFrame:
    """Rows an attacker (or a late writer) adds after validation: a huge negative weight on
    an item that exists nowhere else."""
    some = pd.read_parquet(next((world / "interactions").rglob("*.parquet")))
    late = some.head(50).copy()
    late["item_id"] = "smuggled-item"
    late["weight"] = -1e9
    return late


def test_source_modified_after_validation_never_reaches_training(world, tmp_path, tally):
    cfg = config(tmp_path / "artifacts", world)
    layout = RunLayout.for_run(cfg.data.artifact_root, "late-write")
    validated = validate_raw(cfg, layout)
    _append_partition(world, _late_rows(world))
    build_features(cfg, layout, engine="local")
    raw = pd.read_parquet(layout.raw / "interactions")
    catalog = pd.read_parquet(layout.features / "catalog.parquet")
    snapshot = json.loads((Path(validated["snapshot_dir"]) / "snapshot.json").read_text())
    leaked = "smuggled-item" in set(raw["item_id"]) or "smuggled-item" in set(
        catalog["item_id"].astype(str)
    )
    outcome = tally.record(
        "run_faults", "source_modified_after_validation",
        "data_lost" if leaked or raw["weight"].min() < 0 else "handled",
    )  # fmt: skip
    assert outcome == "handled"
    assert len(raw) == snapshot["interactions"] == snapshot["validation"]["rows"]


def test_tampered_snapshot_is_refused_naming_the_file(world, tmp_path, tally):
    cfg = config(tmp_path / "artifacts", world)
    layout = RunLayout.for_run(cfg.data.artifact_root, "tampered")
    validate_raw(cfg, layout)
    part = next((layout.snapshot / "interactions").glob("*.parquet"))
    frame = pd.read_parquet(part)
    frame.loc[0, "weight"] = -1e9
    frame.to_parquet(part, index=False)
    with pytest.raises(DataValidationError) as caught:
        build_features(cfg, layout, engine="local")
    message = str(caught.value)
    ok = f"interactions/{part.name}" in message and "sha256 differs" in message
    assert (
        tally.record("run_faults", "tampered_snapshot", "handled" if ok else "crash") == "handled"
    )
    assert not layout.features_manifest.exists()


def test_features_alone_refuses_an_unreadable_day(world, tmp_path, tally):
    """`features` without a validated snapshot validates first: a day it cannot read is a
    failed rule, not a silently smaller dataset."""
    from pipelines.cli import main

    day = sorted((world / "interactions").iterdir())[3]
    for part in day.glob("*.parquet"):
        part.write_bytes(b"PAR1 this is not parquet")
    rc = main(["features", "--source", str(world), "--run-dir", str(tmp_path / "run"),
               "--engine", "local"])  # fmt: skip
    ok = rc == 1 and not (tmp_path / "run" / "features" / "manifest.json").exists()
    assert tally.record("run_faults", "features_unreadable_day", "handled" if ok else
                        "silent_accept") == "handled"  # fmt: skip


def test_run_ids_are_unique_within_a_second():
    ids = [new_run_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("run-") and "/" not in i for i in ids)


_HOLD_LOCK = """
import sys, time
from pipelines.steps.pipeline import run_lock
with run_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_run_on_one_artifact_root_is_refused(tmp_path, tally):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
        cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PipelineError, match=r"in use by run holder \(pid \d+\)"):
            with run_lock(tmp_path, "second"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path, "third"):  # released when its holder died
        pass
    tally.record("run_faults", "concurrent_runs", "handled")


def _production_is_complete(root: Path) -> bool:
    registry = Registry(root)
    production = registry.production()
    return production is None or registry.verify(production)


# Each kill is followed by the next attempt of the same run id; the last attempt completes.
# A kill at "<step>:before" is the same state as one at the previous step's "after".
KILL_POINTS = [
    "validate_raw:after", "features:after", "train:after", "gate:after", "promote:after",
]  # fmt: skip


@pytest.fixture
def tiny_world(tmp_path) -> Path:
    """A week of the small preset: enough for every step, fast enough to run 7 times."""
    from pipelines.synthetic import generate

    generate(tmp_path / "tiny", preset="small", seed=11, days=7)
    return tmp_path / "tiny"


def _run(root: Path, source: Path, run_id: str, kill_at: str | None, *extra: str):
    # No final fit: it would double training and indexing in each of the seven runs
    # (its kill safety is the train step's: `train:after` comes after it).
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "GX_ANALYTICS_ENABLED": "false",
           "TTR_TRAIN__FINAL_FIT": "false"}  # fmt: skip
    env.pop("TTR_FAULT_KILL_AT", None)
    if kill_at:
        env["TTR_FAULT_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--source", str(source), "--artifact-root",
         str(root), "--run-id", run_id, "--engine", "local", "--epochs", "1", *extra],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_every_step_then_the_same_run_id_recovers(tiny_world, tmp_path, tally):
    world, root = tiny_world, tmp_path / "artifacts"
    first = _run(root, world, "day-1", None, "--force-promote")
    assert first.returncode == 0, first.stderr[-3000:]
    champion = Registry(root).production()
    for point in KILL_POINTS:
        killed = _run(root, world, "day-2", point)
        complete = killed.returncode == -signal.SIGKILL and _production_is_complete(root)
        production = Registry(root).production()
        unchanged = production == champion or point == "promote:after"
        outcome = tally.record(
            "run_faults", f"sigkill_{point}", "handled" if complete and unchanged else "data_lost",
            f"rc={killed.returncode} production={production}",
        )  # fmt: skip
        assert outcome == "handled", killed.stderr[-3000:]
    final = _run(root, world, "day-2", None)
    assert final.returncode in (0, 1), final.stderr[-3000:]  # promoted, or the gate said no
    assert "Traceback" not in final.stderr
    assert _production_is_complete(root)
    summary = RunSummary.read(RunLayout.for_run(root, "day-2"))
    assert (
        summary.decision and summary.steps["promote"]["decision"] and summary.steps["gate"]["rules"]
    )


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a small filesystem needs root to mount tmpfs (not root here)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    path = tmp_path / "small-disk"
    _mount_tmpfs(path, "600k")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_is_an_environment_error_not_a_traceback(world, small_disk, capsys, tally):
    from pipelines.cli import main

    before = {p: p.stat().st_mtime_ns for p in world.rglob("*") if p.is_file()}
    rc = main(["features", "--source", str(world), "--run-dir", str(small_disk / "run"),
               "--engine", "local"])  # fmt: skip
    err = capsys.readouterr().err
    ok = rc == 2 and "disk full" in err and "Traceback" not in err
    unchanged = before == {p: p.stat().st_mtime_ns for p in world.rglob("*") if p.is_file()}
    outcome = "handled" if ok else "crash"
    if not unchanged:
        outcome = "data_lost"
    assert tally.record("run_faults", "disk_full_features", outcome, err[-300:]) == "handled"


def test_disk_full_during_publish_leaves_production_and_the_retry_works(tmp_path, tally):
    """A publish that runs out of space leaves production as it was; once space is freed the
    same publish succeeds (no leftover makes it fail again)."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        registry = Registry(disk)
        small = tmp_path / "small"
        small.mkdir()
        (small / "weights.bin").write_bytes(os.urandom(200_000))
        first = registry.publish(small, {"run_id": "r1"})
        registry.promote(first, reason="first")
        big = tmp_path / "big"
        big.mkdir()
        (big / "weights.bin").write_bytes(os.urandom(1_500_000))
        filler = disk / "filler"
        filler.write_bytes(b"\0" * 400_000)
        with pytest.raises(OSError) as caught:
            registry.publish(big, {"run_id": "r2"})
        assert caught.value.errno == errno.ENOSPC
        intact = registry.production() == first and registry.verify(first)
        filler.unlink()
        second = registry.publish(big, {"run_id": "r2"})
        registry.promote(second, reason="retry")
        recovered = registry.production() == second and registry.verify(second)
        outcome = "handled" if intact and recovered else "data_lost"
        assert tally.record("run_faults", "disk_full_publish", outcome) == "handled"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
