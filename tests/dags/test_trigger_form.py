"""The trigger form against a real API server: a value outside a Param's range, an unknown
choice or a source that is not a directory under the data root is refused when the run is
triggered (REST API v2: HTTP 400 naming the Param), not when a task reads it; a valid conf is
accepted. Then the form itself in headless Chromium: sections, titles and ranges, an
out-of-range number kept as typed and refused on trigger; screenshotted into docs/images."""

from __future__ import annotations

import json
import time
import urllib.error

import pytest
from airflow_support import REPO, chromium

pytestmark = pytest.mark.slow

DAG_ID = "two_tower_retrain"
SCREENSHOT = REPO / "docs" / "images" / "trigger-form.png"

REFUSED = [
    ({"epochs": 0}, "epochs", "less than the minimum of 1"),
    ({"epochs": 1001}, "epochs", "greater than the maximum of 1000"),
    ({"max_regression": 5}, "max_regression", "greater than the maximum of 1.0"),
    ({"learning_rate": 0}, "learning_rate", "less than or equal to the minimum of 0.0"),
    ({"source": "/etc/passwd"}, "source", "is not one of"),
    ({"source": "../x"}, "source", "is not one of"),
    ({"source": "world/interactions"}, "source", "is not one of"),
    ({"promotion_mode": "sometimes"}, "promotion_mode", "is not one of"),
    ({"force_promote": "yes"}, "force_promote", "is not of type 'boolean'"),
]


def trigger(stack, conf: dict) -> tuple[int, dict]:
    """(HTTP status, body) of `POST /dags/<id>/dagRuns` with `conf`."""
    try:
        body = stack.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    return 200, body


@pytest.mark.parametrize(("conf", "name", "reason"), REFUSED)
def test_a_bad_param_is_refused_at_trigger_time_naming_it(airflow_stack, conf, name, reason):
    airflow_stack.dag_ready()
    before = airflow_stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["total_entries"]
    status, body = trigger(airflow_stack, conf)
    assert status == 400, body
    assert f"Invalid input for param {name}: " in body["detail"] and reason in body["detail"]
    assert airflow_stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["total_entries"] == before


def test_a_valid_conf_is_accepted(airflow_stack):
    """Triggered while the DAG is paused, so the run stays queued, then deleted: it never takes
    the single `max_active_runs` slot other tests' runs need."""
    airflow_stack.dag_ready()
    airflow_stack.api("PATCH", f"/dags/{DAG_ID}", {"is_paused": True})
    try:
        conf = {"source": "world", "epochs": 1, "learning_rate": 0.01, "max_regression": 0.5,
                "promotion_mode": "approve", "force_promote": False, "dry_run": True}  # fmt: skip
        status, run = trigger(airflow_stack, conf)
        assert status == 200, run
        assert run["conf"] == conf and run["state"] == "queued"
        airflow_stack.api("DELETE", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}")
    finally:
        airflow_stack.api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})


SECTIONS = ("Data", "Training", "Gate and promotion", "Safety")


def open_section(driver, title: str):
    """Expand one section of the form's accordion (one open at a time); returns its element."""
    from selenium.webdriver.common.by import By

    button = driver.find_element(By.XPATH, f"//button[normalize-space()='{title}']")
    if button.get_attribute("aria-expanded") != "true":
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        time.sleep(0.5)
        button.click()
        time.sleep(1.5)  # the expand animation
    return button.find_element(By.XPATH, "./ancestor::*[@data-part='item'][1]")


def test_the_trigger_form_in_the_ui(airflow_stack, tmp_path):
    """Sections, titles, ranges and sources in the real form (screenshot of each section, one
    below the other); an out-of-range number is kept as typed (no clamping) and the trigger
    refuses it naming the Param, with no run created."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    airflow_stack.dag_ready()
    params = airflow_stack.api("GET", f"/dags/{DAG_ID}/details")["params"]
    # The stack's sources (other tests add theirs), never a file's folder inside one.
    enum = params["source"]["schema"]["enum"]
    assert enum[0] is None and "world" in enum and "world/interactions" not in enum
    before = airflow_stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["total_entries"]

    driver = chromium(airflow_stack.token(), airflow_stack.base)
    texts, shots = {}, []
    try:
        driver.set_window_size(1500, 2400)
        driver.get(f"{airflow_stack.base}/dags/{DAG_ID}")
        trigger_button = "//button[normalize-space()='Trigger']"
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.XPATH, trigger_button))
        driver.find_element(By.XPATH, trigger_button).click()
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.XPATH, "//button[normalize-space()='Safety']")
        )
        time.sleep(2)
        for i, section in enumerate(SECTIONS):
            item = open_section(driver, section)
            texts[section] = item.text
            shots.append(tmp_path / f"{i}.png")
            item.screenshot(str(shots[-1]))
        open_section(driver, "Training")
        epochs = driver.find_element(By.CSS_SELECTOR, "input[name=element_epochs]")
        epochs.send_keys(Keys.CONTROL, "a")
        epochs.send_keys("0")
        epochs.send_keys(Keys.TAB)
        time.sleep(1)
        kept = epochs.get_attribute("value")
        driver.execute_script(
            "arguments[0].click()", driver.find_elements(By.XPATH, trigger_button)[-1]
        )
        WebDriverWait(driver, 60).until(
            lambda d: "Invalid input for param" in d.find_element(By.TAG_NAME, "body").text
        )
        refusal = driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()

    assert kept == "0"  # the number widget no longer clamps 0 to the minimum 1
    assert "Invalid input for param epochs: 0 is less than the minimum of 1" in refusal
    assert airflow_stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["total_entries"] == before
    expected = {
        "Data": ("Data source", "(empty: the deployment's source)", "TTR_DATA_ROOT",
                 "Training window (days)", "Allowed: 1 <= x <= 3650"),
        "Training": ("Max epochs", "Allowed: 1 <= x <= 1000", "Learning rate"),
        "Gate and promotion": ("Min lift over popularity (fraction)",
                               "recall@100 on the eval queries", "Promotion decision"),
        "Safety": ("Force promote (dangerous)", "DANGEROUS", "Dry run (production untouched)"),
    }  # fmt: skip
    for section, words in expected.items():
        for word in words:
            assert word in texts[section], (section, word)
    assert "*" not in texts["Safety"]  # no required asterisk on the switches
    assert "*" in texts["Training"]  # numbers keep theirs: an emptied one is refused in place

    images = [Image.open(shot) for shot in shots]
    sheet = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        sheet.paste(image, (0, top))
        top += image.height
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
