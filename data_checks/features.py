"""Feature checks: read the feature job's output back and prove it is usable and leak-free.

Every user's window splits at two cuts (`pipelines.schema.UserCuts`, read back from
`user_cuts.parquet`): train [window_start, train_end), validation [train_end, eval_cut), eval
[eval_cut, window_end). Rules (Great Expectations, via `data_checks.suite`):
- every history timestamp is strictly before its record's timestamp, for train examples,
  validation and eval queries (no leakage); validation and eval histories end before their
  user's cut (temporal: every eval history ends before eval_start);
- train examples fall before their user's train_end (held-out interactions are never
  examples), validation and eval queries inside their user's period, and no train example of a
  user is at or after that user's validation or eval query (validation and eval labels are
  disjoint from training); temporal: train in [window_start, eval_start), eval in
  [eval_start, window_end), the latest train example before the earliest eval query;
- held-out examples (the final fit's train-format records of the validation and eval
  interactions) have histories strictly before each record and fall at or after their user's
  train_end;
- histories are no longer than H, validation and eval queries have labels;
- row counts agree across independent paths (examples written = interactions counted, queries
  written = queries planned), no split is empty, vocabulary sizes are within [1, what they are
  drawn from], and the logQ sampling probabilities sum to 1.

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
from pipelines import schema
from pipelines.config import FeaturesConfig
from pipelines.errors import PipelineError
from pipelines.formats import files
from pipelines.formats.example_decoder import Example
from pipelines.formats.tfrecord import CorruptRecordError, read_tfrecords
from pipelines.schema import CUTS_FILE, UserCuts

QUERY_SPLITS = ("valid", "eval")
EXAMPLE_SPLITS = ("train", "heldout")

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
        features_dir: the directory holding `manifest.json`, `train/`, `valid/`, `eval/`,
            `heldout/`, `vocab/` and `user_cuts.parquet` (older features without `valid/` and
            the cuts are checked as a temporal split without validation; without `heldout/`,
            the held-out rules have nothing to check).
        cfg: thresholds (`min_train_examples`, `min_eval_queries`); default from the manifest.
        max_records: most records read per split (spread evenly over the shards).
        report_dir: where to write the JSON/HTML report (not written when None).

    Returns:
        The `ValidationReport`; `report.success` says whether training may use the features.
    """
    manifest = files.read_json(files.join(features_dir, schema.FEATURES_MANIFEST))
    cfg = cfg or FeaturesConfig(**manifest["config"])
    window = manifest["window_epoch_s"]
    design = manifest.get("split", {}).get("design", "temporal")
    cuts = (
        UserCuts.read(files.join(features_dir, CUTS_FILE))
        if "split" in manifest
        else UserCuts.uniform(window["eval_start"])
    )
    frames = {
        split: _with_cuts(
            _read_split(manifest["splits"].get(split, {}).get("files", []), max_records,
                        queries=split not in EXAMPLE_SPLITS),
            cuts,
        )
        for split in (*EXAMPLE_SPLITS, *QUERY_SPLITS)
    }  # fmt: skip
    for split in QUERY_SPLITS:
        frames[split] = _with_latest_train(frames[split], frames["train"])
    frames["manifest"] = _manifest_frame(manifest, frames)
    rules = _rules(window, cfg, design)
    results, pages = evaluate(
        frames, rules, _locator(frames, features_dir), suite_prefix="features",
        sample_rows=sample_rows, render=report_dir is not None,
    )  # fmt: skip
    report = ValidationReport(
        source=str(features_dir), format="features",
        interval=(manifest["window"]["window_start"], manifest["window"]["window_end"]),
        now=pd.Timestamp.now(tz="UTC").isoformat(),
        rows=sum(len(frames[s]) for s in (*EXAMPLE_SPLITS, *QUERY_SPLITS)), results=results,
        title="Feature validation", row_noun="records checked",
    )  # fmt: skip
    if report_dir is not None:
        report.write(report_dir, pages)
    log.info("feature validation of %s: %s", features_dir, "passed" if report.success else "FAILED")
    return report


