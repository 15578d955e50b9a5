"""Multi-worker training (`train.distribution: multi_worker`): two processes with TF_CONFIG on
127.0.0.1 train one model; the chief exports it, and it is as good as one process's."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re

import numpy as np
import pytest

from pipelines.config import PipelineConfig, TrainConfig
from pipelines.errors import PipelineError
from pipelines.metrics import recall_at_k
from pipelines.steps.train import fit
from tfrs_models.data import FeatureSet
from tfrs_models.distributed import make_replicas, train_on_local_workers
from tfrs_models.export import QUERY_INPUTS, load_query_tower
from tfrs_models.quick_eval import QuickEval
from tfrs_models.train import train_model

pytestmark = pytest.mark.slow
# Tiny towers without the history encoder (the bulk of a step's work) and a larger step size:
# two epochs clear popularity clearly on the small world in a fraction of the default's time.
CFG = TrainConfig(
    epochs=2, eval_sample=300, final_fit=False, embedding_dim=16, id_embedding_dim=16,
    hidden_units=32, use_history=False, learning_rate=0.01, batch_size=1024,
)  # fmt: skip
TOLERANCE = 0.05


def exported_recall(model_dir, features: FeatureSet, k: int = 100) -> float:
    """Recall@k on every validation query of the exported model: the SavedModel's query
    vectors against the exported item vectors (nothing of the in-memory model)."""
    serve = load_query_tower(model_dir)
    names = (*QUERY_INPUTS, *features.user_features)
    validation = QuickEval(features, None, split="valid")
    queries = validation.query_embeddings(
        lambda inputs: serve(**{name: inputs[name] for name in names})["embedding"]
    )
    items = np.load(model_dir / "item_embeddings.npy", allow_pickle=False)
    return recall_at_k(validation.ranked([queries @ items.T], k), validation.targets)


def test_two_workers_train_one_model_that_the_chief_exports(small_features, tmp_path, monkeypatch):
    features = FeatureSet.load(small_features.features_dir)
    model_dir, scratch = tmp_path / "model", tmp_path / "scratch"
    scratch.mkdir()
    # TMPDIR: where the non-chief's scratch directory goes (it must be gone at the end).
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # The train step with train.workers 2 starts the two processes and waits for them.
    cfg = PipelineConfig(train=CFG.model_copy(update={"workers": 2}))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fitted = pool.submit(fit, cfg, features.directory, model_dir)
        # Meanwhile, one process on the same data with the same global batch (2 x 1024), so
        # both take the same steps on the same number of examples per step; they differ in
        # negatives per query (1023 per replica vs 2047) and in data order.
        single = train_model(
            features.directory, tmp_path / "single",
            CFG.model_copy(update={"batch_size": 2 * CFG.batch_size}), progress=False,
        )  # fmt: skip
        result = fitted.result(timeout=900).result
    logs = tmp_path / "model_workers"
    output = {p.name: p.read_text(errors="replace") for p in sorted(logs.iterdir())}
    assert sorted(output) == ["worker-0.log", "worker-1.log"]
    assert result.model is None and result.model_dir == str(model_dir)

    manifest = json.loads((model_dir / "train_manifest.json").read_text())
    assert manifest["distribution"] == {
        "strategy": "multi_worker", "replicas": 2, "workers": 2, "global_batch": 2048,
        "task": "worker 0 of 2 (chief)",
    }  # fmt: skip
    assert result.manifest == manifest
    assert manifest["epochs_run"] == 2 and manifest["config"]["distribution"] == "multi_worker"
    assert (model_dir / "checkpoints" / "checkpoint").is_file()
    # The non-chief wrote only its scratch directory, then deleted it.
    assert list(scratch.glob("two-tower-worker-*")) == []
    assert '"task": "worker 1 of 2"' in output["worker-1.log"]

    # The export loads and ranks: its recall is the manifest's (the chief's in-memory model).
    recall = exported_recall(model_dir, features)
    assert recall == pytest.approx(manifest["validation_recall@100"], abs=0.01)
    popularity = manifest["validation_popularity_recall@100"]
    baseline = single.manifest["validation_recall@100"]
    # Both clear popularity (0.49) well; and the two-worker model is within run-to-run noise
    # of one process: 500 validation queries alone give a standard error of ~0.02 on a
    # recall near 0.6, and training noise of the same size (0.66-0.72 across runs of the
    # four-epoch model in test_training), so 0.05 is about two standard errors of a
    # difference; a broken gradient aggregation or shard (a worker training on nothing, or
    # on the other's data) lands far outside it.
    assert recall > 1.1 * popularity and baseline > 1.1 * popularity
    assert abs(recall - baseline) <= TOLERANCE, (recall, baseline)


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(PipelineError, match="needs TF_CONFIG"):
        make_replicas("multi_worker")
    assert make_replicas("none").strategy is None and os.environ.get("TF_CONFIG") is None


def test_a_failing_worker_fails_the_step_with_its_log(tmp_path):
    # Both workers start (they meet over gRPC) and fail reading features that do not exist.
    with pytest.raises(PipelineError) as error:
        train_on_local_workers(
            tmp_path / "missing", tmp_path / "model", CFG.model_copy(update={"workers": 2})
        )
    message = str(error.value)
    assert re.match(r"training worker [01] of 2 exited with code 1 \(log .*model_workers/", message)
    assert "manifest.json" in message  # the worker's own error, from its log's last lines


def test_workers_need_a_multi_worker_distribution():
    with pytest.raises(ValueError, match="set train.distribution to multi_worker"):
        TrainConfig(workers=2, distribution="mirrored")
