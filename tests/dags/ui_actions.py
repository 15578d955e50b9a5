"""Selenium helpers for the Airflow 3.3 UI pages a person uses to approve a promotion and to read
a run's outcome: "Required actions" (human-in-the-loop tasks) and the DAG run note.

The locators are the ones the UI derives from stable things rather than its hashed CSS classes:
routes (`/required_actions`, `/dags/<dag>/runs/<run>/tasks/<task>/required_actions`), the link
each pending action's row carries to its task, the form field id Airflow builds from the param
name (`element_<param>`), the option buttons' `data-testid="hitl-option-<option>"`, and the
run header's note button (aria-label "Edit note") with its "Dag Run Note" dialog.
"""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

PENDING = "/required_actions?response_received=false"  # Browse > Required Actions, pending only


def _wait(driver, timeout: float = 60) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def _body(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def screenshot(driver, path: Path) -> Path:
    """Save the browser window as a PNG at `path` (directories created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def open_required_actions(driver, base: str, run_id: str, task_id: str, timeout: float = 120):
    """Open the pending "Required actions" list and follow the row of `run_id`'s `task_id` to
    its task page (tab "Required Action"); returns that row's text as the list showed it.

    The list is reloaded until the row appears: the task may still be on its way to
    `awaiting_input` when the page first loads."""
    row_link = (
        By.XPATH,
        f"//table//a[contains(@href, '/runs/{run_id}/tasks/{task_id}/required_actions')]",
    )

    def row_listed(d):
        d.get(f"{base}{PENDING}")
        try:
            return WebDriverWait(d, 10).until(ec.element_to_be_clickable(row_link))
        except Exception:  # noqa: BLE001 - not listed yet: reload
            return False

    link = _wait(driver, timeout).until(row_listed)
    row_text = link.find_element(By.XPATH, "./ancestor::tr").text
    link.click()
    _wait(driver).until(ec.url_contains(f"/tasks/{task_id}/required_actions"))
    return row_text


def respond(
    driver,
    base: str,
    run_id: str,
    option: str,
    reason: str,
    *,
    task_id: str = "approve_promotion",
    param: str = "reason",
    shot: Path | None = None,
) -> str:
    """Answer `run_id`'s pending action through the UI as the logged-in user: reach it from
    "Required actions", type `reason` into the form field of `param`, click the `option`
    button ("Approve" / "Reject"); `shot` (optional) captures the filled form before the click.
    Returns the page text once the UI shows the response as received."""
    open_required_actions(driver, base, run_id, task_id)
    field = _wait(driver).until(ec.element_to_be_clickable((By.ID, f"element_{param}")))
    field.clear()
    field.send_keys(reason)
    # The option buttons stay disabled until the required field has a value.
    button = _wait(driver, 15).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, f"[data-testid='hitl-option-{option}']"))
    )
    if shot is not None:  # a tall window: the whole request (why, gate table, metrics) fits
        size = driver.get_window_size()
        driver.set_window_size(size["width"], 2000)
        button.location_once_scrolled_into_view  # noqa: B018 - scrolls the panel to the buttons
        screenshot(driver, shot)
        driver.set_window_size(size["width"], size["height"])
    button.click()
    _wait(driver).until(lambda d: "Response received at" in _body(d))
    return _body(driver)


# The element and its ancestors fully opaque, no animation running inside it.
_SETTLED = """
const el = arguments[0];
for (let e = el; e; e = e.parentElement)
  if (getComputedStyle(e).opacity !== "1") return false;
return el.getAnimations({subtree: true}).every(a => a.playState !== "running");
"""


def run_note_text(driver, base: str, dag_id: str, run_id: str, *, shot: Path | None = None) -> str:
    """The DAG run note as the run's page renders it: the header shows its first line only, the
    note button opens the "Dag Run Note" dialog with the whole markdown rendered; `shot`
    (optional) captures that dialog. Returns the dialog's text without its title."""
    driver.get(f"{base}/dags/{dag_id}/runs/{run_id}")
    note_button = (
        By.XPATH,
        "//*[@data-testid='header-card']/following-sibling::*"
        "//button[@aria-label='Edit note' or @aria-label='Add a note']",
    )
    _wait(driver).until(ec.element_to_be_clickable(note_button)).click()
    dialog = _wait(driver).until(
        lambda d: next(
            (e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]")
             if e.text.startswith("Dag Run Note")),
            None,
        )
    )  # fmt: skip
    if shot is not None:  # after the dialog's fade-in, or the page shows through it
        _wait(driver, 10).until(lambda d: d.execute_script(_SETTLED, dialog))
        screenshot(driver, shot)
    return dialog.text.removeprefix("Dag Run Note").removesuffix("Edit").strip()


def screenshot_run(driver, base: str, dag_id: str, run_id: str, path: Path) -> str:
    """Open a finished run's page, wait until it shows the run and its success, save it to `path`;
    returns the page's text."""
    import time

    driver.get(f"{base}/dags/{dag_id}/runs/{run_id}")
    _wait(driver).until(lambda d: run_id in _body(d) and "success" in _body(d).lower())
    time.sleep(2)  # let the graph finish drawing
    screenshot(driver, path)
    body = _body(driver)
    assert dag_id in body and run_id in body, body[:2000]
    return body
