"""The config's sections: one pydantic model per step, every field with its type, bounds,
choices and meaning; the fields on the DAG's trigger form also carry a form section."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Every enum of the config, spelled once; the trigger form and the CLI read their choices here.
SourceFormat = Literal["auto", "contract", "ml-100k", "ml-1m", "ml-latest"]
Preset = Literal["small", "medium", "large"]
EvalDesign = Literal["auto", "temporal", "holdout"]
HistoryPooling = Literal["mean", "attention"]
Weighting = Literal["none", "weight", "threshold"]
Optimizer = Literal["auto", "adam", "catch_up_adam", "lazy_adam", "adagrad", "sgd"]
DirectRunningMode = Literal["in_memory", "multi_threading", "multi_processing"]
FeatureEngine = Literal["beam", "local"]  # the feature job's runner: Beam or the reference
PromotionMode = Literal["auto", "approve", "approve_if_marginal"]


# The trigger form's sections, in the order the form shows them.
FORM_SECTIONS = ("Data", "Training", "Gate and promotion", "Safety")


def _form(section: str, title: str, name: str | None = None) -> dict[str, Any]:
    """`Field` keywords that put a field on the DAG's trigger form.

    Args:
        section: one of `FORM_SECTIONS`.
        title: the label a person reads (with the unit when the value has one).
        name: the Param and CLI flag name when not the field's own (`promotion.mode` is
            `promotion_mode`: `mode` alone says nothing among the other Params and flags).
    """
    if section not in FORM_SECTIONS:
        raise ValueError(f"form section {section!r} is not one of {FORM_SECTIONS}")
    extra = {"section": section, **({"name": name} if name else {})}
    return {"json_schema_extra": extra, "title": title}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the input lives and where artifacts go."""

    source: str | None = Field(
        None,
        description="Directory (or fsspec URL) of the raw data; unset = the embedded synthetic "
        "world (synthetic.preset).",
        **_form("Data", "Data source"),
    )
    format: SourceFormat = Field(
        "auto",
        description="How the source's files are laid out: 'contract' = this pipeline's "
        "interactions/items/users tables; 'ml-100k', 'ml-1m', 'ml-latest' = a MovieLens "
        "download as published; 'auto' detects which from the files.",
        **_form("Data", "Source format"),
    )
    artifact_root: str = Field("artifacts", description="Root for runs/ and registry/.")


class SyntheticConfig(_Section):
    """The embedded synthetic world (see pipelines.synthetic)."""

    preset: Preset = Field(
        "small",
        description="Size of the embedded synthetic world (users, items, days); used only when "
        "the run has no source at all.",
        **_form("Data", "Synthetic world size"),
    )
    seed: int = Field(7, ge=0, le=2**32 - 1, description="Random seed of the synthetic world.")
    days: int | None = Field(None, ge=1, le=730, description="Days to simulate; None = preset's.")
    start_date: dt.date = Field(dt.date(2026, 1, 1), description="First simulated day (UTC).")


class ChecksConfig(_Section):
    """Thresholds of the raw-data checks (data_checks.raw)."""

    max_duplicate_rate: float = Field(0.001, ge=0.0, le=1.0)
    max_unknown_item_rate: float = Field(0.001, ge=0.0, le=1.0)
    volume_min_ratio: float = Field(
        0.25, gt=0.0, le=1.0, description="Partition rows / trailing median must be >= this."
    )
    volume_max_ratio: float = Field(
        4.0, ge=1.0, le=1000.0, description="Partition rows / trailing median must be <= this."
    )
    volume_history_partitions: int = Field(7, ge=1, le=366)
    volume_min_history: int = Field(
        3, ge=1, le=366, description="Partitions needed before the volume band applies."
    )
    max_future_skew_seconds: int = Field(300, ge=0, le=86_400)
    min_timestamp: dt.date = Field(
        dt.date(1995, 1, 1),
        description="Interactions before this UTC date are implausible (MovieLens starts in "
        "1995; a 1900 timestamp is a parse or default-value bug).",
    )
    weight_min: float = Field(0.0, ge=-1e9, le=1e9)
    weight_max: float = Field(1e6, ge=-1e9, le=1e9)
    id_pattern: str = Field(
        r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}\Z",
        description="Ids must match this whole (checked as a full match: a trailing newline "
        "never passes, whichever anchor the pattern ends with).",
    )
    sample_rows: int = Field(5, ge=1, le=100, description="Failing rows shown per check.")

    @model_validator(mode="after")
    def _weight_range_ordered(self) -> ChecksConfig:
        if self.weight_min > self.weight_max:
            raise ValueError(
                f"checks.weight_min ({self.weight_min}) must be <= checks.weight_max ({self.weight_max})"
            )
        return self


