"""The Autopilot page in headless Chromium over a store the autopilot wrote (simulated time), and its
figures against the report's: one definition (analytics.autopilot)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from analytics.autopilot import summary
from analytics.report import build_report, render
from collector.autopilot_sim import run_autopilot
from collector.sources.simulated import NS, SimulatedFleet
from collector.store.sqlite import SQLiteStore
from dashboard.views.autopilot import autopilot_view
from dashboard.views.common import DEFAULT_RANGE, window_for

DAY0 = 20_000 * 86400 * NS


@pytest.fixture(scope="module")
def autopilot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SQLiteStore]]:
    from dashboard.app import create_app
    from dashboard.server import DashboardServer

    tmp = tmp_path_factory.mktemp("autopilot")
    logger = logging.getLogger("wattlens")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the run's own log lines; restored below, whatever happens
    try:
        run, _ = run_autopilot(SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot"),
                               DAY0, DAY0 + 3600 * NS, 10, state_dir=tmp, rules=["ap-*"])
    finally:
        logger.setLevel(level)
    store = SQLiteStore(tmp / "db.sqlite")
    store.init()
    store.write(run.points)
    srv = DashboardServer(create_app(store, refresh_s=3600), "127.0.0.1", 0)
    srv.start()
    yield srv.url.rstrip("/"), store
    srv.stop()
    store.close()


def test_autopilot_page_shows_the_reports_figures(
        chrome: webdriver.Chrome, autopilot_server: tuple[str, SQLiteStore], artifacts_dir: Path) -> None:
    url, store = autopilot_server
    chrome.get_log("browser")  # start clean: only this page's messages count
    chrome.get(f"{url}/autopilot")
    WebDriverWait(chrome, 60, 0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#autopilot-changes-table tbody tr"))
    data = autopilot_view(store, DEFAULT_RANGE)
    assert data["timeline"] and data["saved_j"] > 0
    kwh = chrome.find_element(By.CSS_SELECTOR, "#kpi-autopilot-saved .wl-kpi-value").text
    assert kwh == f"{data['saved_j'] / 3.6e6:,.3g} kWh"
    rows = chrome.find_elements(By.CSS_SELECTOR, "#autopilot-changes-table tbody tr")
    assert len(rows) == len(data["timeline"])
    groups = chrome.find_elements(By.CSS_SELECTOR, "#autopilot-groups-table tbody tr")
    assert len(groups) == 4  # the four opted-in jobs; bert-ft next to ap-bert never appears
    assert "bert-ft" not in chrome.find_element(By.ID, "autopilot-groups-table").text
    traces = WebDriverWait(chrome, 60, 0.2).until(lambda d: d.execute_script(  # drawn yet?
        "const g = document.getElementById('autopilot-timeline').querySelector('.js-plotly-plot');"
        "return g && g.data ? g.data.filter(t => t.showlegend !== false).length : null"))
    assert traces == 4
    chrome.save_screenshot(str(artifacts_dir / "autopilot.png"))
    assert [e["message"] for e in chrome.get_log("browser") if e["level"] == "SEVERE"] == []
    # the report says the same, from the same definition over the same window
    window = window_for(store, DEFAULT_RANGE)
    assert summary(store, window)["saved_j"] == pytest.approx(data["saved_j"])
    text = render(build_report(store, window), "table")
    assert "Power-cap autopilot" in text
    assert f"{data['saved_pct']:.1f} % of what they would have used" in text


def test_autopilot_page_follows_the_node_filter(
        chrome: webdriver.Chrome, autopilot_server: tuple[str, SQLiteStore]) -> None:
    url, store = autopilot_server
    chrome.get(f"{url}/autopilot?node=node-01")
    WebDriverWait(chrome, 60, 0.2).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#autopilot-groups-table tbody tr")) == 1)
    data = autopilot_view(store, DEFAULT_RANGE, "node-01")
    assert {s["host"] for s in data["timeline"]} == {"node-01"}
    rows = chrome.find_elements(By.CSS_SELECTOR, "#autopilot-changes-table tbody tr")
    assert len(rows) == len(data["timeline"])
    kwh = chrome.find_element(By.CSS_SELECTOR, "#kpi-autopilot-saved .wl-kpi-value").text
    assert kwh == f"{data['saved_j'] / 3.6e6:,.3g} kWh"
    assert data["saved_j"] < autopilot_view(store, DEFAULT_RANGE)["saved_j"]
