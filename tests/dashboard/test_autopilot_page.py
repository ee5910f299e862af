"""The Autopilot page in headless Chromium over a store the autopilot wrote (simulated time), and its
figures against the report's: one definition (analytics.autopilot)."""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from analytics import units
from analytics.autopilot import summary, table_rows
from analytics.filters import Filter
from analytics.per import primary_unit
from analytics.report import build_report, pct1, render, sig, signed_pct
from collector.autopilot_sim import run_autopilot
from collector.schema import primary_work_unit
from collector.sources.simulated import NS, SimulatedFleet
from collector.store.sqlite import SQLiteStore
from dashboard import figures
from dashboard.views.autopilot import autopilot_view
from dashboard.views.common import DEFAULT_RANGE, range_window
from tests.dashboard.test_browser_operator import _query

DAY0 = 20_000 * 86400 * NS


def _rows(driver: webdriver.Chrome, table_id: str) -> list[list[str]]:
    """The cells of a table's rows on screen (its current page), header row left out."""
    rows = []
    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tr"):
        cells = tr.find_elements(By.CSS_SELECTOR, "td")
        if cells:
            rows.append([(c.get_attribute("textContent") or "").strip() for c in cells])
    return rows


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
    WebDriverWait(chrome, 60, 0.2).until(lambda d: _rows(d, "autopilot-changes-table"))
    data = autopilot_view(store, DEFAULT_RANGE)
    assert data["timeline"] and data["saved_j"] > 0
    kwh = chrome.find_element(By.CSS_SELECTOR, "#kpi-autopilot-saved .wl-kpi-value").text
    assert kwh == units.energy(data["saved_j"])
    rows = _rows(chrome, "autopilot-changes-table")
    assert len(rows) == min(20, len(data["timeline"]))  # the first page of 20
    groups = _rows(chrome, "autopilot-groups-table")
    assert len(groups) == 4  # the four opted-in jobs; bert-ft next to ap-bert never appears
    assert "bert-ft" not in chrome.find_element(By.ID, "autopilot-groups-table").text
    traces = WebDriverWait(chrome, 60, 0.2).until(lambda d: d.execute_script(  # drawn yet?
        "const g = document.getElementById('autopilot-timeline').querySelector('.js-plotly-plot');"
        "return g && g.data ? g.data.filter(t => t.showlegend !== false).length : null"))
    assert traces == 4
    chrome.save_screenshot(str(artifacts_dir / "autopilot.png"))
    assert [e["message"] for e in chrome.get_log("browser") if e["level"] == "SEVERE"] == []
    # the report says the same, from the same definition over the same window
    window = range_window(store, DEFAULT_RANGE)
    assert summary(store, window)["saved_j"] == pytest.approx(data["saved_j"])
    text = render(build_report(store, window), "table")
    assert "Power-cap autopilot" in text
    assert f"{data['saved_pct']:.1f} % of what they would have used" in text


def test_autopilot_page_follows_the_node_filter(
        chrome: webdriver.Chrome, autopilot_server: tuple[str, SQLiteStore]) -> None:
    url, store = autopilot_server
    chrome.get(f"{url}/autopilot?node=node-01")
    WebDriverWait(chrome, 60, 0.2).until(lambda d: len(_rows(d, "autopilot-groups-table")) == 1)
    data = autopilot_view(store, DEFAULT_RANGE, "node-01")
    assert {s["host"] for s in data["timeline"]} == {"node-01"}
    rows = _rows(chrome, "autopilot-changes-table")
    assert len(rows) == len(data["timeline"])
    kwh = chrome.find_element(By.CSS_SELECTOR, "#kpi-autopilot-saved .wl-kpi-value").text
    assert kwh == units.energy(data["saved_j"])
    assert data["saved_j"] < autopilot_view(store, DEFAULT_RANGE)["saved_j"]


def _group_rows(driver: webdriver.Chrome) -> list[str]:
    """The group column of the savings table as shown."""
    return [row[0] for row in _rows(driver, "autopilot-groups-table")]