class FeaturesConfig(_Section):
    """The Beam feature job (pipelines.features)."""

    history_length: int = Field(
        100,
        ge=1,
        le=500,
        description="Items kept in each point-in-time user history (100 vs 20 on the real-data "
        "bench: users with hundreds of ratings keep their taste in the query).",
    )
    as_of: dt.datetime | None = Field(
        None,
        **_form("Data", "As of (UTC)"),
        description="Point in time the run sees (naive = UTC): interactions at or after it and "
        "items created at or after it are left out, so the window ends there. Backfill runs set "
        "it to their logical date; empty = everything in the source.",
    )
    window_days: int | None = Field(
        None,
        ge=1,
        le=3650,
        description="Days of data used for training, ending at the data's end (or at as_of); "
        "empty = all the data.",
        **_form("Data", "Training window (days)"),
    )
    eval_days: int | None = Field(
        None,
        ge=1,
        le=365,
        description="Days at the end of the window held out as the evaluation period; empty = "
        "the period holding the last eval_fraction (10%) of events.",
        **_form("Data", "Eval period (days)"),
    )
    eval_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="When eval_days is None: the eval period starts at the UTC midnight before "
        "the timestamp that leaves this share of events after it.",
    )
    user_min_count: int = Field(1, ge=1, le=1_000_000, description="Vocabulary min count.")
    item_min_count: int = Field(1, ge=1, le=1_000_000, description="Vocabulary min count.")
    token_min_count: int = Field(2, ge=1, le=1_000_000, description="Title-token min count.")
    oov_buckets: int = Field(16, ge=1, le=1_000_000, description="Hash buckets for unseen ids.")
    logq_smoothing: float = Field(
        1.0, gt=0.0, le=1e6, description="Additive smoothing of item counts for logQ probabilities."
    )
    shards: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="User shards = TFRecord files per split = units of the per-user work. "
        "None = one per 250,000 events of the snapshot, at least 8 (a shard's events and "
        "records are in one worker's memory at once: 250k events take about 1.2 GiB). The "
        "count is part of the output: the same data and config give the same files on every "
        "runner.",
    )
    min_train_examples: int = Field(1, ge=1, description="Feature check: fewest train examples.")
    min_eval_queries: int = Field(1, ge=1, description="Feature check: fewest eval queries.")
    eval_design: EvalDesign = Field(
        "auto",
        description="How the eval queries are drawn. 'temporal': users active in the last "
        "period (eval_days / eval_fraction). 'holdout': every user with interactions at two or "
        "more distinct times holds out the last holdout_fraction of them. 'auto': temporal when "
        "its period holds at least min_warm_eval_queries warm queries, else holdout.",
    )
    min_warm_eval_queries: int = Field(
        300,
        ge=0,
        le=10_000_000,
        description="eval_design='auto': fewest warm queries (eval users with train-window "
        "interactions) the temporal eval period must hold to be used.",
    )
    holdout_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Share of a user's interactions held out, counted from the latest (at least "
        "one; the user keeps at least one earlier): the holdout eval labels and the validation "
        "labels.",
    )
    validation_user_fraction: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Share of users with train-window interactions at two or more distinct "
        "times whose latest ones become validation queries (early stopping, best epoch), "
        "drawn by a stable hash of the user id.",
    )
    min_validation_queries: int = Field(
        500,
        ge=0,
        le=10_000_000,
        description="At least this many validation users when that many are eligible (beats "
        "validation_user_fraction on small data).",
    )


