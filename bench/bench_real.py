"""Real-data quality: the product path on public MovieLens dumps, side by side with baselines.

For every MovieLens dump found under `--data` (one directory each, in any format our readers
know: ML-100K `u.data`, ML-1M `ratings.dat`, ML-latest `ratings.csv`), in one process:

Protocol (per-user temporal holdout; the future of each user is predicted from their past):
    1. Read the dump with the product's reader. Each user with at least `--min-events`
       interactions is a test user: their interactions at or after a per-user cut are the
       *future* (the last `--test-fraction` of them, at least one; a cut falls between two
       timestamps, so ties go wholly to the future). Users whose interactions all share one
       timestamp, or with fewer events, stay in the past only.
    2. The *past* is written as a source in the dump's own format (the same files minus the
       lines of future interactions) and goes through the product: `run_pipeline` (raw checks,
       features, training, index, evaluation, gate, promotion) into a fresh artifact root.
    3. Every test user is served through `Recommender` on what production serves after the
       run: its bundle when the gate promoted it, else the production bundle it failed to
       replace (with `--warm-days`), or the run's shipped model when production is empty
       (`served` in the JSON says which), k = 100, items the user saw in the past excluded.
       The future items not seen in the past are the targets.
    4. The baselines see the same past and answer the same users: popularity (past counts),
       EASE (lambda tuned on a per-user holdout carved from the past, then refit), ItemKNN
       (cosine, neighbourhood size tuned the same way), and the TFRS tutorial's ID-only
       two-tower model through the same product path.

With `--warm-days D`, every product config also runs as a scheduled retrain would: first on
the past without its last D days (a fresh root; it promotes), then on the whole past in the same
root, warm-starting from that production bundle (`train.warm_start`; refused, and the row is
a cold run, when the old model trained on the new eval labels: `warm_start_refused`). Its
row, "<name>, warm after D d", is scored like the cold one on the same test users.

Prints Recall@10/50/100, NDCG@10/100, coverage@100, the seconds each model took to fit, and
ours / EASE; `--out` writes every figure as JSON. Dumps are never shipped with the project
(license): fetch them yourself; absent ones are skipped and named.

    python bench/bench_real.py --data /path/to/movielens
    python bench/bench_real.py --data DIR --datasets ml-100k --variants '{"h 50": {"features": {"history_length": 50}}}'
    python bench/bench_real.py --data DIR --datasets ml-100k --warm-days 14 --no-id-only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from baselines import ID_ONLY_TRAIN, ease_scores, item_knn_scores  # noqa: E402

from pipelines.config import load_config  # noqa: E402
from pipelines.metrics import ranking_metrics, top_k  # noqa: E402
from pipelines.sources import detect_format, read_source  # noqa: E402

KNOWN = ("ml-100k", "ml-1m", "ml-latest-small-2016", "ml-latest-small-2018", "ml-25m")
KS = (10, 50, 100)
BASELINES_VERSION = 2  # part of the cache key: bump when a baseline or its tuning changes
EASE_LAMBDAS = (100.0, 300.0, 1000.0, 3000.0, 10000.0)
KNN_SIZES = (20, 50, 100, 200, 500, 1000)
ID_ONLY = {"train": ID_ONLY_TRAIN}
COLUMNS = ("recall@10", "recall@50", "recall@100", "ndcg@10", "ndcg@100", "coverage@100")


def find_datasets(root: Path, only: list[str] | None) -> tuple[list[Path], list[str]]:
    """Dataset directories under `root` our readers recognise, and the known names absent."""
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if only and path.name not in only:
            continue
        try:
            detect_format(path)
        except Exception:  # noqa: BLE001 - not a dataset directory
            continue
        found.append(path)
    names = {p.name for p in found}
    wanted = only or KNOWN
    return found, [n for n in wanted if n not in names]


def split_by_user_time(
    interactions: pd.DataFrame, test_fraction: float, min_events: int
) -> np.ndarray:
    """Boolean `[n]`: which interactions are their user's future (see the protocol).

    Args:
        interactions: the snapshot's interactions (`user_id`, `timestamp`, ...).
        test_fraction: share of each test user's interactions in the future (at least one).
        min_events: fewest interactions a test user has.
    """
    t = interactions["timestamp"].astype("int64").to_numpy() // 10**9
    frame = pd.DataFrame({"user": interactions["user_id"].to_numpy(), "t": t})
    order = np.lexsort((t, frame["user"].to_numpy()))
    ordered = frame.iloc[order]
    n = ordered.groupby("user", sort=False)["t"].transform("size").to_numpy()
    rank = ordered.groupby("user", sort=False).cumcount().to_numpy()
    n_test = np.maximum(1, np.rint(n * test_fraction)).astype(np.int64)
    is_cut_row = rank == n - n_test
    cut = pd.Series(np.where(is_cut_row, ordered["t"].to_numpy(), -1), index=ordered.index)
    cut = cut.groupby(ordered["user"].to_numpy()).transform("max").to_numpy()
    first = ordered.groupby("user", sort=False)["t"].transform("min").to_numpy()
    future_sorted = (n >= min_events) & (cut > first) & (ordered["t"].to_numpy() >= cut)
    future = np.zeros(len(frame), dtype=bool)
    future[order] = future_sorted
    return future


def write_past(snapshot, dataset: Path, future: np.ndarray, out: Path) -> Path:
    """The dump's files with the lines of future interactions removed, in `out`."""
    shutil.copytree(dataset, out)
    inter = snapshot.interactions
    for file, rows in inter.loc[future].groupby("source_file", observed=True)["source_row"]:
        file = Path(str(file))
        path = out / (file.relative_to(dataset) if file.is_absolute() else file.name)
        lines = path.read_bytes().splitlines(keepends=True)
        drop = set((rows.to_numpy() - 1).tolist())  # source_row is the 1-based line
        path.write_bytes(b"".join(line for i, line in enumerate(lines) if i not in drop))
    return out


