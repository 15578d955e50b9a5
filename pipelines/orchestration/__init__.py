"""What the Airflow DAG and the UI need that is not a pipeline step.

    params     the trigger form from the config, and the run's config from its Params
    approval   who must approve a promotion, what they read, what they answered
    alerts     one alert per incident, quiet period, "resolved", by connection type
    events     `production_bundle` / `two_tower_landing` asset events and their `extra`
    notes      each DAG run's note (outcome, production, source, links); `listener` writes it
    links      URLs of a run's reports in the Two-tower view
    logs       library stderr (TensorFlow, absl, Beam) logged at its true level in a task
    plugin     the Airflow plugin (the Two-tower view `views`, report links); with `listener`,
               loaded by Airflow through the `airflow.plugins` entry points

This package (and so the DAG file) imports no Airflow, TensorFlow, Beam or ScaNN at import time;
`plugin`, `listener` and `views` import Airflow and are loaded only by Airflow.
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