class TrainConfig(_Section):
    """The two-tower model and its training (tfrs_models)."""

    embedding_dim: int = Field(
        128,
        ge=4,
        le=1024,
        description="Dimensions of the user and item vectors both towers output; the index "
        "grows in proportion. (128 vs 64/256 on medium: Recall@100 within run-to-run noise, "
        "cold-item recall higher, same training speed.)",
        **_form("Training", "Embedding size (dimensions)"),
    )
    id_embedding_dim: int = Field(64, ge=4, le=1024, description="User/item id embedding size.")
    hidden_units: int = Field(512, ge=8, le=8192, description="Width of each tower's MLP layer.")
    use_history: bool = Field(True, description="History encoder in the query tower.")
    history_pooling: HistoryPooling = "mean"
    recency_half_life_days: float = Field(
        3650.0,
        gt=0.0,
        le=3650.0,
        description="History items lose half their weight per this age difference to the "
        "newest one (3650 = a near-equal mean; 1 and 0.01 days scored lower on the real-data "
        "bench).",
    )
    use_content: bool = Field(
        True, description="Title tokens, genres, popularity in the item tower."
    )
    use_user_features: bool = Field(
        False,
        description="User categorical features and hour / day-of-week context in the query tower "
        "(off: on the real-data bench they cost 0.02-0.1 NDCG@10 on MovieLens latest-small and "
        "gained nothing on ML-100K, whose users have age, gender and occupation).",
    )
    use_user_id: bool = Field(
        True,
        description="User id embedding in the query tower (+0.01 Recall@100 on MovieLens "
        "latest-small; same recall on synthetic medium, epochs ~1/3 slower).",
    )
    item_id_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Training only: share of candidate items whose id (and popularity bucket) is "
        "replaced by its OOV hash bucket, so the content path learns to embed cold items "
        "(0.2 cost a quarter of NDCG@10 on MovieLens latest-small).",
    )
    history_dropout: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Training only: share of history items hidden from the query tower (a "
        "denoising regulariser, as dropout is for item-item models); serving sees them all.",
    )
    item_age_bias: bool = Field(
        True,
        description="Learned novelty bonus on the item's age at query time (sum of decays with "
        "half-lives 0.5-32 days); needs the catalog's created_at, exported as extra dimensions.",
    )
    item_bias: bool = Field(
        True,
        description="Learned per-item score bias outside the L2 normalisation (score = cos / "
        "temperature + b_i); exported as one extra dimension of both towers.",
    )
    user_feature_buckets: int = Field(
        1000, ge=2, le=1_000_000, description="Hash bins per feature."
    )
    temperature: float = Field(
        0.2, gt=0.0, le=10.0, description="Softmax temperature (lower = sharper; 0.05 overfit)."
    )
    logq_correction: bool = Field(True, description="Subtract log sampling probability.")
    remove_accidental_hits: bool = True
    mixed_negatives: int = Field(
        0, ge=0, le=100_000, description="Extra uniform catalog negatives."
    )
    hard_negatives: int | None = Field(None, ge=1, le=100_000, description="Keep top-k negatives.")
    weighting: Weighting = Field(
        "none",
        description="How an interaction's weight (a rating; 3.0 for a synthetic purchase) enters "
        "training: 'none' = every train example counts once; 'threshold' = train examples whose "
        "weight is below min_weight are dropped, the rest count once; 'weight' = each example's "
        "loss term is scaled by its weight (negatives count 0; scaled to a mean of 1 per batch), "
        "after the min_weight cut when one is set. Histories, validation and eval labels keep "
        "every interaction: a low rating still says what the user watched, and serving builds "
        "histories from every event. (On the real-data bench neither 'weight' nor 'threshold' "
        "won across the MovieLens datasets by more than run-to-run noise: bench/RESULTS.md.)",
    )
    min_weight: float | None = Field(
        None,
        ge=-1e9,
        le=1e9,
        description="With weighting 'threshold' (required) or 'weight': train examples (and the "
        "final fit's held-out examples) with a weight below this are dropped, e.g. 4.0 keeps "
        "MovieLens ratings of 4 and 5.",
    )
    optimizer: Optimizer = Field(
        "auto",
        description="auto | adam | catch_up_adam | lazy_adam | adagrad | sgd. auto = "
        "catch_up_adam in one process (distribution none), adam under a strategy (mirrored, "
        "multi_worker, workers > 1). Adam's sparse update moves every embedding row on every "
        "step: 290-500 ms per step at 1M items against about 2 ms for the two below "
        "(bench/bench_optimizer.py). catch_up_adam: Adam's result (equal to float32 rounding "
        "in tests) at the cost of the rows a batch touches, by paying each row's skipped steps "
        "in closed form before the forward pass reads them, and all of them before weights are "
        "read; under a strategy it can pay them only after the forward pass (a stale gradient "
        "for rare rows: Recall@100 0.402 against 0.457 for Adam on ML-100K), hence adam there "
        "(an explicit catch_up_adam there is logged as a warning). "
        "On the real-data bench its Recall@100 matched Adam's within run-to-run noise (three "
        "seeds on each MovieLens dump); a fit step is 1.2x faster on medium and 3.2x on large "
        "(bench/RESULTS.md). lazy_adam: moves only the touched rows "
        "and drops the others' momentum steps (below Adam on ML-100K).",
    )
    learning_rate: float = Field(
        0.003,
        gt=0.0,
        le=10.0,
        description="Step size of the optimizer (Adam by default); larger learns faster but "
        "less stably.",
        **_form("Training", "Learning rate"),
    )
    batch_size: int = Field(
        1024,
        ge=2,
        le=1_000_000,
        description="Training examples per step; every other example's item in the batch is a "
        "negative for this one (in-batch negatives = batch size - 1).",
        **_form("Training", "Batch size (examples)"),
    )
    epochs: int = Field(
        30,
        ge=1,
        le=1000,
        description="Most passes over the training data; early stopping on the validation "
        "queries usually ends training sooner.",
        **_form("Training", "Max epochs"),
    )
    shuffle_buffer: int = Field(
        20_000, ge=1, le=10_000_000, description="Records; train files are already mixed."
    )
    validation_every_examples: int | None = Field(
        250_000,
        ge=1,
        le=1_000_000_000,
        description="Validate (select, checkpoint, count patience) after every this many train "
        "examples: an epoch longer than this is cut into equal checks, e.g. 7 on synthetic "
        "medium's 1.65M examples, where eval recall is as high after 1/8 of a pass as after "
        "one; shorter epochs (MovieLens) are checked once each. None = once per epoch. "
        "epochs and final_fit_epochs still count whole passes.",
    )
    max_checks_per_epoch: int = Field(
        8,
        ge=1,
        le=1000,
        description="At most this many validation checks per epoch (longer checks than "
        "validation_every_examples beyond it): a check scores eval_sample queries against the "
        "whole catalog, about 47 s for 2,000 queries x 1M items on 2 cores, so large's 16M "
        "examples would otherwise pay 66 checks (~50 min) per pass.",
    )
    early_stopping_patience: int = Field(
        3,
        ge=0,
        le=100,
        description="Validation checks (epochs, or parts of one: validation_every_examples) "
        "without validation recall gain before stopping (never before the warm-up: "
        "early_stopping_warmup_examples); 0 = off.",
    )
    early_stopping_min_delta: float = Field(
        0.005,
        ge=0.0,
        le=1.0,
        description="A check counts as a validation gain (and is selected) only when its "
        "Recall@eval_k beats the best so far by more than this. On synthetic medium validation "
        "recall creeps up by 0.001-0.004 per eighth of a pass after the first quarter while "
        "eval recall falls, and each such gain bought patience more checks; on the MovieLens "
        "latest-small curves 0.005 selects and stops at the same epochs as 0 (0.01 does not).",
    )
    early_stopping_warmup_examples: int = Field(
        400_000,
        ge=0,
        le=10**12,
        description="Early stopping cannot end a cold-started run before it has trained on this "
        "many examples (the check that reaches it may; selection is unchanged). Fresh weights "
        "often stall or dip on validation over the second to fifth pass of a small dataset "
        "before climbing again: with patience 3, one ML-latest-small 2018 run stopped at pass 5 "
        "on Recall@100 0.265 where the others reached 0.29. 400k is 9-10 passes of the "
        "real-data bench's MovieLens training splits (43-50k examples), about 7 of synthetic "
        "small, and 2 of synthetic medium's checks, where patience alone runs longer. A warm "
        "start is exempt (its start weights are a trained model, check 0). 0 = no warm-up.",
    )
    eval_k: int = Field(100, ge=1, le=10_000, description="K of the per-epoch quick Recall@K.")
    eval_sample: int = Field(2000, ge=1, le=10_000_000, description="Eval queries per quick eval.")
    final_fit: bool = Field(
        True,
        description="(On: Recall@100 0.29 vs 0.24 without it on MovieLens latest-small.) After the best epoch is selected on the validation queries, continue from "
        "its weights (and optimizer state) on the train and held-out examples (the validation "
        "and eval interactions: every user's most recent data) and ship that model "
        "(<run>/model_final). The evaluation and the gate still measure the selected weights "
        "(<run>/model): the final fit trains on the eval labels, so its own quality cannot be "
        "measured on them. No early stopping in it: nothing is left to validate on.",
    )
    final_fit_epochs: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Epochs of the final fit (1-1000; only with final_fit). None = as many as "
        "the selected best epoch (a warm run: at least its start model's final fit), at most "
        "`epochs`.",
    )
    distribution: Literal["none", "mirrored", "multi_worker"] = Field(
        "none",
        description="tf.distribute strategy: none = one process, no strategy; mirrored = the "
        "local devices (MirroredStrategy); multi_worker = one process per worker, synchronous, "
        "cluster from TF_CONFIG (MultiWorkerMirroredStrategy; start the train step on every "
        "worker, the chief writes). batch_size is per replica (each replica's in-batch "
        "negatives are its own batch); the global batch is batch_size x replicas.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Training processes on this host (1-64). Above 1 the train step starts that "
        "many multi_worker processes on 127.0.0.1 (each with cores / workers TensorFlow "
        "threads), waits for them and ships the chief's export; distribution must then be "
        "none or multi_worker. On several hosts leave this at 1, set distribution "
        "multi_worker and start `python -m tfrs_models.distributed` on each with its TF_CONFIG.",
    )
    seed: int = Field(13, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _workers_are_multi_worker(self) -> TrainConfig:
        if self.workers > 1 and self.distribution == "mirrored":
            raise ValueError(
                f"train.workers {self.workers} trains with multi_worker processes: set "
                "train.distribution to multi_worker (or none), or train.workers to 1 for mirrored"
            )
        return self

    @model_validator(mode="after")
    def _min_weight_has_a_use(self) -> TrainConfig:
        if self.weighting == "threshold" and self.min_weight is None:
            raise ValueError(
                "train.weighting 'threshold' needs train.min_weight (e.g. 4.0 keeps ratings of 4 "
                "and 5)"
            )
        if self.weighting == "none" and self.min_weight is not None:
            raise ValueError(
                f"train.min_weight ({self.min_weight}) is ignored with train.weighting 'none': set "
                "train.weighting to 'threshold' or 'weight', or unset train.min_weight"
            )
        return self


class IndexConfig(_Section):
    """The ScaNN index over the item embeddings (scann_index)."""

    k: int = Field(100, ge=1, le=10_000, description="Neighbours the index is tuned for.")
    target_recall: float = Field(
        0.95, gt=0.0, le=1.0, description="ANN recall@k vs exact search the tuning must reach."
    )
    tune_margin: float = Field(
        0.005,
        ge=0.0,
        le=0.2,
        description="Tuning aims at target_recall + this on its sample, so unseen queries "
        "still reach the target.",
    )
    brute_force_max_items: int = Field(
        20_000, ge=0, le=100_000_000, description="Catalogs up to this size use exact search."
    )
    num_leaves: int | None = Field(
        None, ge=2, le=1_000_000, description="Tree partitions; None = about sqrt(items)."
    )
    dimensions_per_block: int = Field(
        1,
        ge=1,
        le=16,
        description="Asymmetric hashing block size (dimensions per 4-bit code). 1, not 2: on "
        "1M x 64 clustered unit vectors (bench/bench_index.py) its finer scores need about a "
        "third of the reordering for the same recall@10 (0.95 at 2 leaves: 130 vs 400 "
        "candidates, each a random read of a full vector) and searched 1.4-1.5x faster at "
        "recall 0.90-0.95 (alike at 0.99, where the tree limited); build: 16-17 vs 14-16 CPU s.",
    )
    anisotropic_threshold: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="Anisotropic quantization threshold (dot product). 0.4, not 0.2: on the same "
        "bench (spherical leaves, 1 dim per block) recall 0.99 needed 100-130 reordered "
        "candidates instead of 200-250 (about 1.15x the queries/s); 0.3-0.55 measured alike, "
        "and isotropic hashing needed 3x the reordering.",
    )
    spherical_leaves: bool = Field(
        True,
        description="Train the tree's leaves by spherical k-means (unit centres), as the towers "
        "emit unit vectors. On 1M x 64 clustered unit vectors recall@10 0.99 then needs 2-3 "
        "searched leaves of 1,000 instead of 5 (partition recall), 1.1-1.5x the queries/s at "
        "0.99 and about the same below; set False for embeddings whose norms carry the score.",
    )
    tune_queries: int = Field(
        2000, ge=10, le=1_000_000, description="Eval queries sampled to tune the search."
    )
    threads: int = Field(0, ge=0, le=256, description="Search threads; 0 = one per core.")
    shard_items: int = Field(
        2_000_000,
        ge=0,
        le=1_000_000_000,
        description="Catalogs above this many items are split into contiguous shards of at "
        "most this size: one searcher per shard, built in parallel, searched with fan-out and "
        "a top-k merge; 0 = never shard.",
    )


