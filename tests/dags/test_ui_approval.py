"""Approval before promotion, by a person in the Airflow UI, against a real API server +
scheduler: a run with `promotion_mode=approve` waits in "Required actions"; approved there, it
promotes its bundle; a second one, rejected there, leaves production as it was; both run notes
say who decided and why. The approved run is also the suite's green run through the REST API
with custom Params: they reach the bundle, its task logs have no ERROR line, and its page shows
in Chromium. Screenshots of the approval form, the run and its note go to docs/images/."""

from __future__ import annotations

import json

import pytest
import ui_actions as ui
from airflow_support import REPO, chromium, error_lines, wait_for

from pipelines import orchestration as orch

pytestmark = pytest.mark.slow

TASK = "approve_promotion"
CONF = {"source": "world", "epochs": 1, "embedding_dim": 32, "min_lift_over_popularity": 0.1,
        "promotion_mode": "approve"}  # fmt: skip
IMAGES = REPO / "docs" / "images"


def wait_awaiting_input(stack, run_id: str) -> None:
    """Wait until the run's approval task waits for a person; fail early, with the task states,
    if the run ends or skips the approval instead."""

    def awaiting():
        states = stack.task_states(run_id)
        if states.get(TASK) == "awaiting_input":
            return True
        if states.get(TASK) in ("skipped", "success", "failed", "upstream_failed"):
            raise AssertionError(f"{TASK} never waited for a person: {states}")
        return False

    try:
        wait_for(f"{TASK} of {run_id} to await input", awaiting, 900, every=5)
    except AssertionError:
        raise AssertionError(f"{run_id}: {stack.task_states(run_id)}") from None


def hitl_response(stack, run_id: str) -> dict:
    return stack.api(
        "GET", f"/dags/{stack.DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails"
    )


def test_a_person_approves_one_promotion_and_rejects_another_in_required_actions(airflow_stack):
    stack = airflow_stack
    stack.dag_ready()
    pointer = stack.artifacts / "registry" / "production.json"
    approve_reason = "recall well above popularity, slices look sane"
    reject_reason = "holding the current model until the data incident is closed"
    driver = chromium(stack.token("admin"), stack.base)
    try:
        # 1. Approved in the UI: the run promotes its own bundle.
        approved = stack.trigger(CONF)
        wait_awaiting_input(stack, approved)
        pending = stack.api("GET", f"/dags/{stack.DAG_ID}/dagRuns/{approved}/hitlDetails")
        assert [d["response_received"] for d in pending["hitl_details"]] == [False]
        ui.respond(
            driver, stack.base, approved, "Approve", approve_reason,
            shot=IMAGES / "approval-required-action.png",
        )  # fmt: skip
        assert stack.wait_until(approved) == "success", stack.task_states(approved)
        states = stack.task_states(approved)
        assert states[TASK] == "success" and states["promote"] == "success", states
        answer = hitl_response(stack, approved)
        assert answer["responded_by_user"]["name"] == "admin"
        assert answer["chosen_options"] == ["Approve"]
        assert answer["params_input"] == {"reason": approve_reason}
        production = json.loads(pointer.read_text())
        promoted = stack.api(
            "GET",
            f"/dags/{stack.DAG_ID}/dagRuns/{approved}/taskInstances/promote/xcomEntries/return_value",
        )["value"]
        assert production["bundle_id"] == promoted["bundle_id"]
        manifest = stack.artifacts / "registry" / "bundles" / production["bundle_id"]
        manifest = json.loads((manifest / "manifest.json").read_text())
        assert manifest["run_id"] == orch.safe_run_id(approved)
        assert manifest["config"]["train"]["embedding_dim"] == 32  # the Params reached the run
        assert error_lines(stack.task_log_files(approved)) == []  # a green run cries no wolf
        ui.screenshot_run(
            driver, stack.base, stack.DAG_ID, approved, IMAGES / "airflow-dag-run.png"
        )

        # 2. Rejected in the UI: promote is skipped, the pointer file is untouched.
        before = pointer.read_text()
        rejected = stack.trigger(CONF)
        wait_awaiting_input(stack, rejected)
        ui.respond(driver, stack.base, rejected, "Reject", reject_reason)
        assert stack.wait_until(rejected) == "success", stack.task_states(rejected)
        states = stack.task_states(rejected)
        assert states[TASK] == "success" and states["promote"] == "skipped", states
        answer = hitl_response(stack, rejected)
        assert answer["responded_by_user"]["name"] == "admin"
        assert answer["chosen_options"] == ["Reject"]
        assert answer["params_input"] == {"reason": reject_reason}
        assert pointer.read_text() == before

        # 3. The run notes (written by the notes listener when the run ends) say who and why.
        def note(run_id):
            return wait_for(f"the note of {run_id}", lambda: stack.run(run_id)["note"], 60)

        approved_note = note(approved)
        assert "approved" in approved_note.lower(), approved_note
        assert "admin" in approved_note and approve_reason in approved_note, approved_note
        shown = ui.run_note_text(
            driver, stack.base, stack.DAG_ID, approved, shot=IMAGES / "run-note.png"
        )
        assert approve_reason in shown, shown
        rejected_note = note(rejected)
        assert "rejected" in rejected_note.lower(), rejected_note
        assert "admin" in rejected_note and reject_reason in rejected_note, rejected_note
    finally:
        driver.quit()
