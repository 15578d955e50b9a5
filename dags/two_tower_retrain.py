"""Airflow 3 DAG `two_tower_retrain`: validate -> features -> train -> index -> evaluate -> gate
-> approve_promotion -> promote -> publish, every `TTR_SCHEDULE_HOURS` hours (1-24, default 24)
or when the landing asset `two_tower_landing` gets a new partition (`two-tower land`).

Scheduling: the timer fires on the UTC hour grid (cron `0 */H * * *`: every H hours from
00:00 UTC; when H does not divide 24 the day's last gap is shorter). The first unpause does not
start a run for the period already under way: the first timer run is the next grid time. Once
the DAG has had timer runs, unpausing after a pause that spanned a grid time starts one run at
once for the latest grid time (catchup=False; docs/deploying.md, "Unpausing").
Timer and landing runs use the deployment's configured source (`TTR_DATA__SOURCE` or the YAML's
`data.source`; none = the synthetic preset); a manual run may pick another on the form.

Promotion: `promotion_mode` auto (the gate decides), approve (a person approves every
promotion in Airflow's Required actions) or approve_if_marginal (a person decides forced
promotions and comparisons the gate cannot decide); reject or no answer = production unchanged.

Tasks call the library steps in `pipelines.steps` with the run's config (deployment YAML / env,
then the trigger form's Params) and pass only small references (paths, ids) through XCom.
Backfill runs are point in time: they see the data as of their logical date.
Nothing heavy is imported at parse time: TensorFlow, Beam and ScaNN load inside the tasks.

Deployment settings (environment; read once, into `SETTINGS`, when the file is parsed):
    TTR_DATA__ARTIFACT_ROOT   runs/ and registry/ (default ./artifacts; a config field): a
                              directory every worker shares, or an object store (s3://bucket/p,
                              gs://bucket/p): each task then pulls the run directory into a
                              local staging copy and pushes it back (`pipelines.artifacts`)
    TTR_STAGING_DIR           where those copies live (default ~/.cache/two-tower/staging)
    TTR_DATA_ROOT             the only directory the `source` Param may point into
    TTR_CONFIG                optional YAML with the pipeline config
    TTR_SCHEDULE_HOURS        1..24 (default 24)
Alerts go to the Connection `two_tower_alerts` (http: a Slack-compatible JSON webhook;
slackwebhook / slack: the Slack provider's notifiers), one per incident: repeats inside
`TTR_ALERT_QUIET_MINUTES` (default 360) are only logged, and the next successful run posts
"resolved" (`pipelines.orchestration.alerts`). On-call guide: docs/operating.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    BaseNotifier,
    CronTriggerTimetable,
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
DEPLOYMENT = SETTINGS.load_config()  # the config of timer and landing runs
SCHEDULE = f"0 */{SETTINGS.schedule_hours} * * *" if SETTINGS.schedule_hours < 24 else "0 0 * * *"
SCHEDULED_SOURCE = DEPLOYMENT.data.source or f"the synthetic '{DEPLOYMENT.synthetic.preset}' preset"

LANDING = Asset(name="two_tower_landing", uri=f"file://{SETTINGS.data_root}/landing")
PRODUCTION = Asset(name="production_bundle", uri="two-tower://registry/production")


def _alert_connection():
    """The alert connection `two_tower_alerts`, or None (alerts are then only logged)."""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(orch.ALERT_CONNECTION)
    except Exception:  # noqa: BLE001 - no connection configured: log only
        return None


def _alert(payload: dict, task_try: str | None = None) -> None:
    """Post `payload` unless it repeats an open incident inside the quiet period
    (`TTR_ALERT_QUIET_MINUTES`); `task_try` marks the task try it stands for."""
    from pipelines.orchestration import alerts

    alerts.raise_alert(payload, _alert_connection(), DEPLOYMENT.data.artifact_root, task_try)


class TaskFailureNotifier(BaseNotifier):
    """Posts a task-failure alert, unless the task already raised the incident's alert (a failed
    data check alerts once, with its rules, not a second time as a task failure)."""

    template_fields = ()

    def notify(self, context):
        from pipelines.orchestration import alerts

        ti = context["ti"]
        key = alerts.task_try(ti.run_id, ti.task_id, ti.try_number)
        if alerts.alerted_already(ti.dag_id, DEPLOYMENT.data.artifact_root, key):
            log.info("task %s failed; its alert was already posted", ti.task_id)
            return
        error = context.get("exception")
        _alert(
            alerts.task_failure_alert(
                ti.dag_id, ti.run_id, ti.task_id, f"{type(error).__name__}: {error}",
                getattr(ti, "log_url", None),
                error_type=type(error).__name__,
                links=alerts.run_links(orch.safe_run_id(ti.run_id)),
            ),
            key,
        )  # fmt: skip


def _resolved(context) -> None:
    """DAG success callback: close the DAG's open failure incidents with one "resolved" message.

    Runs in the DAG processor (or in `airflow dags test`), which reaches the alert connection."""
    from pipelines.orchestration import alerts

    run_id = context["run_id"]
    alerts.resolve_incidents(
        DAG_ID, run_id, _alert_connection(), DEPLOYMENT.data.artifact_root,
        links=alerts.run_links(orch.safe_run_id(run_id)),
    )  # fmt: skip


def _context():
    """(config, run layout, run id) of the running task; the layout is local (for a remote
    artifact root, this host's staging copy: see `_run_files`).

    A backfill run replays its interval: it sees the data as of its data interval's end (its
    logical date here), so it never trains on, warm-starts from or is judged against later data.
    """
    from pipelines.artifacts import ArtifactRoot
    from pipelines.orchestration.logs import route_library_output
    from pipelines.steps.pipeline import with_source

    route_library_output()  # library stderr at its true level, not all at ERROR
    context = get_current_context()
    run = context["dag_run"]
    as_of = (run.data_interval_end or run.logical_date) if run.run_type == "backfill" else None
    params = {k: v for k, v in context["params"].items() if k not in APPROVAL_PARAMS}
    cfg = orch.config_from_params(params, SETTINGS, as_of=as_of)
    root = ArtifactRoot(cfg.data.artifact_root)
    cfg = with_source(cfg, root)
    run_id = orch.safe_run_id(context["run_id"])
    return cfg, root.run_layout(run_id), run_id


@contextlib.contextmanager
def _run_files(push: bool = True):
    """`_context()` with the run directory synced around the task's work: on a remote
    artifact root (s3://, gs://, memory://) pulled from the store first and pushed back after
    (`push=False`: read only), so tasks on different Celery workers share the run; a local
    root is used in place (`pipelines.artifacts`). The task's wall time and peak memory
    (`pipelines.resources`) are logged and, when it writes, kept as `usage/<task_id>.json`."""
    from pipelines.artifacts import ArtifactRoot
    from pipelines.resources import measure

    cfg, _, run_id = _context()
    task_id = get_current_context()["ti"].task_id
    with ArtifactRoot(cfg.data.artifact_root).synced_run(run_id, push=push) as layout:
        try:
            with measure() as used:
                yield cfg, layout, run_id
        finally:  # the task's time and peak memory, also when it failed
            log.info("task %s: %s", task_id, used.describe())
            if push:
                import json

                out = layout.run_dir / "usage" / f"{task_id}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(used.as_dict()))


APPROVAL_PARAMS = ("reason",)  # the approval form's own fields, not pipeline Params


class PromotionApproval(ApprovalOperator):
    """Waits in Airflow's Required actions for a person to approve or reject the promotion, when
    the gate asked for one (`pipelines.orchestration.approval`); skipped otherwise.

    The request shows why a person is asked, the gate table, metrics with intervals, slices and
    report links. Approve lets `promote` run; reject, or no answer before
    `promotion.approval_timeout_hours` (the "Reject" default), skips it. The answer (who, what,
    why) is kept in the run's `evaluation/approval.json`.
    """

    def execute(self, context):
        from pipelines.orchestration.approval import approval_body

        ref = context["ti"].xcom_pull(task_ids="gate")
        if not ref["approval"]:
            raise AirflowSkipException(f"no approval needed: {ref['decision']}")
        with _run_files(push=False) as (cfg, layout, _):
            self.body = approval_body(layout, ref["approval"], _report_links(layout))
        self.subject = f"Promote the model of run {context['run_id']}? Gate: {ref['decision']}"
        self.response_timeout = dt.timedelta(hours=cfg.promotion.approval_timeout_hours)
        return super().execute(context)

    def execute_complete(self, context, event):
        from pipelines.orchestration.approval import ApprovalAnswer

        # Kept first: on "Reject" the operator skips `promote` by raising, so nothing after
        # super() would run. A timeout resumes with the "Reject" default and no user.
        if "error" not in event:
            ref = context["ti"].xcom_pull(task_ids="gate")
            answer = ApprovalAnswer.from_response(event, ref["approval"])
            with _run_files() as (_, layout, _):
                answer.write(layout)
            log.info("approval: %s", answer.line())
        return super().execute_complete(context, event)


def _report_links(layout) -> dict[str, str]:
    """Links to the run's reports, served by the Two-tower plugin."""
    from pipelines.orchestration.links import run_url

    return {name: run_url(layout.run_id, path) for name, path in (
        ("evaluation report", "evaluation/report.md"), ("recall plot", "evaluation/recall_at_k.png"),
        ("gate report", "evaluation/gate.md"), ("data docs", "raw_report/index.html"),
    )}  # fmt: skip


_RETRY = {
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
}


@dag(
    dag_id=DAG_ID,
    description=(
        f"Retrain, gate and promote the two-tower model: every {SETTINGS.schedule_hours} h "
        f"(UTC, {SCHEDULE}) or when a partition lands; scheduled runs read {SCHEDULED_SOURCE}"
    ),
    # No start date and a zero run_immediately window: the first unpause waits for the next grid
    # time instead of launching a full retrain for the period under way. (`False` would still
    # run the last grid time when it passed less than a tenth of the interval ago.)
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC", run_immediately=dt.timedelta(0)),
        assets=[LANDING],
    ),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 0,
        "execution_timeout": dt.timedelta(hours=1),
        "on_failure_callback": [TaskFailureNotifier()],
    },
    on_success_callback=_resolved,  # closes open failure incidents: one "resolved" alert
    params={
        name: Param(**spec)
        for name, spec in orch.param_specs(DEPLOYMENT, SETTINGS.data_root).items()
    },
    tags=["two-tower", "retrieval"],
    doc_md=f"{__doc__}\n**This deployment**: timer `{SCHEDULE}` (UTC); timer and landing runs "
    f"read {SCHEDULED_SOURCE}; artifacts under `{DEPLOYMENT.data.artifact_root}`; promotion "
    f"mode `{DEPLOYMENT.promotion.mode}`.\n",
)
def two_tower_retrain():
    @task(execution_timeout=dt.timedelta(minutes=30))
    def validate_raw() -> dict:
        """Raw-data contract checks on one read of the source, kept as the run's snapshot (every
        later task and retry reads only that); failure = high-severity alert, no retry, run stops."""
        from pipelines.errors import DataValidationError
        from pipelines.steps.pipeline import reset_run_dir
        from pipelines.steps.validate import validate_raw as check

        with _run_files() as (cfg, layout, run_id):
            reset_run_dir(layout)  # a re-run of this run id starts clean, keeping its checkpoints
            try:
                out = check(cfg, layout)
            except DataValidationError as exc:
                from pathlib import Path

                from pipelines.orchestration import alerts

                report, ti = exc.report, get_current_context()["ti"]
                docs = Path(report.html_path or layout.raw_report).relative_to(layout.run_dir)
                _alert(alerts.data_check_alert(ti.dag_id, ti.run_id, {
                    "failed": [
                        f"{f.table}.{f.column or '*'}: {f.rule} ({f.failed} rows) in {f.file}"
                        for f in report.failures
                    ],
                    "rules": [f"{f.table}.{f.column or '*'}: {f.rule}" for f in report.failures],
                    "html": report.html_path, "report_dir": str(layout.raw_report),
                }, links=alerts.run_links(run_id, {"data docs": str(docs)})),
                    alerts.task_try(ti.run_id, ti.task_id, ti.try_number))  # fmt: skip
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

        with _run_files() as (cfg, layout, _):
            return {**ref, **build_features(cfg, layout, check=False)}  # checked by the next task

    @task
    def validate_features(ref: dict) -> dict:
        """Feature checks (leakage, split order, counts) on the written features."""
        from pipelines.errors import DataValidationError
        from pipelines.steps.features import check_features

        with _run_files() as (cfg, layout, _):
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

        with _run_files() as (cfg, layout, _):
            registry = Registry(cfg.data.artifact_root)
            warm = registry.production_dir() if cfg.registry.warm_start else None
            return {**ref, **fit(cfg, layout, warm)}

    @task(**_RETRY)
    def build_index(ref: dict) -> dict:
        from pipelines.steps.index import build_index as build

        with _run_files() as (cfg, layout, _):
            out = build(cfg, layout)
            return {**ref, "index_dir": out["index_dir"], "ann_recall": out["recall"]}

    @task(**_RETRY)
    def evaluate(ref: dict) -> dict:
        import json

        from pipelines.orchestration.approval import headline, metrics_markdown
        from pipelines.registry import Registry
        from pipelines.steps.evaluate import evaluate as run_evaluation

        with _run_files() as (cfg, layout, _):
            registry = Registry(cfg.data.artifact_root)
            champion = registry.production()
            out = run_evaluation(cfg, layout, registry.production_dir() if champion else None)
            metrics, primary = json.loads(layout.metrics.read_text()), cfg.eval.primary_metric
            log.info("evaluation against champion %s:\n%s", champion or "(none)",
                     metrics_markdown(metrics, primary))  # fmt: skip
            return {**ref, "champion": champion, "metrics": out["metrics"], "report": out["report"],
                    "headline": headline(metrics, primary)}  # fmt: skip

    @task
    def gate(ref: dict) -> dict:
        """The promotion rules on the run's evaluation: logs and returns the rule table, and
        whether a person must approve (`promotion_mode`)."""
        import json

        from pipelines.orchestration.approval import approval_request
        from pipelines.steps.gate import gate as decide

        with _run_files() as (cfg, layout, run_id):
            decision = decide(cfg, layout)
            table = layout.gate_md.read_text()
            ask = approval_request(cfg, decision)
            log.info("gate: %s%s\n%s", decision["decision"],
                     f"; approval required: {ask}" if ask else "", table)  # fmt: skip
            if not decision["promote"] and not ask and not cfg.gate.dry_run:
                from pipelines.orchestration import alerts

                metrics = json.loads(layout.metrics.read_text())
                real_run_id = get_current_context()["run_id"]
                links = alerts.run_links(run_id) | _report_links(layout)
                _alert(alerts.gate_alert(DAG_ID, real_run_id, decision, metrics, links=links))
            elif decision["promote"]:  # the gate passes again: a rejection incident is over
                from pipelines.orchestration import alerts

                alerts.resolve_incidents(
                    DAG_ID, get_current_context()["run_id"], _alert_connection(),
                    cfg.data.artifact_root, kinds=[alerts.GATE_KIND],
                    cause="its challenger passes the gate", links=_report_links(layout),
                )  # fmt: skip
            return {**ref, "decision": decision["decision"],
                    "promote": decision["promote"] or bool(ask),
                    "approval": ask, "gate_table": table}  # fmt: skip

    @task(outlets=[PRODUCTION], trigger_rule="none_failed")
    def promote(ref: dict) -> dict:
        """Publish + atomic pointer swap; a rejected challenger ends as 'skipped promotion'.

        Runs after `approve_promotion` approved, or was skipped because nobody had to."""
        import json

        from pipelines.errors import PromotionConflict
        from pipelines.orchestration.approval import ApprovalAnswer
        from pipelines.orchestration.events import production_event_extra
        from pipelines.steps.promote import promote as publish

        if not ref["promote"]:
            raise AirflowSkipException(f"skipped promotion: {ref['decision']}")
        with _run_files() as (cfg, layout, run_id):
            decision = json.loads(layout.gate_json.read_text())
            if ref["approval"]:
                answer = ApprovalAnswer.read(layout)
                if answer is None or not answer.approved:  # (a rejection skips this task already)
                    raise AirflowSkipException(
                        f"not approved: {answer.line() if answer else 'no answer'}"
                    )
                decision = {**decision, "promote": True, "approval": answer.line(),
                            "decision": f"{decision['decision']}; {answer.line()}"}  # fmt: skip
            context = get_current_context()
            airflow_run_id = context["run_id"]
            # Who promotes: the approver, else the person who triggered the run (None: the timer).
            actor = answer.user if ref["approval"] else context["dag_run"].triggering_user_name
            try:  # compare-and-swap: production must still be the champion this run was gated on
                out = publish(cfg, layout, decision, run_id, ref["champion"],
                              actor=actor, airflow_run_id=airflow_run_id)  # fmt: skip
            except PromotionConflict as exc:
                raise AirflowFailException(str(exc)) from None
            context["outlet_events"][PRODUCTION].extra = production_event_extra(
                action="promote", bundle_id=out["bundle_id"], previous=ref["champion"],
                airflow_run_id=airflow_run_id, user=actor, decision=decision["decision"],
                metrics=json.loads(layout.metrics.read_text()),
            )  # fmt: skip
            return {**ref, "bundle_id": out["bundle_id"]}

    @task(trigger_rule="none_failed")
    def publish(ref: dict) -> dict:
        """Write the run's summary.json; log where the reports are and what production serves."""
        from pipelines.artifacts import ArtifactRoot
        from pipelines.layout import RunSummary
        from pipelines.orchestration.approval import ApprovalAnswer
        from pipelines.registry import Registry

        with _run_files() as (cfg, layout, run_id):
            registry = Registry(cfg.data.artifact_root)
            production = registry.production()
            # Promoted = production now serves this run's bundle (approval and races included).
            promoted = production not in (None, ref["champion"]) and (
                registry.manifest(production).get("run_id") == run_id
            )
            answer = ApprovalAnswer.read(layout) if ref["approval"] else None
            decision = f"{ref['decision']}; {answer.line()}" if answer else ref["decision"]
            root = ArtifactRoot(cfg.data.artifact_root)
            summary = RunSummary.of(
                layout, champion=ref["champion"], decision=decision,
                promoted=promoted, production_bundle=production,
                location=root.location(layout.run_dir) if root.remote else None,
            )  # fmt: skip
            summary.write(layout)
            log.info("gate report:\n%s", layout.gate_md.read_text())
            log.info("production bundle: %s", production)
            return summary.to_dict()

    checked = gate(evaluate(build_index(train(validate_features(features(validate_raw()))))))
    approval = PromotionApproval(
        task_id="approve_promotion",
        subject="Promote the retrained two-tower model?",
        defaults="Reject",  # no answer before the timeout = production unchanged
        # The wait is bounded by response_timeout (the run's approval_timeout_hours, set when it
        # runs), not by the DAG's default execution_timeout.
        execution_timeout=None,
        response_timeout=dt.timedelta(hours=DEPLOYMENT.promotion.approval_timeout_hours),
        params={"reason": Param("", type="string", title="Reason",
                                description="Why: kept in the run note and the run's approval")},
    )  # fmt: skip
    promoted = promote(checked)
    done = publish(checked)
    checked >> approval >> promoted >> done


two_tower_retrain()
