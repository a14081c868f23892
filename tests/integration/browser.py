"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Root in a container: no sandbox; and nothing that reaches out to the network by itself.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
)


@contextmanager
def chromium():
    profile = tempfile.mkdtemp(prefix="rapid-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE since the last call (reading the log empties it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# Per uPlot chart: how many points of each series hold a number, and how many canvas pixels have one
# of the series' colours (dashboard.js COLORS): the lines themselves, since axes and grid are grey.
CHART_STATE = """
const colors = [[37, 99, 235], [22, 163, 74], [234, 88, 12], [147, 51, 234]];
const out = {};
for (const [id, chart] of Object.entries(window.rapidCharts || {})) {
  const points = chart.data.slice(1).map(s => s.filter(v => v !== null && v !== undefined).length);
  const canvas = chart.root.querySelector("canvas");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let line = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] > 200 && colors.some(([r, g, b]) => Math.abs(pixels[i] - r) < 30
        && Math.abs(pixels[i + 1] - g) < 30 && Math.abs(pixels[i + 2] - b) < 30)) line++;
  }
  out[id] = {points, x: chart.data[0].length, line_pixels: line};
}
return out;
"""


def chart_state(driver) -> dict:
    return driver.execute_script(CHART_STATE)
