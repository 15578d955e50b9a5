"""Training end to end on the small world: beats popularity, selects on validation only,
resumes, exports, warm-starts."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import TrainConfig
from pipelines.formats.example_decoder import Example
from pipelines.formats.tfrecord import read_tfrecords, write_tfrecords
from tfrs_models.data import FeatureSet, load_eval_queries
from tfrs_models.export import QUERY_INPUTS, load_query_tower
from tfrs_models.quick_eval import QuickEval
from tfrs_models.train import build_model, train_model
from tfrs_models.warm_start import embedding_rows, warm_start

pytestmark = pytest.mark.slow
# The selected weights; the final-fit tests opt in.
CFG = TrainConfig(epochs=2, eval_sample=500, final_fit=False)


@pytest.fixture(scope="module")
def trained(small_features, tmp_path_factory):
    # Four epochs: at temperature 0.2 recall still climbs after two (0.66-0.72 run to run there).
    cfg = CFG.model_copy(update={"epochs": 4})
    return train_model(
        small_features.features_dir, tmp_path_factory.mktemp("model"), cfg, progress=False
    )


def test_training_beats_popularity_on_validation_and_on_the_eval_period(trained, feature_set):
    m = trained.manifest
    assert m["validation_queries"] == 500 and m["selected_on"] == "valid"
    # Validation interpolates inside the training window, where whole-window popularity is a
    # strong baseline (0.49 vs 0.44 on eval): a smaller margin there.
    assert m["validation_recall@100"] > 1.15 * m["validation_popularity_recall@100"] > 0
    # All four epochs: four passes over the small features are inside the 400k-example warm-up.
    assert m["validation_checks"]["warmup"] > 4
    assert len(m["curve"]) == 4 and m["train_examples_per_second"] > 0
    assert all("validation_recall@100" in point for point in m["curve"])
    # Selected: the last epoch that beat every earlier one by more than min_delta.
    min_delta, best = m["config"]["early_stopping_min_delta"], m["curve"][0]
    for point in m["curve"][1:]:
        if point["validation_recall@100"] > best["validation_recall@100"] + min_delta:
            best = point
    assert m["best_epoch"] == best["epoch"]
    assert m["validation_recall@100"] == pytest.approx(best["validation_recall@100"], abs=1e-6)
    assert (
        trained.model_dir
        and json.loads(open(f"{trained.model_dir}/train_manifest.json").read())["best_epoch"]
    )
    assert m["trained_until"] == feature_set.manifest["window"]["eval_start"]  # temporal
    # The eval period is scored outside training, on queries training never read.
    evaluation = QuickEval(feature_set, None, split="eval")
    assert len(evaluation) > 1000
    assert evaluation.model_recall(trained.model, 100) > 1.5 * evaluation.popularity_recall(100)


def test_export_round_trip(trained, feature_set):
    serve = load_query_tower(trained.model_dir)
    queries = load_eval_queries(feature_set, limit=32)
    inputs = {name: queries[name] for name in (*QUERY_INPUTS, *feature_set.user_features)}
    exported = serve(**inputs)["embedding"].numpy()
    in_memory = trained.model.query_tower(inputs).numpy()
    np.testing.assert_allclose(exported, in_memory, atol=1e-5)
    # Histories of any length are accepted (no fixed H in the signature).
    short = dict(
        inputs,
        history_item_ids=inputs["history_item_ids"][:, :3],
        history_timestamps=inputs["history_timestamps"][:, :3],
    )
    assert serve(**short)["embedding"].shape == (32, in_memory.shape[1])
    ids = open(f"{trained.model_dir}/item_ids.txt").read().split()
    vectors = np.load(f"{trained.model_dir}/item_embeddings.npy", allow_pickle=False)
    assert len(ids) == len(feature_set.catalog) == len(vectors)
    np.testing.assert_allclose(
        vectors[:50], trained.model.item_tower(tf.constant(ids[:50])).numpy(), atol=1e-5
    )


def test_a_killed_run_resumes_from_its_last_checkpoint(small_features, tmp_path):
    first = train_model(
        small_features.features_dir, tmp_path, CFG.model_copy(update={"epochs": 1}), progress=False
    )
    assert first.manifest["epochs_run"] == 1 and (tmp_path / "checkpoints" / "checkpoint").is_file()
    second = train_model(small_features.features_dir, tmp_path, CFG, progress=False)
    assert second.manifest["resumed_from_epoch"] == 1
    assert second.manifest["epochs_run"] == 2
    assert [c["epoch"] for c in second.manifest["curve"]] == [2]
    assert (tmp_path / "checkpoints" / "inputs.json").is_file()


# Small towers: the resume tests only count epochs.
TINY = CFG.model_copy(
    update={"embedding_dim": 16, "id_embedding_dim": 16, "hidden_units": 32, "eval_sample": 300}
)


def rewrite_train_split(features_dir: Path, keep) -> None:
    """New data for the same vocabulary: keep the train records `keep(n)` selects, with the
    manifest updated as the feature job would write it (file hashes, record counts)."""
    manifest = json.loads((features_dir / "manifest.json").read_text())
    total = 0
    for shard in manifest["shards"]:
        entry = shard["files"]["train"]
        records = [r for n, r in enumerate(read_tfrecords(entry["path"])) if keep(n)]
        entry["sha256"] = hashlib.sha256(write_tfrecords(entry["path"], records)).hexdigest()
        entry["records"] = shard["train_examples"] = len(records)
        total += len(records)
    split = manifest["splits"]["train"]
    split["records"] = manifest["counts"]["train_examples"] = total
    shas = "".join(shard["files"]["train"]["sha256"] for shard in manifest["shards"])
    split["content_sha256"] = hashlib.sha256(shas.encode()).hexdigest()
    (features_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_changed_features_with_the_same_vocabulary_start_fresh(small_features, tmp_path, caplog):
    features = copy_features(small_features.features_dir, tmp_path / "features")
    done = train_model(features, tmp_path / "model", TINY, progress=False)
    assert done.manifest["epochs_run"] == 2
    # The run id is re-run after its data changed: a resume would find every epoch done, train
    # none and export the old weights as the new model.
    rewrite_train_split(features, keep=lambda n: n % 3 != 0)
    with caplog.at_level("WARNING", logger="tfrs_models.train"):
        again = train_model(features, tmp_path / "model", TINY, progress=False).manifest
    assert "not resuming from" in caplog.text and "features_manifest_sha256" in caplog.text
    assert again["resumed_from_epoch"] == 0 and again["epochs_run"] == 2
    assert [p["epoch"] for p in again["curve"]] == [1, 2]
    inputs = json.loads((tmp_path / "model" / "checkpoints" / "inputs.json").read_text())
    manifest = (features / "manifest.json").read_bytes()
    assert inputs["features_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    # Only this run's checkpoints are left.
    assert sorted(p.name for p in (tmp_path / "model" / "checkpoints").glob("ckpt-*.index")) == [
        "ckpt-1.index",
        "ckpt-2.index",
    ]


def test_a_changed_vocabulary_size_starts_fresh_instead_of_crashing(
    small_features, tmp_path, caplog
):
    features = copy_features(small_features.features_dir, tmp_path / "features")
    one = TINY.model_copy(update={"epochs": 1})
    train_model(features, tmp_path / "model", one, progress=False)
    # One more item id: the item embedding table no longer has the checkpoint's shape (caught
    # even when, as here, only the vocabulary file changed and the manifest did not).
    vocab = features / "vocab" / "item_id.tsv"
    vocab.write_text(vocab.read_text() + "brand-new-item\t1\n")
    with caplog.at_level("WARNING", logger="tfrs_models.train"):
        m = train_model(features, tmp_path / "model", one, progress=False).manifest
    assert "vocabulary_sizes" in caplog.text
    assert m["resumed_from_epoch"] == 0 and m["epochs_run"] == 1


def test_resume_false_starts_fresh_and_changed_config_is_not_resumed(
    small_features, tmp_path, caplog
):
    one = TINY.model_copy(update={"epochs": 1})
    train_model(small_features.features_dir, tmp_path, one, progress=False)
    with caplog.at_level("INFO", logger="tfrs_models.train"):
        m = train_model(
            small_features.features_dir, tmp_path, one, progress=False, resume=False
        ).manifest
    assert "resume is off" in caplog.text
    assert m["resumed_from_epoch"] == 0 and m["epochs_run"] == 1
    # Checkpoints of another model shape (or loss, learning rate, ...) are not resumed either.
    caplog.clear()
    wider = TINY.model_copy(update={"hidden_units": 48, "temperature": 0.3})
    with caplog.at_level("WARNING", logger="tfrs_models.train"):
        m = train_model(small_features.features_dir, tmp_path, wider, progress=False).manifest
    assert "train config (hidden_units, temperature)" in caplog.text
    assert m["resumed_from_epoch"] == 0 and m["epochs_run"] == 2


def test_a_run_resumed_after_its_last_epoch_keeps_the_selected_epoch(small_features, tmp_path):
    """Killed after the last epoch's checkpoint (in the export or the final fit): the retry
    trains nothing and must still export the best epoch's weights and give the final fit as
    many epochs as that best epoch, not the last epoch's weights and every epoch."""
    from tfrs_models.train import final_fit_checks

    cfg = TINY.model_copy(update={"epochs": 3, "early_stopping_patience": 0})
    first = train_model(small_features.features_dir, tmp_path, cfg, progress=False).manifest
    with np.load(tmp_path / "weights.npz") as exported:
        before = {name: exported[name] for name in exported.files}
    best = first["best_epoch"]
    assert [p.name for p in (tmp_path / "checkpoints").glob("best-*.npz")] == [f"best-{best}.npz"]
    again = train_model(small_features.features_dir, tmp_path, cfg, progress=False).manifest
    assert again["resumed_from_epoch"] == 3 and again["curve"] == []
    assert again["best_epoch"] == best and again["validation_checks"]["best"] == best
    assert final_fit_checks(cfg, again["validation_checks"]["best"]) == best
    with np.load(tmp_path / "weights.npz") as exported:
        assert sorted(exported.files) == sorted(before)
        for name in exported.files:
            np.testing.assert_array_equal(exported[name], before[name])


