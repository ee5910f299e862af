"""Every page honours every filter, in a real headless Chromium: the Alerts page keeps the alerts of
the filtered part of the fleet, the GPU health page follows the team filter, and their figures
match what the analytics (and `wattlens report`) give for the same filter."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from analytics import queries
from collector.store.sqlite import SQLiteStore
from dashboard import views
from tests.dashboard.test_browser import _open, _wait
from tests.dashboard.test_browser_operator import _query, _report, _summary_count, _table
from tests.dashboard.test_browser_reconcile import _window

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(plain_server: str) -> str:
    return plain_server


def _targets(driver: webdriver.Chrome, url: str) -> list[str]:
    _open(driver, url, "page-alerts")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#kpi-alerts-firing .wl-kpi-value"))
    return [r["target"] for r in _table(driver, "alerts-table")]


def test_alerts_follow_the_node_and_team_filters(chrome: webdriver.Chrome, server: str,
                                                 demo_db: Path) -> None:
    chrome.set_window_size(1440, 900)
    everything = _targets(chrome, server + "/alerts?range=24h")
    assert len(everything) >= 5
    node = _targets(chrome, server + "/alerts?range=24h&node=node-01")
    assert node and set(node) < set(everything)  # the filter changes what is listed ...
    assert all(t.startswith("node-01/") for t in node)  # ... to node-01's GPUs
    assert [t for t in everything if t.startswith("node-01/")] == node
    assert "node-01" in chrome.find_element(By.ID, "kpi-alerts-firing").text

    # The team filter keeps the team's jobs and the GPUs of the hosts they ran on (analytics.filters).
    store = SQLiteStore(demo_db)
    try:
        tagged = queries.job_energy_by_tags(store, views.window_for(store, "24h"), ("team",))
    finally:
        store.close()
    jobs = {job for job, _host, team in tagged if team == "research"}
    hosts = {host for _job, host, team in tagged if team == "research"}
    team = _targets(chrome, server + "/alerts?range=24h&team=research")
    assert team == [t for t in everything if t in jobs or t.split("/")[0] in hosts]
    assert team != everything and any(t in jobs for t in team)


def test_gpu_health_follows_the_team_filter(chrome: webdriver.Chrome, server: str, demo_db: Path) -> None:
    chrome.set_window_size(1440, 900)
    _open(chrome, server + "/gpus?range=6h", "page-gpus")
    _wait(chrome, lambda d: "GPUs" in d.find_element(By.ID, "gpus-summary").text)
    everything = _summary_count(chrome)
    _open(chrome, server + "/gpus?range=6h&team=research", "page-gpus")
    _wait(chrome, lambda d: "GPUs" in d.find_element(By.ID, "gpus-summary").text)
    count = _summary_count(chrome)
    assert 0 < count < everything  # the team filter narrows the page ...
    window = _window(chrome, "gpus-window-text")
    report = _report(demo_db, window, "--team", "research")
    assert count == report["totals"]["gpus"]  # ... to the GPUs the filtered report counts
    hosts = {r["gpu"].split("/")[0] for r in _table(chrome, "health-table")}
    assert hosts and len(hosts) * 8 == count


def test_a_range_with_many_jobs_lists_the_largest_and_typing_finds_any(
        chrome: webdriver.Chrome, server: str, demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo store holds a few dozen jobs; with 3 listed, it stands for a fleet of thousands.
    from dashboard.views import gpus

    monkeypatch.setattr(gpus, "LISTED_JOBS", 3)
    store = SQLiteStore(demo_db)
    energy = {j: e for (j,), e in queries.energy_by(store, views.window_for(store, "24h"), "job",
                                                    ("job",)).items()}
    store.close()
    largest = sorted(sorted(energy, key=lambda j: -energy[j])[:3])
    smallest = min(energy, key=lambda j: energy[j])
    _open(chrome, server + "/?range=24h", "page-fleet")
    picker = chrome.find_element(By.CSS_SELECTOR, "#filter-job")
    _wait(chrome, lambda d: picker.text.strip() == f"all · search {len(energy):,}")
    picker.click()
    shown = _wait(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, ".dash-dropdown-options [role=option]"))
    assert [o.text.strip() for o in shown] == largest  # the three with the most energy
    box = _wait(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, ".dash-dropdown-search, "
                                                  ".dash-dropdown input"))[0]
    box.send_keys(smallest)  # not listed: the server searches every job of the range
    found = _wait(chrome, lambda d: [o for o in d.find_elements(
        By.CSS_SELECTOR, ".dash-dropdown-options [role=option]") if o.text.strip() == smallest])
    found[0].click()
    _wait(chrome, lambda d: _query(d).get("job") == smallest)
    assert chrome.find_element(By.CSS_SELECTOR, "#filter-job").text.strip() == smallest
