"""Offline evaluation through the serving path, on the run's eval period.

Every eval query (a user active in the eval period, with its point-in-time history at the eval
start) is answered the way production answers it: query tower SavedModel -> index search,
items the user already saw excluded. Challenger, champion, popularity and (synthetic data) the
oracle are scored on the same queries; every headline metric gets a bootstrap interval and the
challenger's differences to the baselines paired intervals.

Modules:
    evalset   `EvalSet`: the queries, targets, seen items and slices of a feature run
    served    `evaluate_served`: a served model's metrics through its index
    ann       `ann_section`: the index's recall vs exact search, and its tuning figures
    compare   `compare_models`: means, intervals and paired differences
    report    `render_report` (report.md) and `plot_recall` (recall_at_k.png)
    offline   `evaluate`: all of the above for one run, writing metrics.json and the reports
"""

from pipelines.evaluation.ann import ann_section
from pipelines.evaluation.compare import BOOTSTRAP_SEED, compare_models
from pipelines.evaluation.evalset import EvalSet
from pipelines.evaluation.offline import METRICS_FILE, REPORT_FILE, evaluate
from pipelines.evaluation.report import PLOT_FILE, plot_recall, render_report
from pipelines.evaluation.served import evaluate_served

__all__ = [
    "BOOTSTRAP_SEED",
    "METRICS_FILE",
    "PLOT_FILE",
    "REPORT_FILE",
    "EvalSet",
    "ann_section",
    "compare_models",
    "evaluate",
    "evaluate_served",
    "plot_recall",
    "render_report",
]