def test_stale_reason_names_what_changed(feature_set, tmp_path):
    from tfrs_models.train import INPUTS_FILE, checkpoint_inputs, stale_reason

    inputs = checkpoint_inputs(feature_set, TINY, None)
    (tmp_path / INPUTS_FILE).write_text(json.dumps(inputs))
    # How long a run goes and how it selects may change on a resume; nothing else.
    longer = TINY.model_copy(update={"epochs": 9, "early_stopping_patience": 0, "eval_k": 10})
    assert stale_reason(tmp_path, checkpoint_inputs(feature_set, longer, None)) is None
    weighted = TINY.model_copy(update={"weighting": "weight"})
    assert stale_reason(tmp_path, checkpoint_inputs(feature_set, weighted, tmp_path)) == (
        "their inputs differ: warm_start_from, train config (weighting)"
    )
    # `auto` is catch_up_adam in one process and adam under a strategy; `distribution` may
    # change on a resume, but a checkpoint's optimizer slots are those of the one it ran.
    assert inputs["optimizer"] == "catch_up_adam"
    spread = TINY.model_copy(update={"distribution": "multi_worker"})
    assert stale_reason(tmp_path, checkpoint_inputs(feature_set, spread, None)) == (
        "their inputs differ: optimizer"
    )
    pinned = spread.model_copy(update={"optimizer": "catch_up_adam"})
    assert stale_reason(tmp_path, checkpoint_inputs(feature_set, pinned, None)) == (
        "their inputs differ: train config (optimizer)"
    )
    (tmp_path / INPUTS_FILE).unlink()
    assert "made by an older version" in stale_reason(tmp_path, inputs)


