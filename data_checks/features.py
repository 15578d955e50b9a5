"""Feature checks: read the feature job's output back and prove it is usable and leak-free.

Rules (Great Expectations, via `data_checks.suite`):
- every history timestamp is strictly before its example's timestamp (no leakage), and every
  eval query's history is strictly before the eval period;
- train examples fall in [window_start, eval_start), eval queries in [eval_start, window_end),
  and the latest train example precedes the earliest eval query (disjoint, ordered splits);
- histories are no longer than H, eval queries have labels;
- row counts agree across independent paths (examples written = interactions counted), no
  split is empty, vocabulary sizes are within [1, what they are drawn from], and the logQ
  sampling probabilities sum to 1.

Records are read from the TFRecord files themselves (all of them, or an even per-shard slice
when there are more than `max_records`), so the checks see what training will see.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.report import ValidationReport
from data_checks.suite import Rule, evaluate
from pipelines.config import FeaturesConfig
from pipelines.features import io
from pipelines.features.encoding import Example
from pipelines.features.tfrecord import read_tfrecords

log = logging.getLogger(__name__)


def validate_features(
    features_dir: str,
    cfg: FeaturesConfig | None = None,
    *,
    max_records: int = 500_000,
    sample_rows: int = 5,
    report_dir: str | Path | None = None,
) -> ValidationReport:
    """Check a feature job's output directory.

    Args:
        features_dir: the directory holding `manifest.json`, `train/`, `eval/`, `vocab/`.
        cfg: thresholds (`min_train_examples`, `min_eval_queries`); default from the manifest.
        max_records: most records read per split (spread evenly over the shards).
        report_dir: where to write the JSON/HTML report (not written when None).

    Returns:
        The `ValidationReport`; `report.success` says whether training may use the features.
    """
    manifest = io.read_json(io.join(features_dir, "manifest.json"))
    cfg = cfg or FeaturesConfig(**manifest["config"])
    window = manifest["window_epoch_s"]
    frames = {
        "train": _read_split(manifest["splits"]["train"]["files"], max_records, eval_split=False),
        "eval": _read_split(manifest["splits"]["eval"]["files"], max_records, eval_split=True),
    }
    frames["manifest"] = _manifest_frame(manifest, frames)
    rules = _rules(window, cfg)
    results, pages = evaluate(
        frames, rules, _locator(frames, features_dir), suite_prefix="features",
        sample_rows=sample_rows, render=report_dir is not None,
    )  # fmt: skip
    report = ValidationReport(
        source=str(features_dir), format="features",
        interval=(manifest["window"]["window_start"], manifest["window"]["window_end"]),
        now=pd.Timestamp.now(tz="UTC").isoformat(),
        rows=len(frames["train"]) + len(frames["eval"]), results=results,
        title="Feature validation", row_noun="records checked",
    )  # fmt: skip
    if report_dir is not None:
        report.write(report_dir, pages)
    log.info("feature validation of %s: %s", features_dir, "passed" if report.success else "FAILED")
    return report


def _read_split(files: list[str], max_records: int, *, eval_split: bool) -> pd.DataFrame:
    per_file = max(1, max_records // max(1, len(files)))
    rows = []
    for path in files:
        for number, data in enumerate(read_tfrecords(path)):
            if number >= per_file:
                break
            feature = Example.FromString(data).features.feature
            history = list(feature["history_timestamps"].int64_list.value)
            row = {
                "file": path, "record": number,
                "user_id": feature["user_id"].bytes_list.value[0].decode(),
                "timestamp": feature["timestamp"].int64_list.value[0],
                "latest_history_s": max(history) if history else np.nan,
                "history_len": len(history),
                "history_items_len": len(feature["history_item_ids"].bytes_list.value),
            }  # fmt: skip
            if eval_split:
                row["labels"] = len(feature["label_item_ids"].bytes_list.value)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        columns = ["file", "record", "user_id", "timestamp", "latest_history_s", "history_len",
                   "history_items_len"] + (["labels"] if eval_split else [])  # fmt: skip
        frame = pd.DataFrame(columns=columns)
    frame["history_gap_s"] = frame["timestamp"].astype(float) - frame["latest_history_s"].astype(
        float
    )
    frame["history_lengths_agree"] = frame["history_len"] == frame["history_items_len"]
    return frame


def _manifest_frame(manifest: dict, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    counts, vocab = manifest["counts"], manifest["vocabularies"]
    train, evaluation = frames["train"], frames["eval"]
    return pd.DataFrame([{
        "train_examples": counts["train_examples"],
        "train_interactions_counted": counts["train_interactions_counted"],
        "eval_queries": counts["eval_queries"],
        "catalog_items": counts["catalog_items"],
        "train_users": counts["train_users"],
        "item_vocab_size": vocab["item_id"]["size"],
        "user_vocab_size": vocab["user_id"]["size"],
        "sampling_probability_sum": manifest["sampling_probability_sum"],
        "latest_train_s": float(train["timestamp"].max()) if len(train) else np.nan,
        "earliest_eval_s": float(evaluation["timestamp"].min()) if len(evaluation) else np.nan,
    }])  # fmt: skip


def _rules(window: dict, cfg: FeaturesConfig) -> list[Rule]:
    import great_expectations.expectations as gxe

    start, split, end = (float(window[k]) for k in ("window_start", "eval_start", "window_end"))
    h = cfg.history_length
    return [
        Rule("train", "history_timestamps",
             "history timestamps must be strictly before the example's timestamp (no leakage)",
             gxe.ExpectColumnValuesToBeBetween(column="history_gap_s", min_value=1.0)),
        Rule("train", "timestamp", "train examples must fall in [window_start, eval_start)",
             gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=start,
                                               max_value=split, strict_max=True)),
        Rule("train", "history_item_ids", f"histories must hold at most {h} items",
             gxe.ExpectColumnValuesToBeBetween(column="history_len", min_value=0, max_value=h)),
        Rule("train", "history_item_ids", "history ids and timestamps must have equal lengths",
             gxe.ExpectColumnValuesToBeInSet(column="history_lengths_agree", value_set=[True])),
        Rule("eval", "history_timestamps",
             "eval-query histories must end before eval_start (no leakage from the eval period)",
             gxe.ExpectColumnValuesToBeBetween(column="latest_history_s", max_value=split,
                                               strict_max=True)),
        Rule("eval", "timestamp", "eval queries must fall in [eval_start, window_end)",
             gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=split,
                                               max_value=end, strict_max=True)),
        Rule("eval", "label_item_ids", "every eval query must have at least one label",
             gxe.ExpectColumnValuesToBeBetween(column="labels", min_value=1)),
        Rule("manifest", "train", f"the train split must hold at least {cfg.min_train_examples} examples",
             gxe.ExpectColumnValuesToBeBetween(column="train_examples", min_value=cfg.min_train_examples)),
        Rule("manifest", "eval", f"the eval split must hold at least {cfg.min_eval_queries} queries",
             gxe.ExpectColumnValuesToBeBetween(column="eval_queries", min_value=cfg.min_eval_queries)),
        Rule("manifest", "train",
             "train examples written must equal training-period interactions counted",
             gxe.ExpectColumnPairValuesToBeEqual(column_A="train_examples",
                                                 column_B="train_interactions_counted")),
        Rule("manifest", "train, eval", "the latest train example must precede the earliest eval query",
             gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="earliest_eval_s",
                                                         column_B="latest_train_s")),
        Rule("manifest", "vocab/item_id.tsv", "item vocabulary size must be within [1, catalog size]",
             gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="catalog_items",
                                                         column_B="item_vocab_size", or_equal=True)),
        Rule("manifest", "vocab/item_id.tsv", "item vocabulary must not be empty",
             gxe.ExpectColumnValuesToBeBetween(column="item_vocab_size", min_value=1)),
        Rule("manifest", "vocab/user_id.tsv", "user vocabulary size must be within [1, train users]",
             gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="train_users",
                                                         column_B="user_vocab_size", or_equal=True)),
        Rule("manifest", "vocab/user_id.tsv", "user vocabulary must not be empty",
             gxe.ExpectColumnValuesToBeBetween(column="user_vocab_size", min_value=1)),
        Rule("manifest", "catalog.parquet", "logQ sampling probabilities must sum to 1",
             gxe.ExpectColumnValuesToBeBetween(column="sampling_probability_sum",
                                               min_value=1 - 1e-6, max_value=1 + 1e-6)),
    ]  # fmt: skip


def _locator(frames: dict[str, pd.DataFrame], features_dir: str):
    def locate(rule: Rule, index: list, failed: bool) -> tuple[str, tuple[str, ...]]:
        if rule.table == "manifest":
            return str(io.join(features_dir, "manifest.json")), (
                _manifest_sample(frames["manifest"]) if failed else ()
            )
        frame = frames[rule.table]
        if not (failed and index):
            return str(io.join(features_dir, rule.table)), ()
        rows = frame.loc[index]
        files = rows["file"].unique()
        file = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)"
        samples = tuple(
            f"{Path(r.file).name} record {r.record}: user_id={r.user_id!r} timestamp={r.timestamp} "
            f"latest history={_int_text(r.latest_history_s)} history length={r.history_len}"
            for r in rows.itertuples()
        )
        return file, samples

    return locate


def _manifest_sample(frame: pd.DataFrame) -> tuple[str, ...]:
    row = frame.iloc[0]
    return (", ".join(f"{k}={_int_text(v)}" for k, v in row.items()),)


def _int_text(value) -> str:
    if pd.isna(value):
        return "none"
    return (
        f"{value:.6g}"
        if isinstance(value, float) and not float(value).is_integer()
        else str(int(value))
    )