class Split:
    """Past / future of one dataset in one item space, with targets per test user.

    Args:
        past / future: interactions (`user_id`, `item_id`, ...) before / after the cuts.
        item_ids: the item space (catalog and every interacted item), sorted.
    """

    def __init__(self, past: pd.DataFrame, future: pd.DataFrame, item_ids: np.ndarray):
        self.item_ids, self.position = item_ids, pd.Index(item_ids)
        self.past = past
        self.users = sorted(future["user_id"].unique())
        seen = past.groupby("user_id")["item_id"].agg(set)
        wanted = future.groupby("user_id")["item_id"].agg(set)
        self.seen = [self.position.get_indexer(sorted(seen.get(u, set()))) for u in self.users]
        self.targets = [
            self.position.get_indexer(sorted(wanted[u] - seen.get(u, set()))) for u in self.users
        ]

    @classmethod
    def of(cls, interactions: pd.DataFrame, future: np.ndarray, item_ids: np.ndarray) -> Split:
        columns = ["user_id", "item_id", "timestamp"]
        return cls(interactions.loc[~future, columns], interactions.loc[future, columns], item_ids)

    def rank_scores(self, blocks, k: int = max(KS)) -> np.ndarray:
        """Top-k item positions per test user from score blocks over `item_ids` (seen masked)."""
        tops, start = [], 0
        for block in blocks:
            block = np.array(block, dtype=np.float32)
            for row, seen in enumerate(self.seen[start : start + len(block)]):
                block[row, seen] = -np.inf
            tops.append(top_k(block, k))
            start += len(block)
        return np.concatenate(tops)

    def metrics(self, ranked: np.ndarray) -> dict:
        return ranking_metrics(ranked, self.targets, list(KS), len(self.item_ids))