def test_an_explicit_catch_up_adam_under_a_strategy_is_warned_about(caplog):
    from tfrs_models.optimizers import CatchUpAdam
    from tfrs_models.train import make_optimizer

    with caplog.at_level("WARNING", logger="tfrs_models.train"):
        # auto picks adam under a strategy, and catch_up_adam in one process: nothing to say.
        assert not isinstance(make_optimizer(TrainConfig(distribution="mirrored")), CatchUpAdam)
        assert isinstance(make_optimizer(TrainConfig(optimizer="catch_up_adam")), CatchUpAdam)
        assert not [r for r in caplog.records if r.name == "tfrs_models.train"]
        pinned = TrainConfig(optimizer="catch_up_adam", distribution="multi_worker")
        assert isinstance(make_optimizer(pinned), CatchUpAdam)  # still allowed
    assert len([r for r in caplog.records if r.name == "tfrs_models.train"]) == 1
    assert "catch_up_adam under distribution multi_worker" in caplog.text
    assert "optimizer auto picks adam" in caplog.text


def test_embedding_rows_map_shared_ids_and_oov_buckets():
    new_rows, old_rows = embedding_rows(["a", "b", "c"], ["c", "x", "a"], old_oov=2, new_oov=2)
    assert list(zip(new_rows.tolist(), old_rows.tolist(), strict=True)) == [
        (0, 0),
        (1, 1),
        (2, 4),
        (4, 2),
    ]
    new_rows, old_rows = embedding_rows(["a"], ["a"], old_oov=2, new_oov=3)
    assert list(zip(new_rows.tolist(), old_rows.tolist(), strict=True)) == [
        (3, 2)
    ]  # buckets differ


