"""Two-tower quality and speed on a synthetic world, with baselines, ablations and the oracle.

On one feature run (default: the `medium` preset) it trains, in this one process and on the
same data and batch size:

    ours            the default config (history, content, user features, logQ, temperature)
    no logQ / no history / no content / + mixed negatives     one switch changed each
    ID-only         the TFRS tutorial's model: id embeddings only, no logQ

and reports, on every eval query of the eval period (seen items excluded): Recall@10/100 for
each, popularity, EASE (closed-form item-item; the bar to clear), the oracle (the generator's
true model) and the deployable oracle (the same, blind to the popularity of items with no
training interactions: the ceiling for any model trained on the data); recall on cold items
(not in training); training examples/s; and the input pipeline's throughput vs the same steps
on in-memory tensors.

    python bench/bench_training.py --preset medium --epochs 3
    python bench/bench_training.py --variants --extra-variants '{"lr 0.001": {"learning_rate": 0.001}}'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from baselines import ID_ONLY_TRAIN, ease_scores  # noqa: E402
from workspace import synthetic_workspace  # noqa: E402

from pipelines.config import TrainConfig, load_config  # noqa: E402
from pipelines.metrics import recall_at_k  # noqa: E402
from tfrs_models.data import FeatureSet, train_dataset  # noqa: E402
from tfrs_models.quick_eval import QuickEval  # noqa: E402
from tfrs_models.train import build_model  # noqa: E402

VARIANTS = {
    "ours": {},
    "no logQ": {"logq_correction": False},
    "no history": {"use_history": False},
    "no content": {"use_content": False},
    "+ mixed negatives": {"mixed_negatives": 512},
    "ID-only (tutorial)": ID_ONLY_TRAIN,
}


class Scorer:
    """Recall@K of score blocks on every eval query, overall and on cold-item targets."""

    def __init__(self, evaluation: QuickEval, catalog):
        self.ev = evaluation
        cold = np.flatnonzero(catalog["train_count"].to_numpy() == 0)
        self.cold_targets = [np.intersect1d(t, cold) for t in evaluation.targets]

    def score(self, blocks, ks=(10, 100)) -> dict:
        return self.recalls(self.ev.ranked(blocks, max(ks)), ks)

    def random(self, ks=(10, 100)) -> dict:
        """Expected recall of a uniformly random ranking of each query's unseen items."""
        n_items = len(self.ev.item_ids)
        chance = {k: np.array([min(1.0, k / (n_items - len(s))) for s in self.ev.seen]) for k in ks}
        has, has_cold = ([len(t) > 0 for t in ts] for ts in (self.ev.targets, self.cold_targets))
        out = {f"recall@{k}": float(chance[k][has].mean()) for k in ks}
        out["cold recall@100"] = float(chance[100][has_cold].mean())
        return out

    def recalls(self, ranked: np.ndarray, ks=(10, 100)) -> dict:
        out = {f"recall@{k}": recall_at_k(ranked[:, :k], self.ev.targets) for k in ks}
        out["cold recall@100"] = recall_at_k(ranked[:, :100], self.cold_targets)
        return out


def oracle_rows(scorer: Scorer, truth, users, times) -> dict:
    """The oracle, and the best any deployable model could do, in one pass over the true logits.

    The deployable oracle keeps every true parameter except the popularity of items with no
    training interactions: nothing observable before the eval period predicts it (the
    generator draws it at random, independent of content). It scores those items with one
    constant instead: the best of a grid around the log of the catalog's mean popularity
    weight, chosen on the eval queries themselves, so the row is an upper bound.
    """
    ev = scorer.ev
    cold = ev.features.catalog["train_count"].to_numpy() == 0
    popularity = truth.popularity_logits(ev.item_ids)
    prior = float(np.log(np.mean(np.exp(popularity))))
    shifts = (-2.0, -1.5, -1.25, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5, 1.0)
    # Added to the true logits: the cold items' popularity swapped for a constant.
    swaps = {shift: np.where(cold, prior + shift - popularity, 0.0) for shift in shifts}
    tops = {shift: [] for shift in (None, "known", *shifts)}
    start = 0
    for block in truth.score_blocks(ev.item_ids, users, times, batch=4096):
        tops[None].append(ev.ranked([block], 100, start=start))
        tops["known"].append(ev.ranked([np.where(cold, -np.inf, block)], 100, start=start))
        for shift, swap in swaps.items():
            tops[shift].append(ev.ranked([block + swap], 100, start=start))
        start += len(block)
    rows = {shift: scorer.recalls(np.concatenate(t)) for shift, t in tops.items()}
    best = max(shifts, key=lambda shift: rows[shift]["recall@100"])
    print(
        "deployable oracle R@100 by constant (log mean popularity weight + shift): "
        + ", ".join(f"{shift:+.2f}: {rows[shift]['recall@100']:.4f}" for shift in shifts),
        flush=True,
    )
    return {
        "oracle": rows[None],
        "oracle, seen items": rows["known"],  # ranks only items with training interactions
        "oracle, deployable": rows[best],
    }