def _read_split(paths: list[str], max_records: int, *, queries: bool) -> pd.DataFrame:
    per_file = max(1, max_records // max(1, len(paths)))
    rows = []
    for path in paths:
        for number, data in enumerate(_records(path)):
            if number >= per_file:
                break
            feature = Example.FromString(data).features.feature
            history = list(feature[schema.HISTORY_TIMESTAMPS].int64_list.value)
            row = {
                "file": path, "record": number,
                "user_id": feature[schema.USER_ID].bytes_list.value[0].decode(),
                "timestamp": feature[schema.TIMESTAMP].int64_list.value[0],
                "latest_history_s": max(history) if history else np.nan,
                "history_len": len(history),
                "history_items_len": len(feature[schema.HISTORY_ITEM_IDS].bytes_list.value),
            }  # fmt: skip
            if queries:
                row["labels"] = len(feature[schema.LABEL_ITEM_IDS].bytes_list.value)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        columns = ["file", "record", "user_id", "timestamp", "latest_history_s", "history_len",
                   "history_items_len"] + (["labels"] if queries else [])  # fmt: skip
        frame = pd.DataFrame(columns=columns)
    frame["history_gap_s"] = frame["timestamp"].astype(float) - frame["latest_history_s"].astype(
        float
    )
    frame["history_lengths_agree"] = frame["history_len"] == frame["history_items_len"]
    return frame


def _records(path: str):
    """The records of one TFRecord file; a damaged file is a `PipelineError` naming it."""
    try:
        yield from read_tfrecords(path)
    except CorruptRecordError as exc:
        raise PipelineError(f"{exc}; rerun the feature step to rewrite the features") from exc


def _with_cuts(frame: pd.DataFrame, cuts: UserCuts) -> pd.DataFrame:
    """Add each record's user cuts and its distances to them (seconds, as floats)."""
    train_end, eval_cut = cuts.lookup(frame["user_id"].to_numpy())
    t = frame["timestamp"].astype(float)
    latest = frame["latest_history_s"].astype(float)
    frame["train_end"], frame["eval_cut"] = train_end, eval_cut
    frame["before_train_end_s"] = train_end - t
    frame["history_before_train_end_s"] = train_end - latest
    frame["history_before_eval_cut_s"] = eval_cut - latest
    frame["in_valid_period"] = (t >= train_end) & (t < eval_cut)
    frame["at_or_after_eval_cut"] = t >= eval_cut
    return frame


def _with_latest_train(queries: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Add the latest train example of each query's user and how long before the query it is."""
    latest = train.groupby("user_id")["timestamp"].max().astype(float)
    queries["latest_train_s"] = queries["user_id"].map(latest).astype(float)
    queries["after_latest_train_s"] = queries["timestamp"].astype(float) - queries["latest_train_s"]
    return queries


def _manifest_frame(manifest: dict, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    counts, vocab = manifest["counts"], manifest["vocabularies"]
    train, evaluation = frames["train"], frames["eval"]
    split = manifest.get("split", {})
    return pd.DataFrame([{
        "train_examples": counts["train_examples"],
        "train_interactions_counted": counts["train_interactions_counted"],
        "eval_queries": counts["eval_queries"],
        "eval_queries_planned": split.get("eval_queries", counts["eval_queries"]),
        "valid_queries": counts.get("valid_queries", 0),
        "valid_queries_planned": split.get("validation_queries", counts.get("valid_queries", 0)),
        "catalog_items": counts["catalog_items"],
        "train_users": counts["train_users"],
        "item_vocab_size": vocab["item_id"]["size"],
        "user_vocab_size": vocab["user_id"]["size"],
        "sampling_probability_sum": manifest["sampling_probability_sum"],
        "latest_train_s": float(train["timestamp"].max()) if len(train) else np.nan,
        "earliest_eval_s": float(evaluation["timestamp"].min()) if len(evaluation) else np.nan,
    }])  # fmt: skip


def _rules(window: dict, cfg: FeaturesConfig, design: str) -> list[Rule]:
    return [
        *_train_rules(window, cfg, design),
        *_heldout_rules(),
        *_query_rules(window, design),
        *_manifest_rules(cfg, design),
    ]


def _train_rules(window: dict, cfg: FeaturesConfig, design: str) -> list[Rule]:
    import great_expectations.expectations as gxe

    start = float(window["window_start"])
    # Temporal: every train example precedes eval_start; holdout: the user's own cut decides.
    limit, name = (
        (float(window["eval_start"]), "eval_start")
        if design == "temporal"
        else (float(window["window_end"]), "window_end")
    )
    h = cfg.history_length
    return [
        Rule("train", schema.HISTORY_TIMESTAMPS,
             "history timestamps must be strictly before the example's timestamp (no leakage)",
             gxe.ExpectColumnValuesToBeBetween(column="history_gap_s", min_value=1.0)),
        Rule("train", "timestamp", f"train examples must fall in [window_start, {name})",
             gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=start,
                                               max_value=limit, strict_max=True)),
        Rule("train", "timestamp",
             "train examples must precede their user's train_end in user_cuts.parquet "
             "(held-out validation and eval interactions are never examples)",
             gxe.ExpectColumnValuesToBeBetween(column="before_train_end_s", min_value=1.0)),
        Rule("train", schema.HISTORY_ITEM_IDS, f"histories must hold at most {h} items",
             gxe.ExpectColumnValuesToBeBetween(column="history_len", min_value=0, max_value=h)),
        Rule("train", schema.HISTORY_ITEM_IDS, "history ids and timestamps must have equal lengths",
             gxe.ExpectColumnValuesToBeInSet(column="history_lengths_agree", value_set=[True])),
    ]  # fmt: skip


def _heldout_rules() -> list[Rule]:
    import great_expectations.expectations as gxe

    return [
        Rule("heldout", schema.HISTORY_TIMESTAMPS,
             "held-out example histories must be strictly before their record's timestamp "
             "(no leakage)",
             gxe.ExpectColumnValuesToBeBetween(column="history_gap_s", min_value=1.0)),
        Rule("heldout", "timestamp",
             "held-out examples must fall at or after their user's train_end in "
             "user_cuts.parquet (they are the validation and eval interactions, never "
             "training ones)",
             gxe.ExpectColumnValuesToBeBetween(column="before_train_end_s", max_value=0.0)),
    ]  # fmt: skip


def _query_rules(window: dict, design: str) -> list[Rule]:
    import great_expectations.expectations as gxe

    split, end = float(window["eval_start"]), float(window["window_end"])
    rules = []
    for table, noun in (("valid", "validation"), ("eval", "eval")):
        rules += [
            Rule(table, schema.HISTORY_TIMESTAMPS,
                 f"{noun}-query histories must be strictly before the query's timestamp "
                 "(no leakage)",
                 gxe.ExpectColumnValuesToBeBetween(column="history_gap_s", min_value=1.0)),
            Rule(table, schema.LABEL_ITEM_IDS, f"every {noun} query must have at least one label",
                 gxe.ExpectColumnValuesToBeBetween(column="labels", min_value=1)),
            Rule(table, "timestamp",
                 f"no train example of a user may be at or after the user's {noun} query "
                 f"({noun} labels are disjoint from training)",
                 gxe.ExpectColumnValuesToBeBetween(column="after_latest_train_s",
                                                   min_value=1.0)),
        ]  # fmt: skip
    rules += [
        Rule("valid", schema.HISTORY_TIMESTAMPS,
             "validation-query histories must end before the user's train_end (no leakage from "
             "the held-out validation interactions)",
             gxe.ExpectColumnValuesToBeBetween(column="history_before_train_end_s",
                                               min_value=1.0)),
        Rule("valid", "timestamp",
             "validation queries must fall in their user's [train_end, eval_cut) (inside the "
             "training window, never in the eval labels)",
             gxe.ExpectColumnValuesToBeInSet(column="in_valid_period", value_set=[True])),
        Rule("eval", schema.HISTORY_TIMESTAMPS,
             "eval-query histories must end before eval_start (no leakage from the eval period)"
             if design == "temporal" else
             "eval-query histories must end before the user's eval_cut (no leakage from the "
             "held-out eval interactions)",
             gxe.ExpectColumnValuesToBeBetween(column="history_before_eval_cut_s",
                                               min_value=1.0)),
        Rule("eval", "timestamp", "eval queries must fall in [eval_start, window_end)",
             gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=split,
                                               max_value=end, strict_max=True)),
        Rule("eval", "timestamp", "eval queries must start at or after their user's eval_cut",
             gxe.ExpectColumnValuesToBeInSet(column="at_or_after_eval_cut", value_set=[True])),
    ]  # fmt: skip
    return rules


def _manifest_rules(cfg: FeaturesConfig, design: str) -> list[Rule]:
    import great_expectations.expectations as gxe

    rules = [
        Rule("manifest", "train", f"the train split must hold at least {cfg.min_train_examples} examples",
             gxe.ExpectColumnValuesToBeBetween(column="train_examples", min_value=cfg.min_train_examples)),
        Rule("manifest", "eval", f"the eval split must hold at least {cfg.min_eval_queries} queries",
             gxe.ExpectColumnValuesToBeBetween(column="eval_queries", min_value=cfg.min_eval_queries)),
        Rule("manifest", "train",
             "train examples written must equal training-period interactions counted",
             gxe.ExpectColumnPairValuesToBeEqual(column_A="train_examples",
                                                 column_B="train_interactions_counted")),
        Rule("manifest", "eval", "eval queries written must equal eval queries planned (split)",
             gxe.ExpectColumnPairValuesToBeEqual(column_A="eval_queries",
                                                 column_B="eval_queries_planned")),
        Rule("manifest", "valid",
             "validation queries written must equal validation queries planned (split)",
             gxe.ExpectColumnPairValuesToBeEqual(column_A="valid_queries",
                                                 column_B="valid_queries_planned")),
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
    if design == "temporal":  # holdout: per-user, by the query rules above
        rules.insert(3, Rule(
            "manifest", "train, eval", "the latest train example must precede the earliest eval query",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="earliest_eval_s",
                                                        column_B="latest_train_s")))  # fmt: skip
    return rules


def _locator(frames: dict[str, pd.DataFrame], features_dir: str):
    def locate(rule: Rule, index: list, failed: bool) -> tuple[str, tuple[str, ...]]:
        if rule.table == "manifest":
            return str(files.join(features_dir, schema.FEATURES_MANIFEST)), (
                _manifest_sample(frames["manifest"]) if failed else ()
            )
        frame = frames[rule.table]
        if not (failed and index):
            return str(files.join(features_dir, rule.table)), ()
        rows = frame.loc[index]
        names = rows["file"].unique()
        file = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more files)"
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
