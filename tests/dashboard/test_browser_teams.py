"""Team showback in a real headless Chromium: the Jobs page's team table equals `wattlens report`'s
`teams`, the ?team= filter changes the numbers, and its CSV export is the table on screen."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.dashboard.test_browser import _idle, _open, _texts, _wait
from tests.dashboard.test_browser_operator import _query, _report, _table
from tests.dashboard.test_browser_reconcile import _window

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(plain_server: str) -> str:
    return plain_server


def _teams(driver: webdriver.Chrome) -> list[dict[str, str]]:
    _wait(driver, lambda d: _table(d, "teams-table"))
    return _table(driver, "teams-table")


def _kwh(j: float) -> str:
    return f"{j / 3.6e6:,.2f}"


def test_the_team_table_equals_the_report_and_the_filter_changes_it(
        chrome: webdriver.Chrome, server: str, demo_db: Path) -> None:
    chrome.set_window_size(1440, 900)
    _open(chrome, server + "/jobs?range=6h", "page-jobs")
    rows = _teams(chrome)
    report = _report(demo_db, _window(chrome, "jobs-window"))
    assert [(r["team"], r["energy_kwh"]) for r in rows] == [
        (t["team"], _kwh(t["energy_j"])) for t in report["teams"]]
    assert "(unattributed)" in {r["team"] for r in rows}
    assert "idle power shared by allocation" in chrome.find_element(By.ID, "teams-summary").text
    chrome.find_element(By.CSS_SELECTOR, "#teams-by input[value=namespace]").click()
    _wait(chrome, lambda d: "llm-research" in {r["team"] for r in _table(d, "teams-table")})
    spaces = _table(chrome, "teams-table")
    assert [(r["team"], r["energy_kwh"]) for r in spaces] == [
        (t["namespace"], _kwh(t["energy_j"])) for t in report["namespaces"]]
    assert _texts(chrome, "#teams-table th.dash-header span.column-header-name")[0] == "Namespace"

    # A click on a team's row filters to it (the link, reloaded, keeps it).
    _open(chrome, server + "/jobs?range=6h", "page-jobs")
    cell = next(c for c in chrome.find_elements(By.CSS_SELECTOR, '#teams-table td[data-dash-column="team"]')
                if c.text.strip() == "research")
    cell.click()
    _wait(chrome, lambda d: _query(d).get("team") == "research")
    _idle(chrome, "page-jobs")
    chrome.refresh()
    _wait(chrome, lambda d: d.find_elements(By.ID, "page-jobs"))
    _idle(chrome, "page-jobs")
    assert _query(chrome).get("team") == "research"
    filtered = _teams(chrome)
    assert {r["team"] for r in filtered} <= {"research", "(rest of these hosts)"}
    assert filtered != rows  # the filter changes the numbers ...
    part = _report(demo_db, _window(chrome, "jobs-window"), "--team", "research")
    assert [(r["team"], r["energy_kwh"]) for r in filtered] == [  # ... to the filtered report's
        (t["team"], _kwh(t["energy_j"])) for t in part["teams"]]
    jobs = set(_texts(chrome, '#jobs-table td[data-dash-column="job"]'))
    assert jobs and all(j.startswith(("llm-pretrain", "nightly-eval")) for j in jobs)


def test_the_team_csv_is_the_table_on_screen(chrome: webdriver.Chrome, server: str,
                                             tmp_path: Path) -> None:
    chrome.set_window_size(1440, 900)
    chrome.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    _open(chrome, server + "/jobs?range=6h", "page-jobs")
    shown = _teams(chrome)
    headers = _texts(chrome, "#teams-table th.dash-header span.column-header-name")
    chrome.find_element(By.CSS_SELECTOR, "#card-teams button.export").click()
    got = _wait(chrome, lambda d: list(tmp_path.glob("*.csv")), timeout=20)
    time.sleep(0.3)
    data = list(csv.reader(io.StringIO(got[0].read_text(encoding="utf-8-sig"))))
    assert data[0] == headers
    assert len(data) - 1 == len(shown) >= 5
    from dashboard.components import TEAM_COLUMNS

    cols = [c["id"] for c in TEAM_COLUMNS]
    for line, row in zip(data[1:], shown, strict=True):
        for col, value in zip(cols, line, strict=True):
            on_screen = row[col]
            if col in ("team", "per_unit") or not value:
                assert value == on_screen, (col, value, on_screen)
            else:
                decimals = len(on_screen.split(".")[1]) if "." in on_screen else 0
                assert f"{float(value):,.{decimals}f}" == on_screen, (col, value, on_screen)


def test_the_team_picker_lists_the_teams_and_filters_to_one(
        chrome: webdriver.Chrome, server: str, demo_db: Path) -> None:
    chrome.set_window_size(1440, 900)
    _open(chrome, server + "/jobs?range=6h", "page-jobs")
    rows = _teams(chrome)
    report = _report(demo_db, _window(chrome, "jobs-window"))
    chrome.find_element(By.CSS_SELECTOR, "#filter-team").click()
    options = _wait(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, ".dash-dropdown-options [role=option]"))
    # The picks are the teams in the window, the ones the report names (not its "(...)" rows).
    assert [o.text.strip() for o in options] == sorted(
        t["team"] for t in report["teams"] if not t["team"].startswith("("))
    next(o for o in options if o.text.strip() == "research").click()
    _wait(chrome, lambda d: _query(d).get("team") == "research")
    _idle(chrome, "page-jobs")
    assert chrome.find_element(By.CSS_SELECTOR, "#filter-team").text.strip() == "research"
    _wait(chrome, lambda d: _teams(d) != rows)  # the numbers change ...
    filtered = _teams(chrome)
    part = _report(demo_db, _window(chrome, "jobs-window"), "--team", "research")
    assert [(r["team"], r["energy_kwh"]) for r in filtered] == [  # ... to the filtered report's
        (t["team"], _kwh(t["energy_j"])) for t in part["teams"]]
    assert _query(chrome)["range"] == "6h"  # the other parts of the link stay