def tune_on_past(split: Split, score_fn, grid, test_fraction: float, min_events: int):
    """The grid value with the best Recall@100 on a per-user holdout carved from the past.

    A best value at the top of the grid extends it (x3 each time, three times at most), so the
    tuned value is inside what was tried, not the grid's edge.
    """
    past = split.past.reset_index(drop=True)
    inner = Split.of(past, split_by_user_time(past, test_fraction, min_events), split.item_ids)
    grid, scores = list(grid), {}
    for _ in range(4):
        for value in grid:
            if value not in scores:
                ranked = inner.rank_scores(score_fn(inner, value))
                scores[value] = inner.metrics(ranked)["recall@100"]
        best = max(grid, key=lambda v: scores[v])
        if best != grid[-1]:
            break
        grid.append(type(best)(best * 3))
    return best, scores


def run_product(past_dir: Path, root: Path, overrides: dict, users: list[str]):
    """`run_pipeline` on the past, then `Recommender` for the test users: (ranked ids, info)."""
    from pipelines.layout import ModelLayout, RunLayout
    from pipelines.recommend import Recommender
    from pipelines.registry import Registry
    from pipelines.steps.pipeline import run_pipeline

    layers = {k: dict(v) for k, v in overrides.items()}
    layers.setdefault("data", {}).update(source=str(past_dir), artifact_root=str(root))
    cfg = load_config(env={}, overrides=layers)
    start = time.perf_counter()
    summary = run_pipeline(cfg, "bench", engine="local")
    seconds = time.perf_counter() - start
    registry = Registry(root)
    layout = RunLayout(summary.run_dir)
    features = json.loads(layout.features_manifest.read_text())
    at = int(features["window_epoch_s"]["window_end"])
    # What users get after the run: production (this run's bundle if promoted, else the
    # champion it failed to replace); with no production at all, the run's shipped model.
    production = registry.production_dir()
    served = production or layout.shipped_model()
    results = Recommender(served, at=at).recommend(users, k=max(KS)) if users else []
    train = json.loads(ModelLayout(layout.model).train_manifest.read_text())
    metrics = json.loads(layout.metrics.read_text())
    info = {
        "run_seconds": round(seconds, 1),
        "fit_seconds": round(train["train_seconds"], 1),
        "epochs_run": train["epochs_run"],
        "best_epoch": train["best_epoch"],
        "validation_curve": [
            round(point[f"validation_recall@{cfg.train.eval_k}"], 4)
            for point in train["curve"]
            if f"validation_recall@{cfg.train.eval_k}" in point
        ],
        "validation_checks": train.get("validation_checks"),
        "warm_start": (train.get("warm_start") or {}).get("from"),
        **({"warm_start_refused": r} if (r := _refusal(summary)) else {}),
        "final_fit": train.get("final_fit"),
        "gate": summary.decision,
        "served": "this run's bundle"
        if summary.promoted
        else "the previous production bundle"
        if production
        else "run model (no production)",
        "popularity_served": sum(r["source"] == "popularity" for r in results),
        "eval": {
            key: metrics["eval"].get(key)
            for key in ("queries", "warm_queries", "cold_queries", "split")
            if key in metrics["eval"]
        },
        "gate_eval": {
            name: metrics[name][cfg.eval.primary_metric]
            for name in ("challenger", "popularity")
            if name in metrics
        },
    }
    return [[i["item_id"] for i in r["items"]] for r in results], info


def _refusal(summary) -> str | None:
    """Why the run's train step refused to warm-start (None: it did not refuse)."""
    return (summary.steps or {}).get("train", {}).get("warm_start_refused")


