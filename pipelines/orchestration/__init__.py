"""What the Airflow DAG needs that is not Airflow: the trigger form and the run's config from
the Params (`params`), and alerts (`alerts`).

Kept free of Airflow, TensorFlow, Beam and ScaNN imports so the DAG file parses fast and the
logic is testable on its own.
"""

from pipelines.orchestration.alerts import (
    ALERT_CONNECTION,
    data_check_alert,
    gate_alert,
    send_alert,
    task_failure_alert,
    webhook_url_from_connection,
)
from pipelines.orchestration.params import (
    PARAM_FIELDS,
    config_from_params,
    param_schema,
    param_specs,
    resolve_source,
    safe_run_id,
)

__all__ = [
    "ALERT_CONNECTION",
    "PARAM_FIELDS",
    "config_from_params",
    "data_check_alert",
    "gate_alert",
    "param_schema",
    "param_specs",
    "resolve_source",
    "safe_run_id",
    "send_alert",
    "task_failure_alert",
    "webhook_url_from_connection",
]
