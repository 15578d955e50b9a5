"""The challenger index's own check: its recall against exact search, plus its tuning figures."""

from __future__ import annotations

import numpy as np

from pipelines.layout import ModelLayout

# Queries the index recall is measured on (a seeded sample when there are more).
ANN_SAMPLE = 5000


def ann_section(model, vectors: np.ndarray) -> dict:
    """Index recall@k vs exact search over the same vectors, on (a sample of) eval queries.

    Args:
        model: a `pipelines.serving.ServingModel` (its index and `item_embeddings.npy`).
        vectors: query vectors `[n, d]`.

    Returns:
        The `ann` section of `metrics.json`: `kind`, `k`, `recall@<k>`, `queries`, the tuned
        latencies and throughput, `size_mb` and `build_seconds` from the index manifest, and
        `shards` (1 = a single searcher).
    """
    from scann_index.index import ann_recall, exact_top_k

    embeddings = np.load(ModelLayout(model.directory).item_embeddings)
    k = model.index.manifest["k"]
    sample = vectors[
        np.random.default_rng(0).choice(len(vectors), min(len(vectors), ANN_SAMPLE), replace=False)
    ] if len(vectors) else vectors  # fmt: skip
    found, _ = model.index.search(sample, k)
    tuned = model.index.manifest.get("tuned") or {}
    return {
        "kind": model.index.kind,
        "k": k,
        f"recall@{k}": ann_recall(found, exact_top_k(embeddings, sample, k)),
        "queries": int(len(sample)),
        "latency_p50_ms": tuned.get("latency_p50_ms"),
        "latency_p99_ms": tuned.get("latency_p99_ms"),
        "qps_batched": tuned.get("qps_batched"),
        "size_mb": round(model.index.manifest.get("size_bytes", 0) / 2**20, 3),
        "build_seconds": model.index.manifest.get("build_seconds"),
        "shards": len(model.index.manifest.get("shards") or ()) or 1,
    }
