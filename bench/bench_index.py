"""ANN index: exact brute force vs our tuned ScaNN vs FAISS HNSW, side by side in one process.

On N x 64 unit item vectors drawn around 2,000 clusters (a stand-in for trained item
embeddings) and held-out queries from the same distribution, with inner-product search:

    exact        numpy blocked matmul + top-k (the ground truth)
    ScaNN        scann_index.build_index (tree ~sqrt(N) leaves + AH + exact reorder), tuned by
                 scann_index.tune_index to ANN recall@10 >= 0.95 on 2,000 tuning queries;
                 curve: leaves_to_search swept at the tuned reorder depth
    FAISS HNSW   IndexHNSWFlat(M=32, efConstruction=200), efSearch swept

Reports build time, recall@10 vs exact and batched queries/s (2 threads each) on held-out
queries, and the ratios at equal recall. Needs the bench extra: pip install faiss-cpu==1.15.1.

    python bench/bench_index.py --items 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipelines.config import IndexConfig  # noqa: E402
from scann_index.index import (  # noqa: E402
    SearchParams,
    ann_recall,
    build_index,
    exact_top_k,
    tune_index,
)

K = 10
THREADS = 2


def embeddings(n: int, dim: int, queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(2000, dim)).astype(np.float32)
    # Uneven cluster spreads; noise norm ~1.2-3.6 against centre norm ~8, roughly how trained
    # item embeddings group by taste (with 0.5-1.5 the "clusters" overlap almost uniformly).
    scale = rng.uniform(0.15, 0.45, size=2000).astype(np.float32)

    def draw(m):
        c = rng.integers(0, 2000, m)
        x = centers[c] + scale[c, None] * rng.normal(size=(m, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(queries)


def qps(search, queries: np.ndarray) -> float:
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        search(queries)
        best = min(best, time.perf_counter() - t)
    return len(queries) / best


def interpolate_qps(curve: list[tuple[float, float]], recall: float) -> float | None:
    """QPS of a recall/QPS curve at `recall` (linear between points; None if never reached)."""
    points = sorted(curve)
    for (r0, q0), (r1, q1) in zip(points, points[1:], strict=False):
        if r0 <= recall <= r1:
            return q0 + (q1 - q0) * (recall - r0) / (r1 - r0) if r1 > r0 else max(q0, q1)
    return points[-1][1] if points and points[-1][0] >= recall else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--no-faiss", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

    x, q = embeddings(args.items, args.dim, args.queries + 2000)
    tune_q, q = q[:2000], q[2000:]
    print(f"{args.items:,} x {args.dim} items, {len(q):,} held-out queries, recall@{K}", flush=True)

    t = time.perf_counter()
    truth = exact_top_k(x, q, K)
    exact_seconds = time.perf_counter() - t
    exact_qps = len(q) / exact_seconds
    print(f"exact: {exact_qps:,.0f} q/s", flush=True)

    cfg = IndexConfig(k=K, brute_force_max_items=0, target_recall=0.95, threads=THREADS)
    t = time.perf_counter()
    index = build_index(x, np.arange(len(x)).astype(str), cfg)
    scann_build = time.perf_counter() - t
    tuned = tune_index(index, x, tune_q, cfg)
    found, _ = index.search(q, K)
    scann_recall = ann_recall(found, truth)
    scann_qps = qps(lambda m: index.search(m, K), q)
    print(
        f"ScaNN: build {scann_build:.1f} s ({index.manifest['num_leaves']} leaves), tuning "
        f"{tuned['tuning_seconds']:.1f} s -> leaves {tuned['leaves_to_search']}, reorder "
        f"{tuned['pre_reorder']}; held-out recall {scann_recall:.4f} at {scann_qps:,.0f} q/s",
        flush=True,
    )
    scann_curve = []
    leaves = index.manifest["num_leaves"]
    for n in sorted({max(1, int(leaves * f)) for f in (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)}):
        params = SearchParams(n, tuned["pre_reorder"])
        found, _ = index.search(q, K, params=params)
        point = (ann_recall(found, truth), qps(lambda m, p=params: index.search(m, K, params=p), q))
        scann_curve.append(point)
        print(f"  ScaNN leaves {n:>4}: recall {point[0]:.4f}  {point[1]:>9,.0f} q/s", flush=True)

    hnsw_curve, hnsw_build = [], None
    if not args.no_faiss:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 200
        t = time.perf_counter()
        hnsw.add(x)
        hnsw_build = time.perf_counter() - t
        print(f"HNSW: build {hnsw_build:.1f} s", flush=True)
        for ef in (16, 24, 32, 48, 64, 96, 128, 256):
            hnsw.hnsw.efSearch = ef
            _, found = hnsw.search(q, K)
            point = (ann_recall(found, truth), qps(lambda m: hnsw.search(m, K), q))
            hnsw_curve.append(point)
            print(
                f"  HNSW efSearch {ef:>3}: recall {point[0]:.4f}  {point[1]:>9,.0f} q/s", flush=True
            )

    print(f"\n| index | build s | recall@{K} | queries/s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| exact (numpy) | 0 | 1.0000 | {exact_qps:,.0f} |")
    print(
        f"| ScaNN tuned (target 0.95) | {scann_build:.1f} | {scann_recall:.4f} | {scann_qps:,.0f} |"
    )
    if hnsw_curve:
        at = interpolate_qps(hnsw_curve, scann_recall)
        print(
            f"| FAISS HNSW M=32 efC=200 | {hnsw_build:.1f} | (curve) | {at or 0:,.0f} at equal recall |"
        )
        print(
            f"\nScaNN / HNSW queries/s at recall {scann_recall:.4f}: {scann_qps / at:.2f}"
            if at
            else "\nHNSW never reached ScaNN's recall"
        )
        print(f"ScaNN / HNSW build time: {scann_build / hnsw_build:.3f}")
    print(f"ScaNN / exact queries/s: {scann_qps / exact_qps:.1f}")


if __name__ == "__main__":
    main()