def fit_baselines(split: Split, args) -> dict:
    """Popularity, EASE and ItemKNN (each tuned on an inner holdout of the past) on the split."""
    models = {}
    counts = split.past["item_id"].value_counts()
    popularity = counts.reindex(split.item_ids).fillna(0).to_numpy(np.float64)
    start = time.perf_counter()
    ranked = split.rank_scores([np.broadcast_to(popularity, (len(split.users), len(popularity)))])
    models["popularity"] = {**split.metrics(ranked), "fit_seconds": time.perf_counter() - start}

    def ease(s: Split, lam: float):
        return ease_scores(s.past, s.item_ids, s.users, lam=lam)

    def knn(s: Split, size: int):
        return item_knn_scores(s.past, s.item_ids, s.users, neighbours=size)

    for name, fn, grid, param in (
        ("EASE", ease, EASE_LAMBDAS, "lambda"),
        ("ItemKNN", knn, KNN_SIZES, "neighbours"),
    ):
        start = time.perf_counter()
        best, scores = tune_on_past(split, fn, grid, args.test_fraction, args.min_events)
        ranked = split.rank_scores(fn(split, best))
        models[name] = {
            **split.metrics(ranked),
            "fit_seconds": time.perf_counter() - start,
            param: best,
            "tuning_recall@100": {str(k): round(v, 4) for k, v in scores.items()},
        }
        print(f"{name}: {param} = {best} (inner-holdout R@100 {scores[best]:.4f})", flush=True)
    return models


def baseline_cache(args, snapshot) -> Path | None:
    """Where the baselines of this dump and protocol are cached (they never change with ours)."""
    if args.baseline_cache is None:
        return None
    digest = hashlib.sha256()
    for file in sorted(set(snapshot.interactions["source_file"].astype(str))):
        digest.update(Path(file).read_bytes())
    protocol = (BASELINES_VERSION, args.test_fraction, args.min_events, EASE_LAMBDAS, KNN_SIZES, KS)
    digest.update(repr(protocol).encode())
    return args.baseline_cache / f"{Path(snapshot.root).name}-{digest.hexdigest()[:16]}.json"


def evaluate_dataset(dataset: Path, args, variants: dict) -> dict:
    snapshot = read_source(dataset)
    future = split_by_user_time(snapshot.interactions, args.test_fraction, args.min_events)
    inter = snapshot.interactions
    catalog = set() if snapshot.items is None else set(snapshot.items["item_id"])
    split = Split.of(inter, future, np.array(sorted(catalog | set(inter["item_id"])), object))
    out = {
        "format": snapshot.format,
        "users": int(snapshot.interactions["user_id"].nunique()),
        "items": len(split.item_ids),
        "interactions": len(snapshot.interactions),
        "test_users": len(split.users),
        "future_interactions": int(future.sum()),
        "span_days": round(
            (snapshot.interactions["timestamp"].max() - snapshot.interactions["timestamp"].min())
            / pd.Timedelta(days=1)
        ),
        "models": {},
    }
    print(
        f"\n## {dataset.name} ({snapshot.format}): {out['users']:,} users, {out['items']:,} "
        f"items, {out['interactions']:,} interactions over {out['span_days']:,} days; "
        f"{out['test_users']:,} test users, {out['future_interactions']:,} future interactions",
        flush=True,
    )
    cache = baseline_cache(args, snapshot)
    if cache is not None and cache.exists():
        out["models"] = json.loads(cache.read_text())
        print(f"baselines from {cache}", flush=True)
    else:
        out["models"] = fit_baselines(split, args)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(out["models"], indent=1))
    models = out["models"]
    with tempfile.TemporaryDirectory(prefix=f"bench-real-{dataset.name}-") as tmp:
        past_dir = write_past(snapshot, dataset, future, Path(tmp) / "past")
        runs = [(name, overrides, None) for name, overrides in variants.items()]
        if args.warm_days:
            t = inter["timestamp"]
            recent = ~future & (
                t >= t[~future].max().normalize() - pd.Timedelta(days=args.warm_days)
            )
            print(f"warm runs: day 1 leaves out the past's last {args.warm_days} days "
                  f"({int(recent.sum()):,} interactions)", flush=True)  # fmt: skip
            before = write_past(snapshot, dataset, future | recent.to_numpy(), Path(tmp) / "day1")
            runs += [(f"{name}, warm after {args.warm_days} d", overrides, before)
                     for name, overrides in variants.items()]  # fmt: skip
        for name, overrides, day1 in runs:
            root = Path(tmp) / f"artifacts-{len(models)}"
            if day1 is not None:
                _, first = run_product(day1, root, overrides, [])
                print(f"{name}, day 1: gate {first['gate']}; {first['gate_eval']}", flush=True)
            ids, info = run_product(past_dir, root, overrides, split.users)
            if day1 is not None:
                info["day1"] = {key: first[key] for key in ("gate", "gate_eval", "run_seconds")}
            ranked = np.full((len(ids), max(KS)), -1, dtype=np.int64)
            for row, items in enumerate(ids):
                found = split.position.get_indexer(items)
                ranked[row, : len(found)] = found
            models[name] = {**split.metrics(ranked), **info}
            m, ease = models[name], models["EASE"]
            print(
                f"{name}: R@100 {m['recall@100']:.4f} ({m['recall@100'] / ease['recall@100']:.3f}"
                f" x EASE), NDCG@10 {m['ndcg@10']:.4f} ({m['ndcg@10'] / ease['ndcg@10']:.3f} x "
                f"EASE); {json.dumps(info, default=str)}",
                flush=True,
            )
    print_table(dataset.name, out)
    return out


