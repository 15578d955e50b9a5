"""Sources read in batches (`SourceScan`) and the snapshot written batch by batch."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.errors import DataValidationError
from pipelines.features import snapshot as snapshot_module
from pipelines.features.snapshot import SnapshotWriter, read_snapshot, write_snapshot
from pipelines.layout import RunLayout
from pipelines.sources import read_source, scan_source


def digests(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_batches_are_the_source_in_order(contract_source, fmt):
    src = contract_source(fmt=fmt, days=4, rows_per_day=25)
    src.days_frames[src.last_day].loc[3, "weight"] = float("nan")  # a read issue: row dropped
    root = src.write()
    whole = read_source(root)
    scan = scan_source(root)
    batches = list(scan.batches(max_rows=7))
    assert max(len(b) for b in batches) == 7 and len(batches) == 15  # 99 rows
    joined = pd.concat(batches, ignore_index=True)
    for column in ("user_id", "item_id", "timestamp", "weight", "source_row"):
        pd.testing.assert_series_equal(joined[column], whole.interactions[column])
    for column in ("event", "dt", "source_file"):
        assert (
            joined[column].astype(str).tolist() == whole.interactions[column].astype(str).tolist()
        )
    pd.testing.assert_frame_equal(scan.partitions, whole.partitions)
    assert scan.issues == whole.issues and len(scan.issues) == 1
    assert sum(len(b) for b in scan.batches(max_rows=1000)) == 99  # a second pass reads again
    assert scan.issues == whole.issues


def test_snapshot_written_in_batches_is_byte_identical(contract_source, tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_module, "ROWS_PER_FILE", 40)  # several parts and row groups
    monkeypatch.setattr(snapshot_module, "ROW_GROUP", 15)
    root = contract_source(fmt="parquet", days=5, rows_per_day=23).write()
    write_snapshot(read_source(root), tmp_path / "whole", validation={"success": True})
    scan = scan_source(root)
    writer = SnapshotWriter(tmp_path / "batched")
    for batch in scan.batches(max_rows=9):
        writer.add(batch)
    writer.finish(scan, validation={"success": True})
    assert digests(tmp_path / "batched") == digests(tmp_path / "whole")
    assert len(list((tmp_path / "whole" / "interactions").glob("*.parquet"))) == 3
    again = read_snapshot(tmp_path / "batched", require_validated=True)
    assert len(again.interactions) == 115
    pd.testing.assert_frame_equal(again.partitions, read_source(root).partitions)


def test_take_snapshot_keeps_nothing_when_a_rule_fails(contract_source, tmp_path):
    from pipelines.steps.validate import take_snapshot

    src = contract_source(days=4, rows_per_day=25)
    cfg = load_config(env={}, overrides={"data": {"source": str(src.write())}})
    layout = RunLayout(tmp_path / "run")
    report = take_snapshot(cfg, layout, now=pd.Timestamp("2026-03-20", tz="UTC"))
    assert report.success and read_snapshot(layout.snapshot).interactions.shape[0] == 100

    src.days_frames[src.last_day].loc[0, "weight"] = -5.0
    src.write()
    with pytest.raises(DataValidationError, match="weights"):
        take_snapshot(cfg, layout, now=pd.Timestamp("2026-03-20", tz="UTC"))
    assert not layout.snapshot.exists()
