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

import pandas as pd

from pipelines.config import FeatureEngine, PipelineConfig
from pipelines.contract import RawSnapshot
from pipelines.errors import ConfigError
from pipelines.features.window import FeatureWindow, resolve_window
from pipelines.layout import RunLayout
from pipelines.schema import epoch_seconds, utc_timestamp

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
    snapshot: RawSnapshot,
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

    Args:
        snapshot: the run's validated snapshot.
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
    from pipelines.features.snapshot import write_snapshot
    from pipelines.features.split import plan_split

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if cfg.features.as_of is not None:
        snapshot = _as_of(snapshot, cfg.features.as_of)
    raw_dir = write_snapshot(snapshot, layout.raw)
    timestamps = epoch_seconds(snapshot.interactions["timestamp"]).to_numpy()
    window = resolve_window(
        timestamps, cfg.features,
        window_start=window_start, eval_start=eval_start, window_end=window_end,
    )  # fmt: skip
    # Decided here, on the whole snapshot, and handed to the job as data (per-user cuts).
    plan = plan_split(
        snapshot.interactions["user_id"].astype(str).to_numpy(), timestamps, window, cfg.features
    )
    window = plan.window
    # The job reads raw/ itself: the in-memory snapshot (GiBs at tens of millions of events)
    # must not stay alive beside the runner and its workers.
    del snapshot, timestamps
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


def _as_of(snapshot: RawSnapshot, when) -> RawSnapshot:
    """The snapshot as it stood at `features.as_of` (point-in-time runs, e.g. backfills)."""
    when = utc_timestamp(when)
    past = snapshot.as_of(when)
    if past.interactions.empty:
        first = snapshot.interactions["timestamp"].min()
        raise ConfigError(
            f"features.as_of={when.isoformat()}: {snapshot.root} has no interactions before it "
            f"(its first is at {first.isoformat()})"
        )
    log.info(
        "as of %s: %d of %d interactions, %s items",
        when.isoformat(), len(past.interactions), len(snapshot.interactions),
        "no" if past.items is None else len(past.items),
    )  # fmt: skip
    return past