def print_table(name: str, out: dict) -> None:
    models = out["models"]
    ease = models["EASE"]
    pop = models["popularity"]
    header = (
        "| model | "
        + " | ".join(COLUMNS)
        + " | fit s | R@100 / EASE | NDCG@10 / EASE | R@100 / pop |"
    )
    print(f"\n{name}\n{header}\n|---|" + "---:|" * (len(COLUMNS) + 4))
    for model, m in models.items():
        cells = " | ".join(f"{m[c]:.4f}" for c in COLUMNS)
        print(
            f"| {model} | {cells} | {m['fit_seconds']:.1f} | "
            f"{m['recall@100'] / ease['recall@100']:.3f} | {m['ndcg@10'] / ease['ndcg@10']:.3f} | "
            f"{m['recall@100'] / pop['recall@100']:.2f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="Directory of dataset dirs.")
    parser.add_argument("--datasets", nargs="*", help="Only these directory names.")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--min-events", type=int, default=5)
    parser.add_argument(
        "--variants",
        type=json.loads,
        default={},
        help='Extra configs of ours: {"name": {"train": {...}, "features": {...}}}.',
    )
    parser.add_argument(
        "--common",
        type=json.loads,
        default={},
        help='Overrides under every product run, ID-only included: {"train": {"epochs": 2}}.',
    )
    parser.add_argument(
        "--warm-days",
        type=int,
        help="Also run each config warm-started from a model trained without the last N days.",
    )
    parser.add_argument("--no-defaults", action="store_true", help="Skip 'ours (defaults)'.")
    parser.add_argument("--no-id-only", action="store_true", help="Skip the ID-only model.")
    parser.add_argument(
        "--baseline-cache",
        type=Path,
        help="Cache baseline figures here, keyed by the dump's bytes and the protocol.",
    )
    parser.add_argument("--out", type=Path, help="Write every figure here as JSON.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    variants = {} if args.no_defaults else {"ours (defaults)": {}}
    variants.update(args.variants)
    if not args.no_id_only:
        variants["ID-only (tutorial)"] = ID_ONLY
    variants = {
        name: {
            section: {**args.common.get(section, {}), **overrides.get(section, {})}
            for section in {*args.common, *overrides}
        }
        for name, overrides in variants.items()
    }
    found, absent = find_datasets(args.data, args.datasets)
    if absent:
        print(f"absent, skipped: {', '.join(absent)}", flush=True)
    if not found:
        print(f"no dataset our readers know under {args.data}", flush=True)
    results = {"protocol": vars(args) | {"data": str(args.data), "out": str(args.out)}}
    for dataset in found:
        results[dataset.name] = evaluate_dataset(dataset, args, variants)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