class EvalConfig(_Section):
    """The evaluation step (pipelines.evaluation)."""

    ks: list[int] = Field([10, 50, 100], description="Cutoffs of Recall@K / NDCG@K / hit rate.")
    primary_metric: str = Field("recall@100", description="The metric the gate compares.")
    head_share: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Head items = most popular items taking this share of training interactions.",
    )
    max_queries: int | None = Field(
        None, ge=1, description="Evaluate a random subset of eval queries; None = all."
    )
    bootstrap_samples: int = Field(
        1000,
        ge=0,
        le=10_000,
        description="Bootstrap resamples of the eval queries behind the confidence intervals "
        "and the gate's comparisons: 0 = off (the gate compares point estimates), else "
        "100..10000.",
    )
    confidence: float = Field(
        0.95,
        ge=0.5,
        le=0.999,
        description="Coverage of the central bootstrap intervals (0.95 = 2.5th..97.5th "
        "percentiles).",
    )

    @model_validator(mode="after")
    def _enough_resamples(self) -> EvalConfig:
        # Percentile tails need resamples beyond them: fewer than 100 is noise about the noise.
        if 0 < self.bootstrap_samples < 100:
            raise ValueError(
                f"eval.bootstrap_samples {self.bootstrap_samples} is too few for percentile "
                "intervals: use 0 (off) or 100..10000"
            )
        return self

    @model_validator(mode="after")
    def _valid_metric(self) -> EvalConfig:
        name, _, k = self.primary_metric.partition("@")
        if name not in ("recall", "ndcg", "hit_rate") or not k.isdigit() or int(k) not in self.ks:
            raise ValueError(
                f"eval.primary_metric {self.primary_metric!r} must be recall@K, ndcg@K or "
                f"hit_rate@K with K in eval.ks {self.ks}"
            )
        return self