def next_day_vocab(feature_set, directory: Path, **changed: list[str]) -> Path:
    """The features' vocabulary files in `directory`, with the `changed` ones replaced."""

    directory.mkdir()
    for name in ("item_id", "user_id", "genre", "title_token"):
        if name in changed:
            (directory / f"{name}.tsv").write_text("".join(f"{v}\t1\n" for v in changed[name]))
        else:
            shutil.copyfile(f"{feature_set.directory}/vocab/{name}.tsv", directory / f"{name}.tsv")
    return directory


def warm_started(feature_set, vocab_dir: Path, previous, table: str):
    """A fresh model warm-started from `previous` with `vocab_dir`: the model, the item
    tower's `table` embedding before the warm start, and the warm start's counts."""
    fresh = build_model(feature_set, CFG)
    before = getattr(fresh.item_tower, table).embeddings.numpy().copy()
    stats = warm_start(fresh, vocab_dir, feature_set.oov_buckets, previous, feature_set.oov_buckets)
    return fresh, before, stats


def test_warm_start_copies_rows_of_shared_ids(trained, feature_set, tmp_path):

    # A "next day" vocabulary: one item gone, one new item first (the default query tower has
    # no user-id embedding, so the item table shows the row mapping).
    items = feature_set.vocab["item_id"]
    vocab_dir = next_day_vocab(feature_set, tmp_path / "vocab", item_id=["brand-new", *items[1:]])
    fresh, before, stats = warm_started(feature_set, vocab_dir, trained.model_dir, "id_embedding")
    after = fresh.item_tower.id_embedding.embeddings.numpy()
    old = trained.model.item_tower.id_embedding.embeddings.numpy()
    k = feature_set.oov_buckets
    # Rows of items present in both vocabularies are copied to their new positions...
    np.testing.assert_array_equal(after[k + 1 :], old[k + 1 :])
    # ...the new item keeps its fresh row, and the OOV buckets are copied.
    np.testing.assert_array_equal(after[k], before[k])
    np.testing.assert_array_equal(after[:k], old[:k])
    assert stats["item_id_rows_fresh"] == 1 and stats["variables_skipped"] == 0
    np.testing.assert_array_equal(
        fresh.item_tower.mlp.weights[0].numpy(), trained.model.item_tower.mlp.weights[0].numpy()
    )


def test_warm_start_maps_title_tokens_by_value_when_their_order_changes(
    trained, feature_set, tmp_path
):
    """Token vocabularies are ordered by frequency: the next day's first two tokens can swap
    and a new token can enter. Rows follow the token, not the position (copying by position
    fed the item MLP another word's vector); a previous model without the token vocabulary
    leaves the table fresh instead."""

    tokens = feature_set.vocab["title_token"]
    assert (Path(trained.model_dir) / "vocab" / "title_token.tsv").exists()  # exported
    nxt = [tokens[1], tokens[0], "brand-new-word", *tokens[2:-1]]  # same size, reordered
    vocab_dir = next_day_vocab(feature_set, tmp_path / "vocab", title_token=nxt)
    fresh, before, stats = warm_started(
        feature_set, vocab_dir, trained.model_dir, "token_embedding"
    )
    after = fresh.item_tower.token_embedding.embeddings.numpy()
    old = trained.model.item_tower.token_embedding.embeddings.numpy()
    np.testing.assert_array_equal(after[0], old[0])  # padding
    np.testing.assert_array_equal(after[1], old[2])  # tokens[1] was row 2
    np.testing.assert_array_equal(after[2], old[1])
    np.testing.assert_array_equal(after[3], before[3])  # the new word stays fresh
    np.testing.assert_array_equal(after[4:], old[3:-1])
    assert stats["title_token_rows_fresh"] == 1 and stats["variables_skipped"] == 0

    previous = tmp_path / "previous"  # a model exported before token vocabularies were kept
    shutil.copytree(trained.model_dir, previous)
    (previous / "vocab" / "title_token.tsv").unlink()
    fresh, before, stats = warm_started(feature_set, vocab_dir, previous, "token_embedding")
    np.testing.assert_array_equal(fresh.item_tower.token_embedding.embeddings.numpy(), before)
    assert stats["variables_skipped"] == 1 and "title_token" in stats["skipped"][0]
    assert stats["genre_rows_fresh"] == 0  # the genre table, still mapped, copied whole


