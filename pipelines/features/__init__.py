"""Point-in-time features with Apache Beam: snapshot -> examples, eval queries, catalog, vocabularies.

`features_from_snapshot` is the feature job on a run's validated snapshot: it keeps the snapshot
as of `features.as_of` as the run's `raw/`, picks the window and the split (eval design,
validation users: `split.py`) and runs the Beam job (or the single-process reference) into the
run's `features/`. Taking the snapshot and checking the output are the steps' part
(`pipelines.steps.validate`, `pipelines.steps.features`).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path

import pandas as pd

from pipelines.config import FeatureEngine, PipelineConfig
from pipelines.errors import ConfigError
from pipelines.features.window import FeatureWindow, resolve_window
from pipelines.layout import RunLayout
from pipelines.schema import utc_timestamp

log = logging.getLogger(__name__)
ENGINES = typing.get_args(FeatureEngine)  # the feature job's runners, as the config spells them


@dataclasses.dataclass
class FeatureRun:
    """What one feature run produced."""

    run_dir: str
    raw_dir: str
    features_dir: str
    window: FeatureWindow
    manifest: dict
    report: object  # the feature checks' ValidationReport, or None when not checked


def features_from_snapshot(
    snapshot_dir: str | Path,
    layout: RunLayout,
    cfg: PipelineConfig,
    *,
    window_start: pd.Timestamp | None = None,
    eval_start: pd.Timestamp | None = None,
    window_end: pd.Timestamp | None = None,
    beam_args: list[str] | None = None,
    engine: str = "beam",
) -> FeatureRun:
    """Write the snapshot (as of `features.as_of`) to `layout.raw`, build features into
    `layout.features`.

    The snapshot is never in this process's memory as a whole: `raw/` is derived from it one
    part file at a time, and the window and split are planned from two columns of `raw/`.

    Args:
        snapshot_dir: the run's verified, validated snapshot (`pipelines.steps.validate`).
        layout: the run's directories.
        cfg: the pipeline config (`features`, `beam` sections are used).
        window_start, eval_start, window_end: explicit window boundaries (else from config/data).
        beam_args: extra Beam flags (`--runner`, Dataflow/Flink/Spark options), passed untouched.
        engine: "beam" (the job) or "local" (the single-process reference, same outputs).

    Returns:
        A `FeatureRun` (its `report` is None: the features are not checked here).

    Raises:
        ConfigError: `features.as_of` is before every interaction of the snapshot.
    """
    import pyarrow.dataset as ds

    from pipelines.features.snapshot import derive_snapshot
    from pipelines.features.split import plan_split

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    as_of = None if cfg.features.as_of is None else utc_timestamp(cfg.features.as_of)
    raw = derive_snapshot(snapshot_dir, layout.raw, as_of)
    if as_of is not None:
        _check_as_of(raw, as_of)
    raw_dir = layout.raw
    columns = ds.dataset(raw_dir / "interactions", format="parquet").to_table(
        columns=["user_id", "timestamp"]
    )
    timestamps = columns.column("timestamp").to_numpy()
    window = resolve_window(
        timestamps, cfg.features,
        window_start=window_start, eval_start=eval_start, window_end=window_end,
    )  # fmt: skip
    # Decided here, on the whole snapshot, and handed to the job as data (per-user cuts).
    plan = plan_split(
        columns.column("user_id").to_numpy(zero_copy_only=False), timestamps, window, cfg.features
    )
    del columns, timestamps  # the job reads raw/ itself
    window = plan.window
    log.info("feature window %s", window.describe())
    log.info("eval design %s: %s", plan.design, plan.summary["reason"])
    out = str(layout.features)
    if engine == "beam":
        from pipelines.features.beam_job import run_beam

        manifest = run_beam(str(raw_dir), out, window, cfg.features, beam_args, cfg.beam, plan)
    else:
        from pipelines.features.local import run_local

        manifest = run_local(str(raw_dir), out, window, cfg.features, plan)
    return FeatureRun(str(layout.run_dir), str(raw_dir), out, window, manifest, None)


def _check_as_of(raw: dict, when: pd.Timestamp) -> None:
    """Refuse a point in time before every interaction (the run would have nothing to learn)."""
    if raw["interactions"] == 0:
        first = raw["first_timestamp"]
        said = "none" if first is None else pd.Timestamp(first, unit="s", tz="UTC").isoformat()
        raise ConfigError(
            f"features.as_of={when.isoformat()}: {raw['source']} has no interactions before it "
            f"(its first is at {said})"
        )
    log.info("as of %s: %d interactions, %s items", when.isoformat(), raw["interactions"],
             raw["items"] or "no")  # fmt: skip