@pytest.mark.parametrize(("flt", "groups"), [
    (Filter(team="nlp"), ["node-00 ap-bert-node-00-1004-0000", "node-03 ap-phase-node-03"]),
    (Filter(model="NVIDIA A100-SXM4-80GB"), ["node-00 ap-bert-node-00-1004-0000"]),
    (Filter(model="NVIDIA H100 80GB HBM3", team="nlp"), ["node-03 ap-phase-node-03"]),
])
def test_autopilot_page_and_report_follow_the_model_and_team_filters(
        chrome: webdriver.Chrome, autopilot_server: tuple[str, SQLiteStore], flt: Filter,
        groups: list[str]) -> None:
    url, store = autopilot_server
    query = "&".join(f"{k}={v.replace(' ', '+')}" for k, v in (("model", flt.model), ("team", flt.team)) if v)
    chrome.get(f"{url}/autopilot?{query}")
    WebDriverWait(chrome, 60, 0.2).until(lambda d: _group_rows(d) == groups)
    window = range_window(store, DEFAULT_RANGE)
    report = build_report(store, window, flt=flt)
    whole = summary(store, window)
    part = report.autopilot
    assert [f"{g['host']} {g['job']}" for g in part["groups"]] == groups
    assert 0 < part["saved_j"] < whole["saved_j"]  # the filter changes the figures ...
    kwh = chrome.find_element(By.CSS_SELECTOR, "#kpi-autopilot-saved .wl-kpi-value").text
    assert kwh == units.energy(part["saved_j"])  # ... to the filtered report's
    assert len(_rows(chrome, "autopilot-changes-table")) == min(20, len(part["timeline"])) > 0
    text = render(report, "table")
    for g in groups:
        assert g in text
    assert "bert-ft" not in text.split("Power-cap autopilot")[1].split("Recommendations")[0]


def test_timeline_rows_carry_the_work_unit_and_never_minus_zero(
        autopilot_server: tuple[str, SQLiteStore]) -> None:
    _url, store = autopilot_server
    data = summary(store, range_window(store, DEFAULT_RANGE))
    heads, steps, _gheads, groups = table_rows(data, max_rows=1000)
    # the unit the agent measures in, and the one the report's PER columns use (tokens for LLMs)
    assert {s["unit"] for s in data["timeline"]} == {"tokens"}
    before = heads.index("before")
    for row in steps:
        if row[before] != "–":
            assert re.fullmatch(r"[\d.,]+ tokens/s, [\d,]+ W, PER [\d.,]+ tokens/J", row[before]), row
    slowdowns = [row[heads.index("slowdown")] for row in steps]
    assert "±0.0%" in slowdowns  # the scenario's phase job explores caps that cost nothing
    assert not any("-0.0" in c for row in steps + groups for c in row)
    # the throughput shown is the one stored, rounded to three significant digits
    first = data["timeline"][0]
    assert steps[-len(data["timeline"])][before].startswith(f"{sig(first['before']['throughput'], 4)} tokens/s")


def test_the_unit_is_the_one_the_agent_measures_in() -> None:
    assert primary_unit({"tokens": 9.0, "samples": 2.0}) == "tokens"  # collector.autopilot_groups' order
    assert primary_unit({"samples": 4.0, "flops": 3.0}) == "samples" and primary_unit({}) is None
    # the agent's side (collector.autopilot_groups) picks by the same rule
    assert primary_unit({"tokens": 9.0, "samples": 2.0}) == primary_work_unit({"tokens": 9.0, "samples": 2.0})
    row = {"time": "t", "host": "h", "job": "j", "reason": "explore", "previous_w": 300.0,
           "cap_w": 280.0, "slowdown_pct": -0.01, "unit": "flops",
           "before": {"throughput": 1.234e12, "power_w": 250.0, "per": 4.9e9}, "after": None}
    heads, steps, _g, _r = table_rows({"timeline": [row], "groups": []})
    assert steps[0][heads.index("before")] == "1.234e+12 FLOP/s, 250 W, PER 4.9e+09 FLOP/J"
    assert steps[0][heads.index("slowdown")] == "±0.0%" and steps[0][heads.index("after")] == "–"


def test_no_minus_zero_in_shares_and_changes() -> None:
    assert signed_pct(-0.04) == "±0.0%" and signed_pct(0.04) == "±0.0%" and signed_pct(-1.26) == "-1.3%"
    assert pct1(-0.04) == "0.0 %" and pct1(12.345) == "12.3 %" and pct1(None) == "–"