def input_pipeline_ratio(features: FeatureSet, cfg: TrainConfig, steps: int = 80) -> float:
    """Training throughput from TFRecords / from the same number of batches held in memory.

    Both run through `model.fit` (the iterator lives inside the compiled train function, as in
    real training); each is fitted once untimed to compile and fill the shuffle buffer.
    """
    model = build_model(features, cfg)
    records = train_dataset(features, cfg).repeat()
    cached = list(records.take(steps))
    in_memory = tf.data.Dataset.from_tensor_slices(
        {k: tf.stack([b[k] for b in cached]) for k in cached[0]}
    ).repeat()

    def timed(dataset) -> float:
        model.fit(dataset, steps_per_epoch=10, epochs=1, verbose=0)
        t = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        return time.perf_counter() - t

    rounds = [(timed(records), timed(in_memory)) for _ in range(3)]  # alternate: noisy machines
    return float(np.median([m for _, m in rounds]) / np.median([r for r, _ in rounds]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--extra-variants",
        type=json.loads,
        default={},
        help='more variants as JSON: {"name": {"<TrainConfig field>": value, ...}, ...}',
    )
    parser.add_argument("--work-dir", help="keep data and models here (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from pipelines.layout import RunLayout
    from pipelines.schema import epoch_seconds
    from pipelines.sources import read_source
    from pipelines.steps.features import run_features
    from pipelines.steps.train import fit
    from pipelines.synthetic import GroundTruth

    work, landing = synthetic_workspace(args.work_dir, "bench-training-", args.preset)
    run = RunLayout(work / "run")
    if not run.features_manifest.exists():
        cfg = load_config(env={}, overrides={"data": {"source": str(landing)}})
        run_features(cfg, run, engine="local")
    features = FeatureSet.load(run.features)
    ev = QuickEval(features, None)
    scorer = Scorer(ev, features.catalog)
    users = [u.decode() for u in ev.queries["user_id"].numpy()]
    times = ev.queries["timestamp"].numpy()

    rows = {}
    t = time.perf_counter()
    rows.update(oracle_rows(scorer, GroundTruth.load(landing), users, times))
    rows["popularity"] = scorer.score(ev.popularity_blocks())
    rows["random"] = scorer.random()
    inter = read_source(landing).interactions
    window = features.manifest["window_epoch_s"]
    seconds = epoch_seconds(inter["timestamp"])
    train = inter[(seconds >= window["window_start"]) & (seconds < window["eval_start"])]
    if len(ev.item_ids) <= 25_000:
        rows["EASE"] = scorer.score(ease_scores(train, ev.item_ids, users))
    print(f"baselines: {time.perf_counter() - t:.0f} s", flush=True)

    speeds = {}
    variants = {name: VARIANTS[name] for name in args.variants} | args.extra_variants
    for name, overrides in variants.items():
        train = TrainConfig(**{"epochs": args.epochs, "final_fit": False, **overrides})
        cfg = load_config(env={}).model_copy(update={"train": train})
        t = time.perf_counter()
        model_dir = work / "models" / name.replace(" ", "_")
        result = fit(cfg, features.directory, model_dir, resume=False).result
        rows[name] = scorer.score(ev.model_blocks(result.model))
        speeds[name] = result.manifest["train_examples_per_second"]
        rows[name]["epochs"] = f"{result.manifest['best_epoch']}/{result.manifest['epochs_run']}"
        print(f"{name}: {rows[name]} ({time.perf_counter() - t:.0f} s)", flush=True)
        (work / "results.json").write_text(json.dumps(rows, indent=1))

    oracle, deployable = rows["oracle"]["recall@100"], rows["oracle, deployable"]["recall@100"]
    print(
        f"\npreset {args.preset}: {features.manifest['counts']['train_examples']:,} train examples, "
        f"{len(users):,} eval queries, {len(ev.item_ids):,} items, epochs <= {args.epochs}"
    )
    print(
        f"{'model':<20} {'R@10':>7} {'R@100':>7} {'/ oracle':>9} {'/ deployable':>13} "
        f"{'cold R@100':>11} {'best/run':>9}"
    )
    for name, r in rows.items():
        print(
            f"{name:<20} {r['recall@10']:>7.4f} {r['recall@100']:>7.4f} "
            f"{r['recall@100'] / oracle:>9.3f} {r['recall@100'] / deployable:>13.3f} "
            f"{r['cold recall@100']:>11.4f} {r.get('epochs', ''):>9}"
        )
    if "ours" in speeds and "ID-only (tutorial)" in speeds:
        ours, tutorial = speeds["ours"], speeds["ID-only (tutorial)"]
        print(
            f"\ntraining examples/s (batch {TrainConfig().batch_size}): ours {ours:,.0f}, "
            f"ID-only {tutorial:,.0f}, ratio {ours / tutorial:.2f}"
        )
    ratio = input_pipeline_ratio(features, TrainConfig())
    print(f"input pipeline: TFRecord steps / in-memory steps throughput = {ratio:.2f}")


if __name__ == "__main__":
    main()
