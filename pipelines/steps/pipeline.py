"""Every step in one process (`run`), the artifact root's run lock, run ids, the re-run reset
and the synthetic landing for runs without a source."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from pipelines.artifacts import ArtifactRoot
from pipelines.config import PipelineConfig
from pipelines.errors import PipelineError
from pipelines.faults import kill_point
from pipelines.layout import ModelLayout, RunLayout, RunSummary
from pipelines.locks import LockHeld, exclusive_lock
from pipelines.resources import measure
from pipelines.steps.evaluate import evaluate
from pipelines.steps.features import build_features
from pipelines.steps.gate import gate
from pipelines.steps.index import build_index
from pipelines.steps.promote import promote
from pipelines.steps.train import train
from pipelines.steps.validate import validate_raw

log = logging.getLogger(__name__)


def run_pipeline(
    cfg: PipelineConfig, run_id: str, *, engine: str = "beam", beam_args=None, resume: bool = True
) -> RunSummary:
    """Every step in one process: validate, features, train, index, evaluate, gate, promote.

    Without `data.source` the embedded synthetic world is generated (once) under
    `<artifact_root>/landing/<preset>`. Holds the artifact root's run lock throughout. A run id
    that ran before starts over in a clean run directory (`reset_run_dir`); `resume` keeps its
    training checkpoints (used only when they were made from the same features and config).

    With a remote artifact root (`s3://`, `gs://`, `memory://`) the run works in a local
    staging copy of `<root>/runs/<run_id>/` (`pipelines.artifacts`), pushed after every step.

    Returns:
        The `RunSummary` (also written to the run's summary.json), each step's result in `steps`;
        on a remote root its paths are URLs (the local copy: `ArtifactRoot.run_layout`).

    Raises:
        DataValidationError: raw or feature checks failed (production untouched).
        PromotionConflict: production changed after this run was gated (production untouched).
    """
    root = ArtifactRoot(cfg.data.artifact_root)
    with run_lock(cfg.data.artifact_root, run_id):
        cfg = with_source(cfg, root)
        with root.synced_run(run_id) as layout:
            reset_run_dir(layout, keep_checkpoints=resume)
            return _run_steps(cfg, root, layout, run_id, engine, beam_args, resume)


def _run_steps(cfg, root, layout, run_id, engine, beam_args, resume) -> RunSummary:
    """The steps of `run_pipeline` in `layout`, each one pushed to a remote root when done."""
    from pipelines.registry import Registry

    registry = Registry(cfg.data.artifact_root)
    champion_id = registry.production()
    champion_dir = registry.production_dir() if champion_id else None
    warm = champion_dir if (cfg.registry.warm_start and champion_dir) else None
    done: dict[str, dict] = {}
    usage: dict[str, dict] = {}
    steps = {
        "validate_raw": lambda: validate_raw(cfg, layout),
        "features": lambda: build_features(cfg, layout, engine=engine, beam_args=beam_args),
        "train": lambda: train(cfg, layout, warm, resume=resume),
        "index": lambda: build_index(cfg, layout),
        "evaluate": lambda: evaluate(cfg, layout, champion_dir),
        "gate": lambda: gate(cfg, layout),
        "promote": lambda: promote(cfg, layout, done["gate"], run_id, champion_id),
    }
    for name, step in steps.items():
        kill_point(f"{name}:before")
        with measure() as used:
            done[name] = step()
        usage[name] = used.as_dict()
        log.info("step %s: %s", name, used.describe())
        root.push_run(layout)  # a remote root: another host could take the run from here
        kill_point(f"{name}:after")
    summary = RunSummary.of(
        layout, champion=champion_id, decision=done["gate"]["decision"],
        promoted=done["promote"]["promoted"], production_bundle=registry.production(),
        steps=done, location=root.location(layout.run_dir) if root.remote else None,
        usage=usage,
    )  # fmt: skip
    summary.write(layout)
    return summary


def reset_run_dir(layout: RunLayout, keep_checkpoints: bool = True) -> None:
    """Start a run directory over: empty it, except the model's training checkpoints when
    `keep_checkpoints` (training checks they match the new features and config before using
    them). `run` and the DAG's first task both reset here."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = ModelLayout(layout.model).checkpoints
    for entry in layout.run_dir.iterdir():
        if keep_checkpoints and entry == layout.model and entry.is_dir():
            for inner in entry.iterdir():
                if inner != checkpoints:
                    shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def new_run_id(prefix: str = "run") -> str:
    """A run id no other run gets: UTC time to the microsecond plus a random suffix
    (`run-20261125T173012123456-3f9a`); two runs started in the same second never share a
    directory."""
    import datetime as dt
    import secrets

    return f"{prefix}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(2)}"


@contextlib.contextmanager
def run_lock(artifact_root: str | Path, run_id: str):
    """Hold the artifact root's exclusive run lock for a whole run (`run_pipeline`).

    Two runs on one artifact root would race for the registry and the landing; the second
    is refused at once with the first's run id and pid, instead of waiting an unknown time.
    On a remote root the lock is on this host's staging copy: it keeps two runs of one host
    apart, not two hosts (the registry's compare-and-swap does that for production).

    Raises:
        PipelineError: another run holds the lock.
    """
    import os

    root = ArtifactRoot(artifact_root).local
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".run.lock"
    with contextlib.ExitStack() as held:
        try:  # only the lock's own refusal is "in use", not a LockHeld raised by the run
            held.enter_context(
                exclusive_lock(path, f"run {run_id} (pid {os.getpid()})", wait=False)
            )
        except LockHeld as exc:
            raise PipelineError(
                f"{root} is in use by {exc.holder or 'another run'}: one run at a time per "
                f"artifact root (lock {path}); wait for it to finish or use another --artifact-root"
            ) from None
        yield


def with_source(cfg: PipelineConfig, root: ArtifactRoot | None = None) -> PipelineConfig:
    """The config with `data.source` set: the synthetic preset's landing (generated once).

    On a remote artifact root the landing is pulled from `<root>/landing/<preset>` into the
    staging copy, or generated there and pushed (`items.parquet`, the mark of a complete
    landing, last) for the other hosts.
    """
    if cfg.data.source is not None:
        return cfg
    from pipelines.synthetic import generate

    root = root or ArtifactRoot(cfg.data.artifact_root)
    landing = root.landing(cfg.synthetic.preset)
    root.pull(root.relative(landing))
    if not (landing / "items.parquet").exists():
        syn = cfg.synthetic
        generate(
            landing, preset=syn.preset, seed=syn.seed, days=syn.days, start_date=syn.start_date
        )
        root.push(root.relative(landing), last=("items.parquet",))
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": str(landing)})})
