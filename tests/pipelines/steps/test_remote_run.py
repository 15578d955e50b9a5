"""`two-tower run --artifact-root s3://<bucket>/tt` against a real S3 API (moto's server on
loopback): the run's files and the promoted bundle land in the bucket, another host can read
the run, and no local directory is named after the URL."""

from __future__ import annotations

import pytest
import s3_support

from pipelines.artifacts import ArtifactRoot
from pipelines.cli import main
from pipelines.layout import RunSummary
from pipelines.registry import Registry

s3_server, s3_bucket = s3_support.s3_server, s3_support.s3_bucket  # the fixtures

pytestmark = pytest.mark.slow


def test_run_on_an_s3_artifact_root(s3_bucket, small_world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where `Path("s3://...")` used to create `s3:/...`
    monkeypatch.setenv("TTR_STAGING_DIR", str(tmp_path / "staging"))
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  final_fit: false\n")
    rc = main(["run", "--artifact-root", s3_bucket, "--source", str(small_world),
               "--config", str(config), "--run-id", "r1", "--engine", "local",
               "--epochs", "1", "--force-promote"])  # fmt: skip
    assert rc == 0

    root = ArtifactRoot(s3_bucket)
    stored = {p.split("/tt/", 1)[1] for p in root.fs.find(root.root)}
    for name in ("summary.json", "snapshot/snapshot.json", "features/manifest.json",
                 "model/train_manifest.json", "model/index/index_manifest.json",
                 "evaluation/metrics.json", "evaluation/gate.json", "raw_report/index.html"):  # fmt: skip
        assert f"runs/r1/{name}" in stored

    registry = Registry(s3_bucket)
    bundle = registry.production()
    assert bundle and registry.verify(bundle)
    assert f"registry/bundles/{bundle}/query_tower/saved_model.pb" in stored

    elsewhere = ArtifactRoot(s3_bucket, role="read", staging_dir=tmp_path / "other-host")
    summary = RunSummary.read(elsewhere.run_reports("r1"))
    assert summary.promoted and summary.production_bundle == bundle
    assert summary.run_dir == f"{s3_bucket}/runs/r1"  # where the run is, not a worker's cache
    assert summary.report == f"{s3_bucket}/runs/r1/evaluation/report.md"

    mangled = [p for p in tmp_path.rglob("*") if p.name in ("s3:", "s3_") or "s3:" in p.name]
    assert not mangled and not (tmp_path / "artifacts").exists()
