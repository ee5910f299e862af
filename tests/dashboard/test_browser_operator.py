"""The operator's view in a real headless Chromium: the GPU health page, links that carry the view,
filters, CSV export equal to the table on screen, and the layout at 1,000 and 1,920 px."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By

from analytics import units
from analytics.per import PER_UNITS
from collector.store.sqlite import SQLiteStore
from dashboard import views
from dashboard.urlstate import FILTER_KEYS
from tests.dashboard.test_browser import TRACES_JS, _idle, _open, _shot, _texts, _traces, _wait
from tests.dashboard.test_browser_reconcile import _card, _iso, _window

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(plain_server: str) -> str:
    return plain_server


def _query(driver: webdriver.Chrome) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(driver.current_url).query).items()}


def _dropdown_text(driver: webdriver.Chrome, dd_id: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#{dd_id}").text.strip()


def _table(driver: webdriver.Chrome, table_id: str) -> list[dict[str, str]]:
    """The rows of a DataTable as shown on screen (current page), keyed by column id."""
    rows = []
    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr"):
        cells = tr.find_elements(By.CSS_SELECTOR, "td[data-dash-column]")
        if cells:
            rows.append({c.get_attribute("data-dash-column") or "": c.text.strip() for c in cells})
    return rows


def _f(text: str) -> float:
    return float(text.replace(",", ""))


def _summary_count(driver: webdriver.Chrome) -> int:
    text = driver.find_element(By.ID, "gpus-summary").text
    return int(text.split(" GPUs")[0])


def test_health_page_renders_every_gpu(chrome: webdriver.Chrome, server: str, artifacts_dir: Path) -> None:
    chrome.set_window_size(1440, 900)
    chrome.get_log("browser")
    _open(chrome, server + "/gpus?range=6h", "page-gpus")
    _wait(chrome, lambda d: "GPUs" in d.find_element(By.ID, "gpus-summary").text)
    assert _summary_count(chrome) == 32  # 4 nodes x 8 GPUs
    assert "the charts draw the table's first 16 (flagged first) and the mean of all 32" in \
        chrome.find_element(By.ID, "gpus-summary").text
    first_page = [r["gpu"] for r in _table(chrome, "health-table")]  # 16 rows: flagged first
    for field in ("temp_c", "sm_clock_mhz", "power_pct", "mem_util_pct", "mem_clock_mhz"):
        traces = _traces(chrome, f"gpus-{field}")
        names = [t["name"] for t in traces]
        assert names == [*first_page, "mean of all 32 GPUs"], (field, names[:3])
        assert all(len(t["x"]) > 50 and any(y is not None for y in t["y"]) for t in traces)
    # The simulator writes no NVML clock-event reasons: the chart says so rather than drawing zeros.
    assert chrome.execute_script(TRACES_JS, "gpus-throttle_pct") == []
    assert "No throttle reasons stored" in chrome.find_element(By.ID, "gpus-throttle_pct").text
    rows = _table(chrome, "health-table")
    assert len(rows) == 16  # the first page of 32
    for r in rows:
        assert 20 <= _f(r["temp_c"]) <= 95 and _f(r["sm_clock_mhz"]) > 0
        assert _f(r["power_pct"]) == pytest.approx(
            100 * _f(r["power_w"]) / _f(r["power_limit_w"]), abs=0.6)  # rounding of W
    # Flagged GPUs come first, each with the number that flagged it.
    flags = [r["flags"] for r in rows]
    flagged = [f for f in flags if f]
    assert flags[:len(flagged)] == flagged
    _shot(chrome, artifacts_dir / "gpus.png")
    assert [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_link_opens_the_same_view_and_a_reload_keeps_it(chrome: webdriver.Chrome, server: str) -> None:
    chrome.set_window_size(1440, 900)
    link = server + "/gpus?range=6h&node=node-01&eta=0.3"
    _open(chrome, link, "page-gpus")
    _wait(chrome, lambda d: d.find_element(By.ID, "gpus-summary").text.startswith("8 GPUs"))
    assert _dropdown_text(chrome, "range") == "Last 6 hours"
    assert _dropdown_text(chrome, "filter-node") == "node-01"
    assert {r["gpu"].split("/")[0] for r in _table(chrome, "health-table")} == {"node-01"}
    assert _query(chrome) == {"range": "6h", "node": "node-01", "eta": "0.3"}
    # The menu carries the view to the next page, η included.
    chrome.find_element(By.ID, "nav-tradeoff").click()
    _idle(chrome, "page-tradeoff")
    assert urlparse(chrome.current_url).path == "/tradeoff"
    assert _query(chrome) == {"range": "6h", "node": "node-01", "eta": "0.3"}
    assert any(t["name"].startswith("recommended at η=0.30") for t in _traces(chrome, "tradeoff-pareto"))
    # A fresh load of the current URL (a reload, or someone else opening it) gives the same view.
    chrome.delete_all_cookies()
    chrome.execute_script("window.sessionStorage.clear(); window.localStorage.clear();")
    _open(chrome, chrome.current_url, "page-tradeoff")
    assert _dropdown_text(chrome, "range") == "Last 6 hours"
    assert any(t["name"].startswith("recommended at η=0.30") for t in _traces(chrome, "tradeoff-pareto"))


def test_an_absolute_range_link_round_trips(chrome: webdriver.Chrome, server: str, demo_db: Path) -> None:
    store = SQLiteStore(demo_db)
    end = views.data_end_ns(store)
    store.close()
    assert end is not None
    key = views.range_key_for(end - 30 * 3600 * 10**9, end - 28 * 3600 * 10**9)
    _open(chrome, f"{server}/gpus?range={key}", "page-gpus")
    _wait(chrome, lambda d: "GPUs" in d.find_element(By.ID, "gpus-summary").text)
    assert _query(chrome)["range"] == key
    assert _dropdown_text(chrome, "range") == views.range_label(key)
    xs = _traces(chrome, "gpus-temp_c")[0]["x"]
    first, last = xs[0].replace(" ", "T")[:16], xs[-1].replace(" ", "T")[:16]
    assert first >= key[:16] and last < key.split("..")[1][:16]  # every point inside the range


def test_a_bad_link_says_which_parameter(chrome: webdriver.Chrome, server: str) -> None:
    _open(chrome, server + "/gpus?range=yesterday", "page-gpus")
    msg = _wait(chrome, lambda d: d.find_element(By.ID, "url-error").text)
    assert "range" in msg and "'yesterday'" in msg


def test_filters_change_the_numbers(chrome: webdriver.Chrome, server: str) -> None:
    chrome.set_window_size(1440, 900)
    _open(chrome, server + "/gpus?range=6h", "page-gpus")
    _wait(chrome, lambda d: "GPUs" in d.find_element(By.ID, "gpus-summary").text)
    all_rows = _summary_count(chrome)
    chrome.find_element(By.CSS_SELECTOR, "#filter-model").click()
    options = _wait(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=option]"))
    model = options[0].text
    options[0].click()
    _wait(chrome, lambda d: _query(d).get("model") == model)
    _idle(chrome, "page-gpus")
    rows = _table(chrome, "health-table")
    assert 0 < _summary_count(chrome) < all_rows
    assert {r["model"] for r in rows} == {model}
    assert len(_traces(chrome, "gpus-temp_c")) == _summary_count(chrome)


def test_csv_export_equals_the_table_on_screen(chrome: webdriver.Chrome, server: str, tmp_path: Path) -> None:
    chrome.set_window_size(1440, 900)
    chrome.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    _open(chrome, server + "/gpus?range=6h&node=node-02", "page-gpus")
    _wait(chrome, lambda d: d.find_element(By.ID, "gpus-summary").text.startswith("8 GPUs"))
    shown = _table(chrome, "health-table")
    headers = _texts(chrome, "#health-table th.dash-header span.column-header-name")
    chrome.find_element(By.CSS_SELECTOR, "#card-gpus-table button.export").click()
    got = _wait(chrome, lambda d: [p for p in tmp_path.glob("*.csv")], timeout=20)
    time.sleep(0.3)
    data = list(csv.reader(io.StringIO(got[0].read_text(encoding="utf-8-sig"))))
    assert data[0] == headers
    assert len(data) - 1 == len(shown) == 8
    cols = [c["id"] for c in __import__("dashboard.components", fromlist=["x"]).HEALTH_COLUMNS]
    for line, row in zip(data[1:], shown, strict=True):
        for col, value in zip(cols, line, strict=True):
            on_screen = row[col]
            if value and on_screen and on_screen.replace(",", "").replace(".", "").lstrip("-").isdigit():
                assert float(value) == pytest.approx(float(on_screen.replace(",", "")), abs=1e-9), col
            else:
                assert value == on_screen, (col, value, on_screen)


@pytest.mark.parametrize("width", [1000, 1440, 1920])
def test_layout_menu_fits(chrome: webdriver.Chrome, server: str, artifacts_dir: Path, width: int) -> None:
    chrome.set_window_size(width, 900)
    _open(chrome, server + "/?range=6h", "page-fleet")
    view_w = chrome.execute_script("return document.documentElement.clientWidth")
    for link in chrome.find_elements(By.CSS_SELECTOR, ".wl-nav-link"):
        r = chrome.execute_script("const b = arguments[0].getBoundingClientRect();"
                                  "return [b.left, b.right, arguments[0].scrollWidth, arguments[0].clientWidth];",
                                  link)
        assert 0 <= r[0] and r[1] <= view_w and r[2] <= r[3] + 1, (link.text, r, view_w)
    assert chrome.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    nav = chrome.find_element(By.ID, "nav")
    assert chrome.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth + 1", nav)
    assert all(label in nav.text for label in ("Recommendations", "Alerts", "GPU health", "Autopilot"))
    # Every filter has a picker, inside the window, wide enough to read, all on one row.
    boxes = [chrome.execute_script("const b = arguments[0].getBoundingClientRect();"
                                   "return [b.left, b.right, b.top, b.bottom];",
                                   chrome.find_element(By.ID, f"filter-{k}")) for k in FILTER_KEYS]
    for k, (left, right, _top, _bottom) in zip(FILTER_KEYS, boxes, strict=True):
        assert 0 <= left and right <= view_w and right - left >= 120, (k, left, right, view_w)
    assert all(abs(b[2] - boxes[0][2]) < 2 and a[1] <= b[0] for a, b in pairwise(boxes)), boxes
    chrome.find_element(By.ID, "filters").screenshot(str(artifacts_dir / f"filters-{width}.png"))
    # The chart toolbar is hidden until the pointer is over the chart.
    _traces(chrome, "fleet-power")  # under load the chart draws after Dash is idle (CI, once)
    bars = _wait(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, "#fleet-power .modebar"))
    assert not chrome.execute_script(
        "return getComputedStyle(arguments[0]).opacity === '1'", bars[0])
    # Legends sit inside their card.
    for card in ("card-fleet-power",):
        inside = chrome.execute_script("""
            const c = document.getElementById(arguments[0]).getBoundingClientRect();
            const l = document.querySelector('#' + arguments[0] + ' .legend');
            if (!l) { return true; }
            const b = l.getBoundingClientRect();
            return b.left >= c.left - 1 && b.right <= c.right + 1 && b.bottom <= c.bottom + 1;""", card)
        assert inside, card
    _shot(chrome, artifacts_dir / f"layout-{width}.png", width=width)


def _report(db: Path, window: tuple[int, int], *extra: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store", f"sqlite:///{db}",
                          "--since", _iso(window[0]), "--until", _iso(window[1]), "--format", "json",
                          *extra], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("flt", [("node", "node-01"), ("model", "NVIDIA L4"), ("team", "research")])
def test_filtered_cards_change_and_equal_the_filtered_report(
        chrome: webdriver.Chrome, server: str, demo_db: Path, flt: tuple[str, str]) -> None:
    chrome.set_window_size(1440, 900)
    _open(chrome, server + "/?range=6h", "page-fleet")
    _wait(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, "#kpi-energy .wl-kpi-value"))
    whole = _card(chrome, "energy")
    _open(chrome, f"{server}/?range=6h&{flt[0]}={flt[1].replace(' ', '+')}", "page-fleet")
    _wait(chrome, lambda d: flt[1] in d.find_element(By.ID, "fleet-window").text)
    _idle(chrome, "page-fleet")
    window = _window(chrome, "fleet-window-text")
    t = _report(demo_db, window, f"--{flt[0]}", flt[1])["totals"]
    assert _card(chrome, "energy") != whole  # the filter changes the numbers ...
    unit = t["fleet_per"]["unit"]
    # ... to the filtered report's, printed the same way
    assert _card(chrome, "energy") == units.energy(t["it_energy_j"])
    assert _card(chrome, "facility") == units.energy(t["facility_energy_j"])
    assert _card(chrome, "per") == units.per3(t["fleet_per"]["per"][unit], PER_UNITS[unit])
    assert _card(chrome, "carbon") == units.mass_co2(t["emissions"]["g_co2"])
    assert _card(chrome, "cost") == units.money(t["cost"], t["currency"])
    if flt[0] == "node":  # the power chart and the heatmap follow the filter too
        assert [tr["name"] for tr in _traces(chrome, "fleet-power")] == [flt[1]]
        assert set(_traces(chrome, "fleet-heat")[0]["x"]) == {flt[1]}


def test_dark_theme_when_the_browser_asks(chrome: webdriver.Chrome, server: str, artifacts_dir: Path) -> None:
    chrome.set_window_size(1440, 900)
    chrome.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        _open(chrome, server + "/carbon?range=24h", "page-carbon")
        _wait(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, "#carbon-intensity .scatterlayer path"))
        colours = chrome.execute_script("""
            const rgb = s => s.match(/\\d+/g).slice(0, 3).map(Number);
            const lum = c => (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255;
            const card = document.querySelector('.wl-card');
            const line = document.querySelector('#carbon-intensity .scatterlayer .trace path.js-line');
            return {bg: lum(rgb(getComputedStyle(document.body).backgroundColor)),
                    card: lum(rgb(getComputedStyle(card).backgroundColor)),
                    ink: lum(rgb(getComputedStyle(card).color)),
                    line: lum(rgb(getComputedStyle(line).stroke))};""")
        assert colours["bg"] < 0.15 and colours["card"] < 0.15, colours
        assert colours["ink"] > 0.6 and colours["line"] > 0.6, colours  # text and the ink line turn light
        _shot(chrome, artifacts_dir / "carbon-dark.png")
    finally:
        chrome.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_zoom_on_a_time_chart_becomes_the_range(chrome: webdriver.Chrome, server: str) -> None:
    chrome.set_window_size(1440, 900)
    _open(chrome, server + "/gpus?range=24h&node=node-03", "page-gpus")
    xs = _traces(chrome, "gpus-temp_c")[0]["x"]
    a, b = xs[len(xs) // 4], xs[len(xs) // 2]
    # What a drag on the x axis does: plotly relayouts the axis range and Dash sees relayoutData.
    chrome.execute_script("""
        const gd = document.querySelector('#gpus-temp_c .js-plotly-plot');
        Plotly.relayout(gd, {'xaxis.range[0]': arguments[0], 'xaxis.range[1]': arguments[1]});""", a, b)
    want = f"{a.replace(' ', 'T')[:19]}..{b.replace(' ', 'T')[:19]}"
    _wait(chrome, lambda d: _query(d).get("range") == want)
    _idle(chrome, "page-gpus")
    assert _query(chrome)["node"] == "node-03"  # the filter stays
    assert _dropdown_text(chrome, "range") == views.range_label(want)
    new_xs = _traces(chrome, "gpus-temp_c")[0]["x"]
    assert new_xs[0] >= a[:16] and new_xs[-1] <= b  # redrawn over the zoomed range only
    # Every chart offers plotly's own PNG download in its (hover) toolbar.
    png = '#page .modebar-btn[data-title="Download plot as a PNG"]'
    with contextlib.suppress(TimeoutException):  # every chart drawn (under load, one by one)
        _wait(chrome, lambda d: len(d.find_elements(By.CSS_SELECTOR, png)) >= 6)
    assert len(chrome.find_elements(By.CSS_SELECTOR, png)) == 6