class GateConfig(_Section):
    """Rules a challenger must pass before promotion (pipelines.gate)."""

    min_lift_over_popularity: float = Field(
        0.05,
        ge=-1.0,
        le=100.0,
        description="Fraction by which the new model must beat the popularity baseline on the "
        "gated metric (eval.primary_metric, by default recall@100 on the eval queries): "
        "new >= popularity x (1 + this); 0.05 = 5% better.",
        **_form("Gate and promotion", "Min lift over popularity (fraction)"),
    )
    max_regression: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Fraction by which the new model may fall below the production model on the "
        "gated metric (eval.primary_metric, by default recall@100 on the eval queries): "
        "new >= production x (1 - this); 0.02 = up to 2% worse, 0 = no worse.",
        **_form("Gate and promotion", "Max regression vs production (fraction)"),
    )
    min_ann_recall: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Fraction of the exact top-k (k = index.k, 100 by default) the ScaNN index "
        "must return on the eval queries; 0.9 = 90%.",
        **_form("Gate and promotion", "Min index recall (fraction)"),
    )
    max_latency_p99_ms: float = Field(
        50.0, gt=0.0, description="Single-query search latency budget (p99, ms)."
    )
    max_index_mb: float = Field(2048.0, gt=0.0, description="Index size on disk budget (MB).")
    force_promote: bool = Field(
        False,
        description="DANGEROUS: promotes the new model whatever the gate says, failed rules "
        "included; the override is recorded in the gate report and the registry history. Use "
        "only to restore service (production is broken and this model is known to be better).",
        **_form("Safety", "Force promote (dangerous)"),
    )
    dry_run: bool = Field(
        False,
        description="Run every step, the gate included, but never promote: production stays "
        "as it is.",
        **_form("Safety", "Dry run (production untouched)"),
    )


