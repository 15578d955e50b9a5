"""Airflow 3 DAG `two_tower_retrain`: validate -> features -> train -> index -> evaluate -> gate
-> promote -> publish, every `TTR_SCHEDULE_HOURS` hours (1-24, default 24) or when the landing
asset gets a new partition.

Tasks call the library steps in `pipelines.steps` with the run's config (deployment YAML / env,
then the trigger form's Params) and pass only small references (paths, ids) through XCom.
Backfill runs are point in time: they see the data as of their logical date.
Nothing heavy is imported at parse time: TensorFlow, Beam and ScaNN load inside the tasks.

Deployment settings (environment; read once, into `SETTINGS`, when the file is parsed):
    TTR_DATA__ARTIFACT_ROOT   runs/ and registry/ (default ./artifacts; a config field)
    TTR_DATA_ROOT             the only directory the `source` Param may point into
    TTR_CONFIG                optional YAML with the pipeline config
    TTR_SCHEDULE_HOURS        1..24 (default 24)
Alerts go to the HTTP Connection `two_tower_alerts` (a Slack-compatible webhook URL).
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    BaseNotifier,
    DeltaTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pipelines import orchestration as orch
from pipelines.config import DeploymentSettings

log = logging.getLogger(__name__)

DAG_ID = "two_tower_retrain"
SETTINGS = DeploymentSettings.from_env()  # the only read of the deployment's environment

LANDING = Asset(name="two_tower_landing", uri=f"file://{SETTINGS.data_root}/landing")
PRODUCTION = Asset(name="production_bundle", uri="two-tower://registry/production")


def _alert(payload: dict) -> None:
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(orch.ALERT_CONNECTION)
    except Exception:  # noqa: BLE001 - no connection configured: log only
        conn = None
    orch.send_alert(payload, orch.webhook_url_from_connection(conn))


class TaskFailureNotifier(BaseNotifier):
    """Posts a task-failure alert (Slack-compatible JSON) to the alerts webhook."""

    template_fields = ()

    def notify(self, context):
        ti = context["ti"]
        error = context.get("exception")
        _alert(
            orch.task_failure_alert(
                ti.dag_id, ti.run_id, ti.task_id, repr(error), getattr(ti, "log_url", None)
            )
        )


def _context():
    """(config, run layout, run id) of the running task.

    A backfill run replays its interval: it sees the data as of its data interval's end (its
    logical date here), so it never trains on, warm-starts from or is judged against later data.
    """
    from pipelines.layout import RunLayout
    from pipelines.steps.pipeline import with_source

    context = get_current_context()
    run = context["dag_run"]
    as_of = (run.data_interval_end or run.logical_date) if run.run_type == "backfill" else None
    cfg = with_source(orch.config_from_params(dict(context["params"]), SETTINGS, as_of=as_of))
    run_id = orch.safe_run_id(context["run_id"])
    return cfg, RunLayout.for_run(cfg.data.artifact_root, run_id), run_id


_RETRY = {
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
}


@dag(
    dag_id=DAG_ID,
    description="Retrain, index, evaluate, gate and promote the two-tower retrieval model",
    schedule=AssetOrTimeSchedule(
        timetable=DeltaTriggerTimetable(dt.timedelta(hours=SETTINGS.schedule_hours)),
        assets=[LANDING],
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 0,
        "execution_timeout": dt.timedelta(hours=1),
        "on_failure_callback": [TaskFailureNotifier()],
    },
    params={name: Param(**spec) for name, spec in orch.param_specs(SETTINGS.load_config()).items()},
    tags=["two-tower", "retrieval"],
    doc_md=__doc__,
)
def two_tower_retrain():
    @task(execution_timeout=dt.timedelta(minutes=30))
    def validate_raw() -> dict:
        """Raw-data contract checks on one read of the source, kept as the run's snapshot (every
        later task and retry reads only that); failure = high-severity alert, no retry, run stops."""
        from pipelines.errors import DataValidationError
        from pipelines.steps.pipeline import reset_run_dir
        from pipelines.steps.validate import validate_raw as check

        cfg, layout, run_id = _context()
        reset_run_dir(layout)  # a re-run of this run id starts clean, keeping its checkpoints
        try:
            out = check(cfg, layout)
        except DataValidationError as exc:
            report = exc.report
            _alert(orch.data_check_alert(DAG_ID, run_id, {
                "failed": [f"{f.table}.{f.column or '*'}: {f.rule} ({f.failed} rows) in {f.file}"
                           for f in report.failures],
                "html": report.html_path, "report_dir": str(layout.raw_report),
            }))  # fmt: skip
            raise AirflowFailException(str(exc)) from None
        return {
            "run_dir": str(layout.run_dir),
            "source": cfg.data.source,
            "report": out["report_dir"],
        }

    @task(**_RETRY, execution_timeout=dt.timedelta(hours=2))
    def features(ref: dict) -> dict:
        """The Beam job on the validated snapshot (a retry never re-reads the source)."""
        from pipelines.steps.features import build_features

        cfg, layout, _ = _context()
        return {**ref, **build_features(cfg, layout, check=False)}  # checked by the next task

    @task
    def validate_features(ref: dict) -> dict:
        """Feature checks (leakage, split order, counts) on the written features."""
        from pipelines.errors import DataValidationError
        from pipelines.steps.features import check_features

        cfg, layout, _ = _context()
        try:
            check_features(cfg, layout)
        except DataValidationError as exc:
            raise AirflowFailException(str(exc)) from None
        return ref

    @task(**_RETRY, execution_timeout=dt.timedelta(hours=4))
    def train(ref: dict) -> dict:
        """Trains from this run's checkpoints on retry; warm-starts from production."""
        from pipelines.registry import Registry
        from pipelines.steps.train import train as fit

        cfg, layout, _ = _context()
        registry = Registry(cfg.data.artifact_root)
        warm = registry.production_dir() if cfg.registry.warm_start else None
        return {**ref, **fit(cfg, layout, warm)}

    @task(**_RETRY)
    def build_index(ref: dict) -> dict:
        from pipelines.steps.index import build_index as build

        cfg, layout, _ = _context()
        out = build(cfg, layout)
        return {**ref, "index_dir": out["index_dir"], "ann_recall": out["recall"]}

    @task(**_RETRY)
    def evaluate(ref: dict) -> dict:
        from pipelines.registry import Registry
        from pipelines.steps.evaluate import evaluate as run_evaluation

        cfg, layout, _ = _context()
        registry = Registry(cfg.data.artifact_root)
        champion = registry.production()
        out = run_evaluation(cfg, layout, registry.production_dir() if champion else None)
        return {**ref, "champion": champion, "metrics": out["metrics"], "report": out["report"]}

    @task
    def gate(ref: dict) -> dict:
        import json

        from pipelines.steps.gate import gate as decide

        cfg, layout, run_id = _context()
        decision = decide(cfg, layout)
        if not decision["promote"] and not cfg.gate.dry_run:
            metrics = json.loads(layout.metrics.read_text())
            _alert(orch.gate_alert(DAG_ID, run_id, decision, metrics))
        return {**ref, "decision": decision["decision"], "promote": decision["promote"]}

    @task(outlets=[PRODUCTION])
    def promote(ref: dict) -> dict:
        """Publish + atomic pointer swap; a rejected challenger ends as 'skipped promotion'."""
        import json

        from pipelines.errors import PromotionConflict
        from pipelines.steps.promote import promote as publish

        cfg, layout, run_id = _context()
        if not ref["promote"]:
            raise AirflowSkipException(f"skipped promotion: {ref['decision']}")
        decision = json.loads(layout.gate_json.read_text())
        try:  # compare-and-swap: production must still be the champion this run was gated on
            out = publish(cfg, layout, decision, run_id, ref["champion"])
        except PromotionConflict as exc:
            raise AirflowFailException(str(exc)) from None
        events = get_current_context()["outlet_events"]
        events[PRODUCTION].extra = {"bundle_id": out["bundle_id"], "run_id": run_id}
        return {**ref, "bundle_id": out["bundle_id"]}

    @task(trigger_rule="none_failed")
    def publish(ref: dict) -> dict:
        """Write the run's summary.json; log where the reports are and what production serves."""
        from pipelines.layout import RunSummary
        from pipelines.registry import Registry

        cfg, layout, _ = _context()
        production = Registry(cfg.data.artifact_root).production()
        summary = RunSummary.of(
            layout, champion=ref["champion"], decision=ref["decision"],
            promoted=ref["promote"], production_bundle=production,
        )  # fmt: skip
        summary.write(layout)
        log.info("gate report:\n%s", layout.gate_md.read_text())
        log.info("production bundle: %s", production)
        return summary.to_dict()

    checked = gate(evaluate(build_index(train(validate_features(features(validate_raw()))))))
    promoted = promote(checked)
    done = publish(checked)
    promoted >> done


two_tower_retrain()