@pytest.mark.parametrize("table", ["changes", "groups"])
def test_autopilot_tables_export_the_csv_on_screen(
        chrome: webdriver.Chrome, autopilot_server: tuple[str, SQLiteStore], tmp_path: Path,
        table: str) -> None:
    url, store = autopilot_server
    chrome.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    chrome.get(f"{url}/autopilot")
    WebDriverWait(chrome, 60, 0.2).until(lambda d: _rows(d, f"autopilot-{table}-table"))
    shown = _rows(chrome, f"autopilot-{table}-table")
    headers = [(h.get_attribute("textContent") or "").strip() for h in chrome.find_elements(
        By.CSS_SELECTOR, f"#autopilot-{table}-table th.dash-header span.column-header-name")]
    chrome.find_element(By.CSS_SELECTOR, f"#card-autopilot-{table} button.export").click()
    got = WebDriverWait(chrome, 20, 0.1).until(lambda d: list(tmp_path.glob("*.csv")))
    time.sleep(0.3)
    data = list(csv.reader(io.StringIO(got[0].read_text(encoding="utf-8-sig"))))
    heads, steps, gheads, groups = table_rows(autopilot_view(store, DEFAULT_RANGE), max_rows=200)
    assert data[0] == headers == (heads if table == "changes" else gheads)
    assert data[1:len(shown) + 1] == shown  # the rows on screen, as shown ...
    assert data[1:] == (steps if table == "changes" else groups)  # ... and every page: the report's rows


def test_zoom_on_the_autopilot_timeline_becomes_the_range(
        chrome: webdriver.Chrome, autopilot_server: tuple[str, SQLiteStore]) -> None:
    url, store = autopilot_server
    chrome.set_window_size(1440, 900)
    chrome.get(f"{url}/autopilot?range=24h")
    WebDriverWait(chrome, 60, 0.2).until(lambda d: _rows(d, "autopilot-changes-table"))
    # A resize re-plots every chart (an `autosize` relayout): it is no zoom, the range stays.
    chrome.set_window_size(1300, 900)
    time.sleep(1.5)
    chrome.set_window_size(1440, 900)
    time.sleep(1.5)
    assert _query(chrome)["range"] == "24h"
    start, end = range_window(store, "24h").start_ns, range_window(store, "24h").end_ns
    a, b = figures.iso(end - 3600 * NS), figures.iso(end - 2400 * NS)
    assert start < end - 3600 * NS
    chrome.execute_script("""
        const gd = document.querySelector('#autopilot-timeline .js-plotly-plot');
        Plotly.relayout(gd, {'xaxis.range[0]': arguments[0], 'xaxis.range[1]': arguments[1]});""", a, b)
    want = f"{a.replace(' ', 'T')[:19]}..{b.replace(' ', 'T')[:19]}"
    WebDriverWait(chrome, 30, 0.2).until(lambda d: _query(d).get("range") == want)
    # redrawn over the zoomed range: only the changes in it are listed
    data = autopilot_view(store, want)
    assert 0 < len(data["timeline"]) < len(autopilot_view(store, "24h")["timeline"])
    WebDriverWait(chrome, 30, 0.2).until(
        lambda d: len(_rows(d, "autopilot-changes-table")) == min(20, len(data["timeline"])))


def test_an_autopilot_newer_than_the_settled_range_is_running_not_absent(tmp_path: Path) -> None:
    """The page ends at the last settled five minutes: an autopilot that started after that has
    no change in the range, and the page says it is running (since when), not that it never ran."""
    logger = logging.getLogger("wattlens")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        run, _ = run_autopilot(SimulatedFleet(nodes=2, gpus_per_node=4, scenario="autopilot"),
                               DAY0, DAY0 + 1970 * NS, 10, state_dir=tmp_path, rules=["ap-*"])
    finally:
        logger.setLevel(level)
    end = max(p.time_ns for p in run.points)
    late = end - 150 * NS  # only the autopilot's last 2.5 minutes were written: it "just started"
    kept = [p for p in run.points if p.measurement != "autopilot" or p.time_ns >= late]
    assert any(p.measurement == "autopilot" for p in kept)
    store = SQLiteStore(tmp_path / "db.sqlite")
    store.init()
    store.write(kept)
    data = autopilot_view(store, "1h")
    assert data["window"][1] <= late  # the settled range ends before the autopilot's points
    assert not data["timeline"] and not data["groups"]
    assert data["pending_ns"] == max(p.time_ns for p in kept if p.measurement == "autopilot")
    hosts = {p.tag("host") for p in kept if p.measurement == "autopilot"}
    assert autopilot_view(store, "1h", node="no-such-node")["pending_ns"] is None
    assert autopilot_view(store, "1h", node=sorted(hosts)[0])["pending_ns"] is not None
    store.write([p for p in run.points if p.measurement == "autopilot"])  # its whole history
    assert autopilot_view(store, "1h")["pending_ns"] is None  # changes in the range: no notice
    store.close()
