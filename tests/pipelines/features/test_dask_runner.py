"""The runner's options reach Beam from the config (`beam.options`: YAML, environment), not only
from the CLI; and the feature job, submitted that way to a real dask.distributed cluster (a
scheduler and two worker processes started here, on 127.0.0.1), writes the same bytes as on the
DirectRunner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import tree_digest

from pipelines.config import BeamConfig, load_config
from pipelines.errors import ConfigError, DataValidationError
from pipelines.features.beam_job import beam_options, run_beam
from pipelines.features.dask_local import DASK_RUNNER, local_dask_cluster, worker_pids
from pipelines.features.window import FeatureWindow

WORKERS = 2


def test_beam_options_from_the_environment_reach_the_pipeline_options():
    cfg = load_config(
        env={
            "TTR_BEAM__RUNNER": DASK_RUNNER,
            "TTR_BEAM__OPTIONS__DASK_CLIENT_ADDRESS": "tcp://127.0.0.1:8786",
            "TTR_BEAM__OPTIONS": "{dask_connection_timeout: 30, experiments: [a, b]}",
        }
    )
    options = beam_options([], cfg.beam).get_all_options()
    assert options["runner"] == DASK_RUNNER
    assert options["address"] == "tcp://127.0.0.1:8786"  # DaskOptions' dest for the flag
    assert options["timeout"] == 30
    assert options["experiments"] == ["a", "b"]
    # A flag on the command line wins over the config.
    cli = beam_options(["--dask_client_address=tcp://10.0.0.1:1"], cfg.beam).get_all_options()
    assert cli["address"] == "tcp://10.0.0.1:1"
    # One Dask partition per unit of input (row group), unless the partitioning is configured.
    assert beam_options([], cfg.beam, work_units=5).get_all_options()["npartitions"] == 5
    sized = beam_options(["--dask_partition_size=2"], cfg.beam, work_units=5).get_all_options()
    assert (sized["npartitions"], sized["partition_size"]) == (None, 2)


def test_flink_options_from_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "beam:\n  runner: FlinkRunner\n  options:\n    flink_master: jobmanager:8081\n"
        "    environment_type: EXTERNAL\n    environment_config: localhost:50000\n"
    )
    options = beam_options([], load_config(path, env={}).beam).get_all_options()
    assert (options["runner"], options["flink_master"]) == ("FlinkRunner", "jobmanager:8081")
    assert (options["environment_type"], options["environment_config"]) == (
        "EXTERNAL",
        "localhost:50000",
    )


def test_beam_flags_outside_options_and_unknown_options_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"beam.flink_master is not a beam setting.*"
                       r"TTR_BEAM__OPTIONS__FLINK_MASTER"):  # fmt: skip
        load_config(env={"TTR_BEAM__FLINK_MASTER": "jobmanager:8081"})
    with pytest.raises(ConfigError, match="nope: Extra inputs are not permitted"):
        load_config(env={"TTR_NOPE__X": "1"})
    with pytest.raises(ConfigError, match="set beam.runner instead"):
        load_config(env={"TTR_BEAM__OPTIONS__RUNNER": "FlinkRunner"})
    misspelt = BeamConfig(runner="FlinkRunner", options={"flink_mastr": "jobmanager:8081"})
    with pytest.raises(ConfigError, match="beam.options: flink_mastr is not a Beam pipeline"):
        beam_options([], misspelt)


def test_a_snapshot_without_interactions_is_refused_before_the_job_starts(tmp_path):
    (tmp_path / "raw" / "interactions").mkdir(parents=True)
    window = FeatureWindow(0, 0, 10, 20)
    with pytest.raises(DataValidationError, match="no interactions to build features from"):
        run_beam(str(tmp_path / "raw"), str(tmp_path / "out"), window, load_config(env={}).features)
    assert not (tmp_path / "out").exists()


# -- the feature job on a dask.distributed cluster ---------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real local cluster: `dask scheduler` + 2 `dask worker` processes on 127.0.0.1
    (`pipelines.features.dask_local`); yields the scheduler's address."""
    with local_dask_cluster(WORKERS, tmp_path_factory.mktemp("dask")) as cluster:
        pids = worker_pids(cluster.address)
        assert len(pids) == WORKERS and os.getpid() not in pids
        yield cluster.address


@pytest.fixture(scope="module")
def raw_in_row_groups(small_features, tmp_path_factory) -> str:
    """The small world's snapshot with its interactions in 2 files of 4 row groups each: more
    units of work than workers (a real snapshot has one per 250k events)."""
    raw = tmp_path_factory.mktemp("raw")
    src = Path(small_features.raw_dir)
    for name in ("items.parquet", "users.parquet"):
        if (src / name).exists():
            shutil.copy(src / name, raw / name)
    table = pq.read_table(src / "interactions")
    (raw / "interactions").mkdir()
    half = (table.num_rows + 1) // 2
    for part, start in enumerate((0, half)):
        chunk = table.slice(start, half)
        pq.write_table(
            chunk, raw / "interactions" / f"part-{part:05d}.parquet",
            row_group_size=(chunk.num_rows + 3) // 4,
        )  # fmt: skip
    return str(raw)


def _features(raw: str, out: Path, env: dict[str, str], small_features) -> dict[str, str]:
    """The job's files from the config `env` gives (the DAG's route), by sha256; manifest.json
    by content with the run's own directory masked (it names its files by absolute path)."""
    cfg = load_config(env=env)
    run_beam(raw, str(out), small_features.window, cfg.features, beam_cfg=cfg.beam)
    digest = tree_digest(out)
    digest["manifest.json"] = (out / "manifest.json").read_text().replace(str(out), "<out>")
    return digest


@pytest.mark.slow
def test_feature_job_on_a_dask_cluster_writes_the_direct_runners_bytes(
    dask_cluster, raw_in_row_groups, small_features, tmp_path
):
    from distributed import Client

    on_dask = _features(
        raw_in_row_groups, tmp_path / "dask",
        {"TTR_BEAM__RUNNER": DASK_RUNNER,
         "TTR_BEAM__OPTIONS__DASK_CLIENT_ADDRESS": dask_cluster},
        small_features,
    )  # fmt: skip
    # The DirectRunner in one process (in_memory: the fastest on tiny data; its outputs do not
    # depend on the running mode, tests/pipelines/features/test_job.py).
    direct = _features(
        raw_in_row_groups, tmp_path / "direct",
        {"TTR_BEAM__DIRECT_RUNNING_MODE": "in_memory"}, small_features,
    )  # fmt: skip
    assert on_dask == direct
    # ... and the single-process reference on the snapshot as written (one row group).
    reference = tree_digest(Path(small_features.features_dir))
    assert {k: v for k, v in on_dask.items() if k != "manifest.json"} == {
        k: v for k, v in reference.items() if k != "manifest.json"
    }
    assert sum(name.endswith(".tfrecord") for name in on_dask) == 4 * 8  # 4 splits x 8 shards
    # Both worker processes did part of the job (one Dask partition per row group: 8 here).
    with Client(dask_cluster, timeout=30) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == WORKERS and all(count > 0 for count in executed.values()), executed
