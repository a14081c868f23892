"""The dashboard in a real headless Chromium against ``rapid serve`` on the embedded defaults, with a
real (tiny-random) job: pages load without console errors, the plots draw the job's metrics, the
page refreshes while a job runs, its Cancel button cancels it, and another project sees nothing.

Screenshots go to $RAPID_TEST_ARTIFACTS (default: <tmp>/rapid-test-artifacts); the test prints them.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser import chart_state, chromium, console_errors
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from service_harness import Service, arithmetic_jsonl, create_tiny_job, service_env, wait_for_job, wait_until

pytestmark = pytest.mark.integration
ARTIFACTS = Path(os.environ.get("RAPID_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "rapid-test-artifacts"))
PLOTS = {"reward", "eval", "signal", "staleness", "ess", "clip", "kl", "grad", "time", "speed"}
STEP_PLOTS = {"ess", "clip", "kl", "grad"}
ROUNDS, STEPS_PER_ROUND = 4, 2  # tiny_hyperparameters: 2 prompts x G 2 = 4 samples, m = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("dashboard")
    service = Service(service_env(work), work)  # every default: SQLite, filesystem broker, one worker
    try:
        service.start_api("-m", "api.cli", "serve", "--port", "{port}")
        yield service
    finally:
        service.stop()


def sign_in(driver, base_url: str, key: str) -> None:
    driver.get(f"{base_url}/dashboard/jobs")
    assert "/dashboard/login" in driver.current_url  # no cookie yet: the login form
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # The login form's own URL ends in "?next=/dashboard/jobs": compare the path, not the URL's tail.
    WebDriverWait(driver, 30).until(lambda d: urlsplit(d.current_url).path == "/dashboard/jobs")


def drawn(driver) -> dict:
    return WebDriverWait(driver, 30).until(lambda d: (s := chart_state(d)) and set(s) == PLOTS and s)


def status_badge(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "h1 .badge").text


def fetch_status(driver, url: str) -> int:
    """HTTP status of a same-origin GET from the page, with the browser's own cookie."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => done(r.status));", url
    )


def shoot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"dashboard screenshot: {path}")
    return path


def test_dashboard_plots_a_real_job_cancels_from_the_button_and_hides_other_projects(served, tmp_path):
    key, other_key = served.create_key("alpha"), served.create_key("beta")
    client = served.client(key)
    upload = client.files.create(
        file=arithmetic_jsonl(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune"
    )
    finished = create_tiny_job(client, upload.id, rounds=ROUNDS)
    # One worker takes one job at a time, and the broker need not deliver two messages in creation
    # order: the endless job is created once the finite one runs, so it cannot take the worker first.
    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(finished.id).status != "queued",
        120,
        "the finite job to start",
        served,
    )
    endless = create_tiny_job(client, upload.id, rounds=100_000)  # runs until the button cancels it
    assert wait_for_job(client, finished.id, served).status == "succeeded", served.logs()

    started = time.monotonic()
    with chromium() as driver:
        sign_in(driver, served.base_url, key)
        cookie = driver.get_cookie("rapid_dashboard_key")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
        assert key not in driver.execute_script("return document.cookie")  # scripts never see the key
        rows = {
            r.get_attribute("data-job-id") for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
        }
        assert rows == {finished.id, endless.id}

        # The finished job: every plot drawn from its metrics, no console error.
        driver.get(f"{served.base_url}/dashboard/jobs/{finished.id}")
        charts = drawn(driver)
        for plot in PLOTS - {"eval"}:
            want = ROUNDS * STEPS_PER_ROUND if plot in STEP_PLOTS else ROUNDS
            assert charts[plot]["x"] == want and charts[plot]["points"][0] == want, (plot, charts[plot])
            assert charts[plot]["line_pixels"] > 50, (plot, charts[plot])
        assert charts["eval"]["x"] == 2 and charts["eval"]["points"][0] == 2  # before and after
        assert status_badge(driver) == "succeeded"
        assert driver.find_elements(By.ID, "cancel") == []
        links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a.download")]
        assert len(links) == len(client.fine_tuning.jobs.checkpoints.list(finished.id).data) > 0
        assert fetch_status(driver, links[0]) == 200
        assert console_errors(driver) == []
        shoot(driver, "dashboard-job-succeeded.png")

        # The running job: the plots grow without a reload, then Cancel stops it.
        wait_until(
            lambda: client.fine_tuning.jobs.retrieve(endless.id).status == "running", 120, "the job to run"
        )
        driver.get(f"{served.base_url}/dashboard/jobs/{endless.id}")
        first = drawn(driver)["reward"]["x"]
        WebDriverWait(driver, 60).until(lambda d: chart_state(d)["reward"]["x"] > first + 1)
        assert status_badge(driver) == "running"
        shoot(driver, "dashboard-job-running.png")
        driver.find_element(By.ID, "cancel").click()
        WebDriverWait(driver, 10).until(lambda d: d.switch_to.alert).accept()
        WebDriverWait(driver, 30).until(lambda d: status_badge(d) == "cancelled")
        assert client.fine_tuning.jobs.retrieve(endless.id).status == "cancelled"
        assert driver.find_elements(By.ID, "cancel") == []
        assert console_errors(driver) == []

        # Another project's key: an empty list, and the job's page and adapter are not found.
        driver.find_element(By.CSS_SELECTOR, "form[action='/dashboard/logout'] button").click()
        WebDriverWait(driver, 10).until(lambda d: "/dashboard/login" in d.current_url)
        sign_in(driver, served.base_url, other_key)
        assert driver.find_elements(By.CSS_SELECTOR, "tr[data-job-id]") == []
        assert finished.id not in driver.page_source
        driver.get(f"{served.base_url}/dashboard/jobs/{finished.id}")
        assert driver.find_element(By.TAG_NAME, "h1").text == "Not found"
        assert fetch_status(driver, links[0]) == 404
        assert [e for e in console_errors(driver) if "404" not in e] == []  # only the expected 404s

        # Signed out: pages send the browser to the login form.
        driver.delete_all_cookies()
        driver.get(f"{served.base_url}/dashboard/jobs/{finished.id}")
        assert "/dashboard/login" in driver.current_url and key not in driver.current_url
    print(f"browser part of the dashboard test: {time.monotonic() - started:.1f} s")