def copy_features(features_dir: str, to: Path) -> Path:
    """A private copy of a features directory (manifest paths point into the copy)."""
    shutil.copytree(features_dir, to)
    manifest = to / "manifest.json"
    manifest.write_text(manifest.read_text().replace(features_dir, str(to)))
    return to


def poison_eval_labels(features_dir: Path) -> None:
    """Give every eval query another query's labels plus an unknown item: garbage to learn from."""
    files = sorted((features_dir / "eval").glob("*.tfrecord"))
    examples = {f: [Example.FromString(r) for r in read_tfrecords(str(f))] for f in files}
    flat = [e for f in files for e in examples[f]]
    labels = [list(e.features.feature["label_item_ids"].bytes_list.value) for e in flat]
    for k, example in enumerate(flat):
        value = example.features.feature["label_item_ids"].bytes_list.value
        del value[:]
        value.extend([*labels[(k + 7) % len(labels)], b"never-seen-item"])
    for f in files:
        write_tfrecords(str(f), [e.SerializeToString(deterministic=True) for e in examples[f]])


TRAIN_SCRIPT = """
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
tf.config.experimental.enable_op_determinism()  # tf.data and ops: same inputs, same numbers
from pipelines.config import TrainConfig
from tfrs_models.train import train_model
cfg = TrainConfig.model_validate_json(sys.argv[1])
out = {}
for name, features_dir in zip(sys.argv[2::2], sys.argv[3::2]):
    m = train_model(features_dir, os.path.join(os.path.dirname(features_dir), "model-" + name),
                    cfg, progress=False).manifest
    out[name] = {key: m[key] for key in ("curve", "best_epoch", "validation_queries",
                                         "validation_recall@20", "validation_popularity_recall@20")}
print(json.dumps(out))
"""


def test_poisoned_eval_labels_leave_training_exactly_unchanged(small_features, tmp_path):
    """Training never reads the eval split: garbage eval labels, or no eval files at all, give
    the same per-epoch validation recall and loss, bit for bit, with a fixed seed."""
    clean = copy_features(small_features.features_dir, tmp_path / "clean")
    poisoned = copy_features(small_features.features_dir, tmp_path / "poisoned")
    poison_eval_labels(poisoned)
    missing = copy_features(small_features.features_dir, tmp_path / "missing")
    shutil.rmtree(missing / "eval")
    # The poison is real: scored on the eval split, the same ranking gets other numbers.
    recall = {
        d.name: QuickEval(FeatureSet.load(d), None, split="eval").popularity_recall(20)
        for d in (clean, poisoned)
    }
    assert recall["clean"] != recall["poisoned"]

    cfg = TrainConfig(epochs=2, embedding_dim=16, id_embedding_dim=16, hidden_units=32,
                      eval_k=20, eval_sample=300, early_stopping_patience=0)  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, cfg.model_dump_json(),
         "clean", str(clean), "poisoned", str(poisoned), "missing", str(missing)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert [p["epoch"] for p in runs["clean"]["curve"]] == [1, 2]
    assert all(p["loss"] > 0 and p["validation_recall@20"] > 0 for p in runs["clean"]["curve"])
    assert runs["poisoned"] == runs["clean"]
    assert runs["missing"] == runs["clean"]


