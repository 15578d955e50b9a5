"""`two-tower land`: one day into a contract source, whole or not at all, never replacing a
landed day (the Airflow event it records is tested in tests/pipelines/orchestration/test_events.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ContractSource

from pipelines.cli import main
from pipelines.errors import SourceError
from pipelines.sources import read_source
from pipelines.sources.landing import land_partition


@pytest.fixture
def world(tmp_path, monkeypatch) -> ContractSource:
    """A 3-day source `world` under the data root, and the 5-day feed it comes from."""
    for var in [v for v in os.environ if v.startswith(("AIRFLOW", "TTR_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("TTR_DATA_ROOT", str(tmp_path / "data"))
    ContractSource(tmp_path / "data" / "world", days=3).write()
    feed = ContractSource(tmp_path / "feed", days=5)
    feed.write()
    return feed


def land(*args) -> int:
    return main(["land", *map(str, args), "--no-airflow-event"])


def test_land_a_file_then_read_it_as_part_of_the_source(world, tmp_path, capsys):
    day = world.last_day
    assert land(world.partition_file(day), "--source", "world") == 0
    target = tmp_path / "data" / "world" / "interactions" / f"dt={day}"
    out = capsys.readouterr().out
    assert f"landed: dt={day}, 60 rows, 1 file(s) -> {target}" in out
    # The config names no source: the note says scheduled runs read something else.
    assert "timer and landing runs read the synthetic" in out
    assert (target / "part-0.csv").read_bytes() == world.partition_file(day).read_bytes()
    assert [p.name for p in (tmp_path / "data" / "world").iterdir() if p.name.startswith(".")] == []
    snapshot = read_source(tmp_path / "data" / "world")
    assert day in set(snapshot.partitions["dt"]) and not snapshot.issues


def test_same_files_again_change_nothing_different_ones_are_refused(world, tmp_path, capsys):
    day = world.last_day
    partition = world.partition_file(day).parent  # a dt= directory: the day from its name
    assert land(partition, "--source", "world") == 0
    assert land(partition, "--source", "world") == 0
    assert "already landed (same files)" in capsys.readouterr().out
    world.days_frames[day] = world.days_frames[day].head(10)
    world.write()
    assert land(partition, "--source", "world") == 2
    err = capsys.readouterr().err
    assert f"dt={day} already holds different data (part-0.csv)" in err
    assert "never replaced" in err
    target = tmp_path / "data" / "world" / "interactions" / f"dt={day}" / "part-0.csv"
    assert len(pd.read_csv(target)) == 60  # the landed day is untouched


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda d: d / "x.json", ["--dt", "2026-03-05"], "only *.parquet or *.csv"),
        (lambda d: d / "day.csv", [], "give the partition's day (--dt YYYY-MM-DD)"),
        (lambda d: d / "day.csv", ["--dt", "2026-02-30"], "not a day: '2026-02-30'"),
        (lambda d: d / "dt=2026-03-05" / "a.csv", ["--dt", "2026-03-06"], "not the day given"),
        (lambda d: d / "nocols.csv", ["--dt", "2026-03-05"], "missing required column(s) item_id"),
        (lambda d: d / "empty.csv", ["--dt", "2026-03-05"], "no rows to land"),
    ],
)
def test_bad_input_is_refused_before_anything_moves(world, tmp_path, capsys, make, args, message):
    path = make(tmp_path / "in")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = world.days_frames[world.last_day]
    if path.name == "nocols.csv":
        frame = frame.drop(columns="item_id")
    if path.name == "empty.csv":
        frame = frame.head(0)
    frame.to_csv(path, index=False)
    before = sorted((tmp_path / "data").rglob("*"))
    assert land(path, "--source", "world", *args) == 2
    assert message in capsys.readouterr().err
    assert sorted((tmp_path / "data").rglob("*")) == before


def test_the_source_must_be_a_partitioned_contract_source_in_the_data_root(world, tmp_path, capsys):
    file = world.partition_file(world.last_day)
    assert land(file, "--source", "../feed") == 2
    assert "points outside the data root" in capsys.readouterr().err
    assert land(file, "--source", "missing") == 2
    assert "does not exist" in capsys.readouterr().err
    flat = tmp_path / "data" / "flat"
    flat.mkdir()
    world.days_frames[world.last_day].to_csv(flat / "interactions.csv", index=False)
    assert land(file, "--source", "flat") == 2
    assert "an unpartitioned contract source" in capsys.readouterr().err
    fresh = tmp_path / "data" / "fresh"
    fresh.mkdir()  # no interactions yet: the first landed day makes it a contract source
    assert land(file, "--source", "fresh") == 0


def test_parquet_rows_come_from_its_metadata(tmp_path):
    source = ContractSource(tmp_path / "source", days=2, fmt="parquet")
    source.write()
    feed = ContractSource(tmp_path / "feed", days=3, rows_per_day=7, fmt="parquet")
    feed.write()
    landed = land_partition(source.root, feed.partition_file(feed.last_day))
    assert (landed.rows, landed.files, landed.already) == (7, ("part-0.parquet",), False)
    with pytest.raises(SourceError, match="not a readable parquet file"):
        broken = tmp_path / "dt=2026-04-01" / "bad.parquet"
        broken.parent.mkdir()
        broken.write_bytes(b"not parquet")
        land_partition(source.root, broken)


def test_the_configured_source_gets_no_note_and_no_airflow_means_no_files(world, tmp_path):
    """Plain CLI use: nothing of Airflow is created in the home directory."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TTR_"))}
    env.update(HOME=str(home), TTR_DATA_ROOT=str(tmp_path / "data"),
               TTR_DATA__SOURCE=str(tmp_path / "data" / "world"))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "land", str(world.partition_file(world.last_day))],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "landed: dt=" in done.stdout and "note:" not in done.stdout
    assert "no Airflow configured" in done.stderr and "recorded in Airflow" not in done.stdout
    assert list(home.iterdir()) == []