class PromotionConfig(_Section):
    """Who decides a promotion the gate allows: the gate alone, or a person as well."""

    mode: PromotionMode = Field(
        "auto",
        description=(
            "'auto': promote when the gate passes; 'approve': always ask a person (Airflow's "
            "Required actions); 'approve_if_marginal': ask when a model comparison is inside "
            "its confidence interval or force_promote was requested."
        ),
        **_form("Gate and promotion", "Promotion decision", name="promotion_mode"),
    )
    approval_timeout_hours: float = Field(
        24.0,
        gt=0.0,
        le=168.0,
        description="Hours to wait for an approval; no answer = rejected, production unchanged.",
    )


class RegistryConfig(_Section):
    """The bundle registry under `<artifact_root>/registry` (pipelines.registry)."""

    keep_bundles: int = Field(5, ge=2, le=1000, description="Bundles kept (production included).")
    warm_start: bool = Field(True, description="Initialise training from the production bundle.")


BeamOptionValue = str | int | float | bool | list[str]


class BeamConfig(_Section):
    """The feature job's Beam runner and pipeline options (pipelines.features.beam_job).

    `options` carries any other Beam flag, so a deployment (YAML, `TTR_BEAM__OPTIONS__<FLAG>`)
    submits to Dataflow, Flink, Spark or Dask without a CLI; flags given on the CLI win.
    """

    runner: str = Field(
        "DirectRunner",
        description="Beam runner: a name Beam knows (DirectRunner, DataflowRunner, FlinkRunner, "
        "SparkRunner, PortableRunner) or a dotted class path "
        "(apache_beam.runners.dask.dask_runner.DaskRunner).",
    )
    direct_num_workers: int = Field(2, ge=0, le=256, description="0 = one per core.")
    direct_running_mode: DirectRunningMode = "multi_processing"
    options: dict[str, BeamOptionValue] = Field(
        default_factory=dict,
        description="Any other Beam pipeline option, by its flag name without dashes, e.g. "
        "{flink_master: 'jobmanager:8081', environment_type: EXTERNAL, environment_config: "
        "'localhost:50000'} or {dask_client_address: 'tcp://scheduler:8786'}; true = a bare "
        "switch, a list = the flag repeated. Checked against Beam's flags when the job starts "
        "(an unknown one is refused by name); docs/scaling.md.",
    )

    @model_validator(mode="before")
    @classmethod
    def _point_beam_flags_to_options(cls, data: Any) -> Any:
        """`beam.flink_master` is not a setting here: say where Beam's own flags go."""
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(
                        f"beam.{key} is not a beam setting (those are: "
                        f"{', '.join(cls.model_fields)}); a Beam pipeline option goes under "
                        f"beam.options, e.g. TTR_BEAM__OPTIONS__{str(key).upper()}=... or "
                        f"YAML beam: {{options: {{{key}: ...}}}}"
                    )
        return data

    @model_validator(mode="after")
    def _check_option_names(self) -> BeamConfig:
        for name in self.options:
            if not _BEAM_FLAG.fullmatch(name):
                raise ValueError(
                    f"beam.options: {name!r} is not a Beam flag name (lower_snake_case, no "
                    "leading dashes, e.g. flink_master)"
                )
            if name in type(self).model_fields:
                raise ValueError(
                    f"beam.options: {name!r} is a setting of its own: set beam.{name} instead"
                )
        return self


_BEAM_FLAG = re.compile(r"[a-z][a-z0-9_]*")


class PipelineConfig(_Section):
    """The whole configuration; steps receive the part they need."""

    data: DataConfig = DataConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    checks: ChecksConfig = ChecksConfig()
    features: FeaturesConfig = FeaturesConfig()
    beam: BeamConfig = BeamConfig()
    train: TrainConfig = TrainConfig()
    index: IndexConfig = IndexConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    promotion: PromotionConfig = PromotionConfig()
    registry: RegistryConfig = RegistryConfig()