def test_features_without_validation_train_every_epoch_and_never_use_eval(
    small_features, tmp_path, caplog
):
    old = copy_features(small_features.features_dir, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["splits"]["valid"]  # features from before the validation split
    (old / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(old / "eval")  # any read of the eval split would fail
    cfg = CFG.model_copy(update={"early_stopping_patience": 1, "embedding_dim": 16,
                                 "hidden_units": 32})  # fmt: skip
    with caplog.at_level("WARNING", logger="tfrs_models.train"):
        m = train_model(old, tmp_path / "model", cfg, progress=False).manifest
    assert "no validation queries" in caplog.text and "no early stopping" in caplog.text
    assert m["epochs_run"] == 2 and m["best_epoch"] == 2 and m["selected_on"] is None
    assert [sorted(p) for p in m["curve"]] == [["epoch", "loss"]] * 2
    assert m["validation_queries"] == 0 and m["validation_recall@100"] is None


FINAL_FIT_SCRIPT = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
from pipelines.config import TrainConfig
from tfrs_models.train import train_model
cfg = TrainConfig.model_validate_json(sys.argv[1])
for name, final_fit in (("plain", False), ("final", True)):
    train_model(sys.argv[2], os.path.join(sys.argv[3], name, "model"),
                cfg.model_copy(update={"final_fit": final_fit}), progress=False)
"""
# Keys of a train manifest that differ between two runs for reasons other than the weights.
RUN_KEYS = {"config", "train_seconds", "train_examples_per_second", "export"}


def test_final_fit_exports_a_sibling_and_leaves_the_selected_model_untouched(
    small_features, tmp_path
):
    """Same seed, op determinism: `<run>/model` of a run with a final fit is the model of a run
    without one (same embeddings, weights and curves); `<run>/model_final` trained on."""
    cfg = TrainConfig(epochs=2, embedding_dim=16, id_embedding_dim=16, hidden_units=32,
                      eval_sample=300, early_stopping_patience=0)  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", FINAL_FIT_SCRIPT, cfg.model_dump_json(),
         small_features.features_dir, str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    plain, selected, final = (tmp_path / "plain" / "model", tmp_path / "final" / "model",
                              tmp_path / "final" / "model_final")  # fmt: skip
    assert not (tmp_path / "plain" / "model_final").exists()
    # The selected model is the same with or without a final fit after it.
    assert (selected / "item_embeddings.npy").read_bytes() == (
        plain / "item_embeddings.npy"
    ).read_bytes()
    with np.load(plain / "weights.npz") as a, np.load(selected / "weights.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    manifests = {
        name: json.loads((d / "train_manifest.json").read_text())
        for name, d in (("plain", plain), ("selected", selected), ("final", final))
    }
    strip = {n: {k: v for k, v in m.items() if k not in RUN_KEYS} for n, m in manifests.items()}
    assert strip["selected"] == strip["plain"]
    m, f = manifests["selected"], manifests["final"]
    window = small_features.manifest["window"]
    assert m["final_fit"] is None and m["trained_until"] == window["eval_start"]
    # The final model: same export layout, trained on, manifest says how.
    for name in ("query_tower", "item_embeddings.npy", "item_ids.txt", "weights.npz",
                 "vocab", "train_manifest.json"):  # fmt: skip
        assert (final / name).exists(), name
    assert not (final / "checkpoints").exists()
    assert (final / "item_ids.txt").read_text() == (selected / "item_ids.txt").read_text()
    before = np.load(selected / "item_embeddings.npy")
    after = np.load(final / "item_embeddings.npy")
    assert before.shape == after.shape and np.abs(before - after).max() > 1e-3
    counts = small_features.manifest["counts"]
    assert f["trained_until"] == window["window_end"]
    assert f["final_fit"] == {
        **f["final_fit"],
        "from_epoch": m["best_epoch"],
        "epochs": m["best_epoch"],  # final_fit_epochs None: as many as the best epoch
        "examples": counts["train_examples"] + counts["heldout_examples"],
        "trained_until": window["window_end"],
        "splits": ["train", "heldout"],
    }
    assert f["final_fit"]["early_stopping"].startswith("none: ")
    assert [p["epoch"] for p in f["final_fit"]["curve"]] == list(range(1, m["best_epoch"] + 1))
    assert f["export"]["item_embeddings"] == str(final / "item_embeddings.npy")
    assert f["best_epoch"] == m["best_epoch"] and f["curve"] == m["curve"]
    # The exported tower serves.
    queries = load_eval_queries(FeatureSet.load(small_features.features_dir), limit=8)
    serve = load_query_tower(final)
    names = {spec.name for spec in serve.structured_input_signature[1].values()}
    assert serve(**{n: queries[n] for n in names})["embedding"].shape[0] == 8


def test_final_fit_epochs_default_to_the_best_epoch_capped_at_epochs():
    from tfrs_models.train import final_fit_checks

    cfg = TrainConfig(epochs=5, final_fit=True)
    assert final_fit_checks(cfg, 3) == 3 and final_fit_checks(cfg, None) == 5
    assert final_fit_checks(cfg.model_copy(update={"epochs": 2}), 3) == 2
    assert final_fit_checks(cfg.model_copy(update={"final_fit_epochs": 7}), 3) == 7
    # With 4 checks per epoch: as many checks as the selected weights trained, capped at
    # `epochs` whole passes; final_fit_epochs counts whole passes.
    assert final_fit_checks(cfg, 3, checks=4) == 3 and final_fit_checks(cfg, None, 4) == 20
    assert final_fit_checks(cfg.model_copy(update={"epochs": 2}), 11, 4) == 8
    assert final_fit_checks(cfg.model_copy(update={"final_fit_epochs": 2}), 3, 4) == 8
    # A warm run: at least the final fit its start weights called for (in passes), capped too.
    assert final_fit_checks(cfg, 0, 1, start_passes=3) == 3
    assert final_fit_checks(cfg, 4, 1, start_passes=3) == 4
    assert final_fit_checks(cfg, 0, 7, start_passes=0.571) == 4
    assert final_fit_checks(cfg, 0, 1, start_passes=9) == 5
    assert final_fit_checks(cfg, 0, 1, start_passes=None) == 1
    assert final_fit_checks(cfg, 0, 5, start_passes=0.5) == 3  # never shorter than the start's


def test_checks_per_epoch_cut_long_epochs_into_equal_parts():
    from tfrs_models.train import checks_per_epoch, passes

    cfg = TrainConfig(validation_every_examples=500_000, batch_size=1024)
    assert checks_per_epoch(80_000, cfg, 1024) == 1  # MovieLens-sized: once per epoch
    assert checks_per_epoch(500_000, cfg, 1024) == 1
    assert checks_per_epoch(500_001, cfg, 1024) == 2
    assert checks_per_epoch(1_800_000, cfg, 1024) == 4
    assert checks_per_epoch(16_000_000, cfg, 1024) == 8  # large: capped (a check costs ~47 s)
    assert checks_per_epoch(16_000_000, cfg.model_copy(update={"max_checks_per_epoch": 40}),
                            1024) == 32  # fmt: skip
    assert (
        checks_per_epoch(3_000, cfg.model_copy(update={"validation_every_examples": 1}), 1024) == 2
    )
    assert (
        checks_per_epoch(10**7, cfg.model_copy(update={"validation_every_examples": None}), 1024)
        == 1
    )
    assert passes(3, 1) == 3 and passes(3, 4) == 0.75 and passes(8, 4) == 2.0


def test_long_epochs_are_validated_in_checks_resumed_between_them_and_final_fit_alike(
    small_features, tmp_path
):
    """An epoch longer than validation_every_examples is cut into equal checks, each validated
    and checkpointed; a run stopped after a check resumes from it; the final fit trains for as
    many checks (of its own, larger pass) as the selected weights did."""
    examples = FeatureSet.load(small_features.features_dir).records("train")
    cfg = TINY.model_copy(
        update={
            "validation_every_examples": examples // 3 + 1,
            "early_stopping_patience": 0,
            "epochs": 1,
        }  # fmt: skip
    )
    first = train_model(small_features.features_dir, tmp_path, cfg, progress=False).manifest
    steps = examples // cfg.batch_size // 3
    assert first["validation_checks"] == {
        "per_epoch": 3, "steps_each": steps, "run": 3, "best": first["validation_checks"]["best"],
        # No early stopping before 400k examples (the default warm-up) of these short checks.
        "warmup": -(-400_000 // (steps * cfg.batch_size)),
    }  # fmt: skip
    assert [(c["check"], c["epoch"]) for c in first["curve"]] == [(1, 0.333), (2, 0.667), (3, 1.0)]
    assert all("validation_recall@100" in c for c in first["curve"])
    assert first["epochs_run"] == 1.0
    assert first["train_examples_per_second"] > 0
    again = train_model(
        small_features.features_dir, tmp_path,
        cfg.model_copy(update={"epochs": 2, "final_fit": True}), progress=False,
    ).manifest  # fmt: skip
    assert again["resumed_from_epoch"] == 1.0 and again["epochs_run"] == 2.0
    assert [c["check"] for c in again["curve"]] == [4, 5, 6]
    best = again["validation_checks"]["best"]
    final = json.loads(
        (tmp_path.with_name(f"{tmp_path.name}_final") / "train_manifest.json").read_text()
    )
    assert len(final["final_fit"]["curve"]) == best
    assert final["final_fit"]["epochs"] == round(best / 3, 3) == again["best_epoch"]


def test_final_fit_on_features_without_heldout_fails_before_training(small_features, tmp_path):
    from pipelines.errors import PipelineError

    old = copy_features(small_features.features_dir, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["splits"]["heldout"]  # features from before the heldout split
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="train.final_fit needs the heldout split"):
        train_model(old, tmp_path / "model", CFG.model_copy(update={"final_fit": True}))
    assert not (tmp_path / "model").exists()


def test_fewer_train_examples_than_one_batch_is_refused_with_the_fix(small_features, tmp_path):
    from pipelines.errors import PipelineError
    from tfrs_models.train import train_model

    with pytest.raises(PipelineError, match=r"fewer than one batch.*set train.batch_size"):
        train_model(small_features.features_dir, tmp_path / "m", TrainConfig(batch_size=10**6))
    assert not (tmp_path / "m").exists()


def test_catch_up_adam_trains_and_exports_weights_that_owe_no_steps(small_features, tmp_path):
    """The default optimizer in one process (`auto`: catch_up_adam) through training, selection
    and the final fit: every embedding row is paid up before the weights are read (the flush
    callbacks), and the model learns."""
    from tfrs_models.optimizers import CatchUpAdam

    cfg = TrainConfig(epochs=2, embedding_dim=16, id_embedding_dim=16, hidden_units=32,
                      eval_sample=300, learning_rate=0.01)  # fmt: skip
    assert cfg.optimizer == "auto"
    result = train_model(small_features.features_dir, tmp_path / "model", cfg, progress=False)
    optimizer = result.model.optimizer
    assert isinstance(optimizer, CatchUpAdam)
    assert result.manifest["optimizer"] == "catch_up_adam"
    steps = int(optimizer.iterations.numpy())
    owed = {
        v.name: int((steps - optimizer._last_steps[optimizer._index_dict[optimizer._var_key(v)]]
                     .numpy()).max())
        for v in result.model.trainable_variables
        if "embedding" in v.name
    }  # fmt: skip
    assert owed and set(owed.values()) == {0}, owed
    # The final fit's export holds the in-memory (flushed) weights.
    with np.load(Path(result.final_dir) / "weights.npz") as saved:
        exported = {name: saved[name] for name in saved.files}
    ids = result.model.item_tower.id_embedding.embeddings.numpy()
    assert any(np.array_equal(ids, array) for array in exported.values())
    m = result.manifest
    assert m["validation_recall@100"] > 1.1 * m["validation_popularity_recall@100"]


def test_a_warm_start_no_check_beats_ships_its_start_weights_after_their_own_final_fit(
    trained, small_features, tmp_path
):
    """Warm-started from a model trained on the same features, with a margin no check can
    clear: the start weights are validated as check 0 (the same figure their own run selected
    them on), kept as the selected model, patience stops after one check, and the final fit
    trains from them as long as the start model's final fit (`final_fit_passes`): the final fit
    that made the model it started from, on today's data."""
    from tfrs_models.train import final_fit_checks

    source = trained.manifest
    cfg = CFG.model_copy(
        update={"early_stopping_min_delta": 1.0, "early_stopping_patience": 1, "final_fit": True}
    )
    result = train_model(
        small_features.features_dir, tmp_path / "model", cfg,
        warm_start_from=trained.model_dir, progress=False,
    )  # fmt: skip
    m = result.manifest
    assert m["warm_start"]["variables_skipped"] == 0
    start = m["curve"][0]
    assert start["epoch"] == 0 and start["loss"] is None
    selected_on = next(p for p in source["curve"] if p["epoch"] == source["best_epoch"])
    assert start["validation_recall@100"] == pytest.approx(
        selected_on["validation_recall@100"], abs=1e-9
    )
    assert m["best_epoch"] == 0 and m["epochs_run"] == 1 and len(m["curve"]) == 2
    np.testing.assert_allclose(
        np.load(Path(result.model_dir) / "item_embeddings.npy"),
        np.load(Path(trained.model_dir) / "item_embeddings.npy"), atol=1e-6,
    )  # fmt: skip
    final = result.final_manifest
    # A cold run's final fit is as long as its selected training.
    assert source["final_fit_passes"] == max(1, source["validation_checks"]["best"])
    expected = final_fit_checks(cfg, 0, start_passes=source["final_fit_passes"])
    assert expected == min(source["final_fit_passes"], cfg.epochs) > 1  # > 1: tells rules apart
    assert m["final_fit_passes"] == expected
    assert final["final_fit"]["from_epoch"] == 0 and final["final_fit"]["epochs"] == expected
    assert len(final["final_fit"]["curve"]) == expected
