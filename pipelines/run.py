"""The retraining run as library steps: the `run` subcommand and the Airflow DAG call these.

Each step takes the config and the run directory and returns a small JSON-able dict (paths,
counts, decisions: what an orchestrator may pass between tasks), never data. Layout:

    <artifact_root>/runs/<run_id>/
        raw_report/      raw-data checks (HTML, JSON)
        snapshot/        the source as read once and validated (checksummed; every later step
                         and retry reads this, never the source)
        raw/ features/   the feature job's input (snapshot as of `features.as_of`) and output
                         (+ features_report/)
        model/           training output (the selected weights: what evaluation measures);
                         index/, serving_state.parquet, popular_items.txt
        model_final/     with train.final_fit: the selected weights trained on with the held-out
                         interactions too (what ships); same layout, its own index and state
        evaluation/      metrics.json, report.md, recall_at_k.png, gate.json, gate.md
        bundle/          the staged bundle (what promotion publishes): the shipped model, its
                         evaluation/, and with a final fit evaluated/ (model/ without
                         checkpoints and logs: what later runs re-evaluate as the champion)
    <artifact_root>/registry/   bundles and the production pointer (pipelines.registry)

A re-run with the same run id starts over in its own run directory (only `model/checkpoints`
survive, and training uses them only when they were made from the same features and config).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.errors import PipelineError
from pipelines.faults import kill_point

log = logging.getLogger(__name__)

_BUNDLE_IGNORE = ("checkpoints", "logs")
MODEL = "model"
FINAL_MODEL = "model_final"
EVALUATED = "evaluated"  # in a bundle: the selected weights its evaluation measured


def shipped_model_dir(run_dir: str | Path) -> Path:
    """The model directory a run ships: `model_final/` when it had a final fit, else `model/`."""
    final = Path(run_dir) / FINAL_MODEL
    return final if (final / "train_manifest.json").is_file() else Path(run_dir) / MODEL


def evaluated_weights_dir(served_dir: str | Path) -> Path:
    """The weights of a served directory that may be re-evaluated or warm-started from.

    A bundle shipped after a final fit keeps its selected weights in `evaluated/`: they trained
    only before its own cuts, while the served weights also trained on its eval period (which
    a later run's eval period overlaps). Other directories are their own evaluated weights.
    """
    evaluated = Path(served_dir) / EVALUATED
    return evaluated if (evaluated / "train_manifest.json").is_file() else Path(served_dir)


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

    Raises:
        PipelineError: another run holds the lock.
    """
    import fcntl
    import os

    root = Path(artifact_root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".run.lock"
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another run"
            raise PipelineError(
                f"{root} is in use by {holder}: one run at a time per artifact root "
                f"(lock {path}); wait for it to finish or use another --artifact-root"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"run {run_id} (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def run_dir_for(cfg: PipelineConfig, run_id: str) -> Path:
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise PipelineError(f"run id {run_id!r} must be a plain name (no '/', not hidden)")
    return Path(cfg.data.artifact_root) / "runs" / run_id


def validate_raw(cfg: PipelineConfig, run_dir: str | Path, interval=None, now=None) -> dict:
    """Read the source once, check it, and keep what passed as the run's snapshot.

    Every later step (and its retries) reads `<run_dir>/snapshot`, never the source again.

    Raises:
        DataValidationError: a rule failed (the report is attached and written to disk).
    """
    from pipelines.features import take_snapshot

    report = take_snapshot(cfg.data.source, run_dir, cfg, interval=interval, now=now)
    return {
        "success": report.success,
        "report_dir": str(Path(run_dir) / "raw_report"),
        "failed": [f.rule for f in report.failures],
        "html": report.html_path,
        "snapshot_dir": str(Path(run_dir) / "snapshot"),
    }


def build_features(
    cfg: PipelineConfig,
    run_dir: str | Path,
    engine: str = "beam",
    beam_args=None,
    check: bool = True,
) -> dict:
    """Beam feature job on the run's validated snapshot (+ feature checks unless `check=False`)."""
    from pipelines.features import run_features

    run = run_features(
        cfg.data.source, run_dir, cfg, engine=engine, beam_args=beam_args, check=check
    )
    return {"features_dir": str(run.features_dir), "counts": run.manifest["counts"]}


def train(
    cfg: PipelineConfig,
    run_dir: str | Path,
    warm_start_from: str | Path | None,
    *,
    resume: bool = True,
) -> dict:
    """Train (resuming from this run's checkpoints) and export into `<run_dir>/model`; with
    `train.final_fit`, then the final fit into `<run_dir>/model_final`.

    Args:
        warm_start_from: a served directory (the production bundle); its evaluated weights
            are used (`evaluated_weights_dir`), never ones trained on this run's eval period.
        resume: continue from `<run_dir>/model/checkpoints` when they were made from these
            features and this config (training checks); False always starts fresh.
    """
    from tfrs_models.train import train_model

    run_dir = Path(run_dir)
    if warm_start_from:
        warm_start_from = evaluated_weights_dir(warm_start_from)
    refused = warm_start_from and trained_past_eval_start(warm_start_from, run_dir / "features")
    if refused:
        log.warning(
            "not warm-starting from %s: %s; training from scratch", warm_start_from, refused
        )
        warm_start_from = None
    final_dir = run_dir / FINAL_MODEL
    shutil.rmtree(final_dir, ignore_errors=True)  # an earlier attempt's would ship stale weights
    result = train_model(
        run_dir / "features", run_dir / MODEL, cfg.train, warm_start_from=warm_start_from,
        progress=False, final_dir=final_dir, resume=resume,
    )  # fmt: skip
    m, k = result.manifest, cfg.train.eval_k
    return {
        "model_dir": result.model_dir,
        "final_model_dir": result.final_dir,
        "best_epoch": m["best_epoch"],
        "epochs_run": m["epochs_run"],
        f"validation_recall@{k}": m[f"validation_recall@{k}"],
        "warm_start": str(warm_start_from) if warm_start_from else None,
        **({"warm_start_refused": refused} if refused else {}),
    }


def trained_past_eval_start(model_dir: str | Path, features_dir: str | Path) -> str | None:
    """Why a trained model must not warm-start or be compared on these features, else None.

    A model trained on interactions at or after the features' eval start has seen the eval
    period (a backfill or a replay behind production does this, and so does a final fit on
    the previous run's most recent data): warm-starting from it leaks the answers into
    training, and scoring it there flatters it. How far a model trained is its manifest's
    `trained_until` (older manifests: its features' eval_start).
    """
    import pandas as pd

    trained = json.loads((Path(model_dir) / "train_manifest.json").read_text())
    features = json.loads((Path(features_dir) / "manifest.json").read_text())
    until = trained.get("trained_until") or trained["features_window"]["eval_start"]
    eval_start = features["window"]["eval_start"]
    if pd.Timestamp(until) <= pd.Timestamp(eval_start):
        return None
    return f"trained on interactions up to {until}, after this eval period starts ({eval_start})"


def build_index(cfg: PipelineConfig, run_dir: str | Path) -> dict:
    """Index the exported item embeddings, tune on eval queries, write the serving state.

    Done for `<run_dir>/model` (what evaluation measures) and, after a final fit, for
    `<run_dir>/model_final` (what ships), each with its own query tower's vectors.

    Returns:
        The model's index summary (`index_dir`, `kind`, the tuned section, `state`) plus
        `final`: the same for the final model, or None.
    """
    from pipelines.evaluation import EvalSet

    run_dir = Path(run_dir)
    sample = cfg.eval.model_copy(update={"max_queries": cfg.index.tune_queries})
    evalset = EvalSet(run_dir / "features", sample, seed=1)
    out = _index_model(cfg, run_dir, run_dir / MODEL, evalset)
    final = run_dir / FINAL_MODEL
    shipped = shipped_model_dir(run_dir) == final
    return {**out, "final": _index_model(cfg, run_dir, final, evalset) if shipped else None}


def _index_model(cfg: PipelineConfig, run_dir: Path, model_dir: Path, evalset) -> dict:
    import numpy as np

    from pipelines.serving import build_serving_state
    from scann_index.index import build_index as build
    from scann_index.index import tune_index
    from tfrs_models.export import load_query_tower

    embeddings = np.load(model_dir / "item_embeddings.npy")
    item_ids = np.array((model_dir / "item_ids.txt").read_text(encoding="utf-8").splitlines())
    index = build(embeddings, item_ids, cfg.index)
    tower = load_query_tower(model_dir)
    names = {spec.name for spec in tower.structured_input_signature[1].values()}
    queries = tower(**{n: v for n, v in evalset.queries.items() if n in names})["embedding"]
    tuned = tune_index(index, embeddings, queries.numpy(), cfg.index)
    index.save(model_dir / "index")
    state = build_serving_state(run_dir, model_dir)
    return {"index_dir": str(model_dir / "index"), "kind": index.kind, **tuned, "state": state}


def evaluate(cfg: PipelineConfig, run_dir: str | Path, champion_dir: str | Path | None) -> dict:
    """Challenger vs champion vs popularity (vs oracle) through the serving path.

    The challenger is `<run_dir>/model`, the selected weights (a final fit trains on the eval
    labels: it cannot be measured on them). The champion is re-evaluated from its bundle's
    `evaluated/` weights when it has them, for the same reason.
    """
    from pipelines.evaluation import evaluate as run_evaluation

    run_dir = Path(run_dir)
    champion_weights = None
    if champion_dir:
        champion_dir = evaluated_weights_dir(champion_dir)
        champion_weights = (
            f"{EVALUATED}/: the production bundle's selected weights (before its final fit)"
            if champion_dir.name == EVALUATED
            else "the production bundle's served weights"
        )
    excluded = champion_dir and trained_past_eval_start(champion_dir, run_dir / "features")
    if excluded:
        log.warning("champion %s not evaluated: %s", champion_dir, excluded)
    final_fit = final_fit_summary(run_dir)
    metrics = run_evaluation(
        run_dir / "features", run_dir / MODEL, None if excluded else champion_dir,
        run_dir / "evaluation", cfg.eval, truth_dir=cfg.data.source, champion_excluded=excluded,
        measured_weights="selected weights (before the final fit)" if final_fit
        else "selected weights (the shipped model)",
        final_fit=final_fit, champion_weights=None if excluded else champion_weights,
    )  # fmt: skip
    primary = cfg.eval.primary_metric
    return {
        "metrics": str(run_dir / "evaluation" / "metrics.json"),
        "report": str(run_dir / "evaluation" / "report.md"),
        **{
            name: metrics[name][primary]
            for name in ("challenger", "champion", "popularity", "oracle")
            if name in metrics
        },
    }


def final_fit_summary(run_dir: str | Path) -> dict | None:
    """What the shipped model added to the measured one (for metrics.json), or None without a
    final fit: its directory, the final fit's epochs / examples / trained_until, and its own
    index's recall vs exact search on the tuning queries."""
    final = Path(run_dir) / FINAL_MODEL
    if shipped_model_dir(run_dir) != final:
        return None
    trained = json.loads((final / "train_manifest.json").read_text())
    summary = {"model_dir": str(final), **{
        key: trained["final_fit"][key]
        for key in ("from_epoch", "epochs", "examples", "trained_until", "splits")
    }}  # fmt: skip
    index = final / "index" / "index_manifest.json"
    if index.is_file():
        manifest = json.loads(index.read_text())
        tuned = manifest.get("tuned") or {}
        summary["index"] = {
            "kind": manifest.get("kind"),
            f"recall@{manifest.get('k')}": tuned.get("recall"),
            "reached_target": tuned.get("reached_target"),
        }
    return summary


def smoke_test(served_dir: str | Path, k: int = 10) -> str | None:
    """Serve a few known users and an unknown one; None if fine, else what went wrong."""
    from pipelines.recommend import Recommender

    try:
        rec = Recommender(served_dir)
        users = list(rec.state.index[:3]) + ["__smoke_test_unknown_user__"]
        results = rec.recommend(users, k=k)
        catalog = set(rec.model.item_ids)
        for r in results:
            items = [i["item_id"] for i in r["items"]]
            who = f"user {r['user_id']} ({r['source']})"
            outside = [i for i in items if i not in catalog]
            if outside:
                return f"{who}: {len(outside)} items not in the catalog, e.g. {outside[:3]}"
            if len(items) != min(k, len(catalog)):
                return f"{who}: {len(items)} items, expected {min(k, len(catalog))}"
            if len(set(items)) != len(items):
                return f"{who}: duplicate items"
    except Exception as exc:  # noqa: BLE001 - the gate reports any serving failure
        return f"{type(exc).__name__}: {exc}"
    return None


def gate(cfg: PipelineConfig, run_dir: str | Path) -> dict:
    """Apply the gate rules to this run's evaluation; writes gate.json / gate.md."""
    from pipelines.gate import decide

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    # The smoke test serves the directory that will ship (the final model after a final fit).
    decision = decide(
        metrics, cfg.gate, cfg.eval.primary_metric,
        smoke_test=smoke_test(shipped_model_dir(run_dir)),
    )  # fmt: skip
    decision.write(run_dir / "evaluation")
    log.info("gate: %s", decision.decision)
    return decision.to_dict()


def stage_bundle(run_dir: str | Path) -> Path:
    """Copy what serving needs (and the evaluation) into `<run_dir>/bundle`.

    The shipped model (`model_final/` after a final fit, else `model/`) is the bundle's top
    level; after a final fit `model/` also goes to `evaluated/`, so later runs re-evaluate the
    weights this run's evaluation measured.
    """
    run_dir = Path(run_dir)
    staging = run_dir / "bundle"
    if staging.exists():
        shutil.rmtree(staging)
    ignore = shutil.ignore_patterns(*_BUNDLE_IGNORE)
    shipped = shipped_model_dir(run_dir)
    shutil.copytree(shipped, staging, ignore=ignore)
    shutil.copytree(run_dir / "evaluation", staging / "evaluation")
    if shipped.name == FINAL_MODEL:
        shutil.copytree(run_dir / MODEL, staging / EVALUATED, ignore=ignore)
    return staging


def promote(
    cfg: PipelineConfig,
    run_dir: str | Path,
    decision: dict,
    run_id: str,
    champion_id: str | None,
) -> dict:
    """Publish the staged bundle and swap the production pointer, if the gate said so."""
    from pipelines.registry import Registry, code_version

    run_dir = Path(run_dir)
    if not decision["promote"]:
        return {"promoted": False, "decision": decision["decision"], "bundle_id": None}
    staging = stage_bundle(run_dir)
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    primary = cfg.eval.primary_metric
    features = json.loads((run_dir / "features" / "manifest.json").read_text())
    manifest = {
        "created_at": _now(),
        "run_id": run_id,
        "source": cfg.data.source,
        "snapshot_sha256": _sha256(run_dir / "snapshot" / "snapshot.json"),
        "data_window": features["window_epoch_s"],
        "data_window_iso": features["window"],
        "config": cfg.model_dump(mode="json"),
        "metrics": {
            # Bootstrap replicates stay in the bundle's evaluation/metrics.json.
            name: {k: v for k, v in section.items() if k not in ("slices", "bootstrap")}
            for name, section in metrics.items()
        },  # fmt: skip
        "primary_metric": primary,
        "primary_value": metrics["challenger"][primary],
        # "final fit": the served weights trained on after the measured ones (in evaluated/).
        "weights": "final fit" if (staging / EVALUATED).is_dir() else "selected",
        "gate": decision,
        "code_version": code_version(),
        "parent_bundle": champion_id,
    }
    registry = Registry(cfg.data.artifact_root)
    bundle_id = registry.publish(staging, manifest)
    # Compare-and-swap: the bundle replaces production only if production is still the
    # champion this run was evaluated and gated against (else PromotionConflict).
    registry.promote(
        bundle_id, reason=f"run {run_id}: {decision['decision']}", expected=champion_id
    )
    pruned = registry.prune(cfg.registry.keep_bundles)
    return {
        "promoted": True,
        "decision": decision["decision"],
        "bundle_id": bundle_id,
        "pruned": pruned,
    }


def _sha256(path: Path) -> str | None:
    """sha256 of the validated snapshot's metadata (it lists every file's sha256), if any."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def with_source(cfg: PipelineConfig) -> PipelineConfig:
    """The config with `data.source` set: the synthetic preset's landing (generated once)."""
    if cfg.data.source is not None:
        return cfg
    from pipelines.synthetic import generate

    landing = Path(cfg.data.artifact_root) / "landing" / cfg.synthetic.preset
    if not (landing / "items.parquet").exists():
        syn = cfg.synthetic
        generate(
            landing, preset=syn.preset, seed=syn.seed, days=syn.days, start_date=syn.start_date
        )
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": str(landing)})})


def run_pipeline(
    cfg: PipelineConfig, run_id: str, *, engine: str = "beam", beam_args=None, resume: bool = True
) -> dict:
    """Every step in one process: validate, features, train, index, evaluate, gate, promote.

    Without `data.source` the embedded synthetic world is generated (once) under
    `<artifact_root>/landing/<preset>`. Holds the artifact root's run lock throughout. A run id
    that ran before starts over in a clean run directory; `resume` keeps its training
    checkpoints (used only when they were made from the same features and config).

    Raises:
        DataValidationError: raw or feature checks failed (production untouched).
        PromotionConflict: production changed after this run was gated (production untouched).
    """
    from pipelines.registry import Registry

    with run_lock(cfg.data.artifact_root, run_id):
        cfg = with_source(cfg)
        run_dir = run_dir_for(cfg, run_id)
        _clean_run_dir(run_dir, keep_checkpoints=resume)
        registry = Registry(cfg.data.artifact_root)
        champion_id = registry.production()
        champion_dir = registry.production_dir() if champion_id else None
        summary = {"run_id": run_id, "run_dir": str(run_dir), "champion": champion_id}
        warm = champion_dir if (cfg.registry.warm_start and champion_dir) else None
        steps = {
            "validate_raw": lambda: validate_raw(cfg, run_dir),
            "features": lambda: build_features(cfg, run_dir, engine=engine, beam_args=beam_args),
            "train": lambda: train(cfg, run_dir, warm, resume=resume),
            "index": lambda: build_index(cfg, run_dir),
            "evaluate": lambda: evaluate(cfg, run_dir, champion_dir),
            "gate": lambda: gate(cfg, run_dir),
            "promote": lambda: promote(cfg, run_dir, summary["gate"], run_id, champion_id),
        }
        for name, step in steps.items():
            kill_point(f"{name}:before")
            summary[name] = step()
            kill_point(f"{name}:after")
        summary["production"] = registry.production()
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary


def _clean_run_dir(run_dir: Path, keep_checkpoints: bool) -> None:
    """Empty a re-used run directory, except `model/checkpoints` when resuming (training
    checks they match the new features before using them)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for entry in run_dir.iterdir():
        if keep_checkpoints and entry.name == MODEL and entry.is_dir():
            for inner in entry.iterdir():
                if inner.name != "checkpoints":
                    shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
