"""Model commands: `train`, `index` and `evaluate` (with the gate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.cli.common import command, config_flags, load


def add_commands(sub: argparse._SubParsersAction) -> None:
    tr = command(
        sub, "train", _train, help="train the TFRS two-tower model on a feature run and export it"
    )
    tr.add_argument("--features", type=Path, required=True, help="feature job output directory")
    tr.add_argument("--model-dir", type=Path, required=True, help="checkpoints, logs and export")
    tr.add_argument("--warm-start", type=Path, help="previous model directory to initialise from")
    tr.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --model-dir")
    config_flags(tr, "train.epochs", "train.batch_size", "train.learning_rate",
                 "train.embedding_dim", "train.temperature", "train.mixed_negatives")  # fmt: skip

    idx = command(
        sub,
        "index",
        _index,
        help="build and tune the ScaNN index over a trained model's item embeddings",
    )
    idx.add_argument("--run-dir", type=Path, required=True, help="run with features/ and model/")
    config_flags(idx, "index.target_recall", "index.k")

    ev = command(
        sub,
        "evaluate",
        _evaluate,
        help="evaluate challenger, champion and baselines on the eval period",
    )
    ev.add_argument(
        "--run-dir", type=Path, required=True, help="run with features/ and model/index"
    )
    ev.add_argument(
        "--champion", type=Path, help="served directory to compare (default: production)"
    )
    ev.add_argument(
        "--source", type=Path, help="source with _truth/ for the oracle (synthetic data)"
    )


def _train(args) -> int:
    """Train the query and item towers with an in-batch softmax (temperature, logQ correction,
    accidental-hit removal; optional mixed and hard negatives), checkpoint every epoch (a rerun
    resumes), early-stop on exact Recall@K of eval queries, log to TensorBoard
    (<model-dir>/logs) and export the query-tower SavedModel and the catalog's item embeddings.
    Prints Recall@K against the popularity baseline.
    """
    cfg = load(args)
    from pipelines.layout import features_manifest

    if not features_manifest(args.features).is_file():
        print(
            f"error: {args.features} has no manifest.json; run `two-tower features` first",
            file=sys.stderr,
        )
        return 2
    from pipelines.steps.train import fit

    fitted = fit(
        cfg,
        args.features,
        args.model_dir,
        args.warm_start,
        resume=not args.no_resume,
        progress=None,
    )
    result = fitted.result
    m, k = result.manifest, cfg.train.eval_k
    print(
        f"model written to {result.model_dir} (best epoch {m['best_epoch']} of {m['epochs_run']}, "
        f"{m['train_examples_per_second']:,.0f} examples/s)"
    )
    if fitted.warm_start_refused:
        print(
            f"  not warm-started from {args.warm_start}: {fitted.warm_start_refused}; "
            "trained from scratch"
        )
    if m[f"validation_recall@{k}"] is None:
        print("  no validation split in these features: every epoch ran, the last one kept")
    else:
        print(
            f"  Recall@{k} on {m['validation_queries']:,} validation queries (selection only; "
            f"the evaluate step scores the eval period): model "
            f"{m[f'validation_recall@{k}']:.4f}, popularity "
            f"{m[f'validation_popularity_recall@{k}']:.4f}"
        )
    print(
        f"  query tower: {m['export']['query_tower']}; item embeddings: {m['export']['item_embeddings']}"
    )
    return 0


def _index(args) -> int:
    """Build exact search (small catalogs) or tree + asymmetric hashing + exact reordering (large
    ones) over <run-dir>/model/item_embeddings.npy, tune leaves to search / reorder depth on
    eval queries to the cheapest setting reaching the target recall vs exact search, and write
    <run-dir>/model/index plus the serving state.
    """
    from pipelines.layout import RunLayout
    from pipelines.steps.index import build_index

    cfg = load(args)
    out = build_index(cfg, RunLayout(args.run_dir))
    print(
        f"index written to {out['index_dir']} ({out['kind']}): recall@{cfg.index.k} vs exact "
        f"{out['recall']:.4f} (target {out['target_recall']}), leaves {out['leaves_to_search']}, "
        f"reorder {out['pre_reorder']}, {out['qps_batched']} queries/s, p99 {out['latency_p99_ms']} ms"
    )
    return 0


def _evaluate(args) -> int:
    """Answer every eval query through query tower -> index (seen items excluded) for the run's
    model and the production bundle, plus popularity and, on synthetic data, the oracle; write
    metrics.json, report.md and recall_at_k.png to <run-dir>/evaluation, then apply the gate
    (gate.md).
    """
    from pipelines.layout import RunLayout
    from pipelines.registry import Registry
    from pipelines.steps.evaluate import evaluate
    from pipelines.steps.gate import gate

    cfg = load(args, data={"source": str(args.source) if args.source else None})
    layout = RunLayout(args.run_dir)
    champion = args.champion or Registry(cfg.data.artifact_root).production_dir()
    evaluate(cfg, layout, champion)
    decision = gate(cfg, layout)
    print(layout.report.read_text())
    print(layout.gate_md.read_text())
    return 0 if decision["promote"] else 1
