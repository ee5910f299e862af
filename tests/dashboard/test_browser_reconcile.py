"""Reconciliation in a real browser: the Fleet cards, the Jobs table and the Recommendations
total equal `wattlens report --format json` for the same window, within display rounding."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from analytics import units
from analytics.per import PER_UNITS
from dashboard import views
from tests.dashboard.test_browser import _idle, _open, _severe, _texts, _wait

pytestmark = pytest.mark.browser

NS = 1_000_000_000


def _iso(t_ns: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=t_ns // NS)).isoformat()


def _report(db: Path, window: tuple[int, int]) -> dict[str, Any]:
    """`wattlens report --format json` for exactly this window, as a user would run it."""
    assert window[0] % NS == 0 and window[1] % NS == 0
    out = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store", f"sqlite:///{db}",
                          "--since", _iso(window[0]), "--until", _iso(window[1]), "--format", "json"],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


TITLE_JS = "const e = document.getElementById(arguments[0]); return e ? e.title : null;"


def _window(driver: webdriver.Chrome, element_id: str) -> tuple[int, int]:
    """The window a page says it shows (its caption's title, start/end in ns)."""
    title = _wait(driver, lambda d: d.execute_script(TITLE_JS, element_id))
    start, end = (int(x) for x in str(title).split("/"))
    return start, end


def _set_range(driver: webdriver.Chrome, label: str) -> None:
    driver.find_element(By.ID, "range").click()
    _wait(driver, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]")
                             if o.text == label])[0].click()


def _card(driver: webdriver.Chrome, key: str) -> str:
    return _texts(driver, f"#kpi-{key} .wl-kpi-value")[0]


def _column(driver: webdriver.Chrome, column: str) -> list[str]:
    return _texts(driver, f'#jobs-table td[data-dash-column="{column}"]')


@pytest.mark.parametrize("range_key", ["1h", "6h", "24h"])
def test_cards_jobs_and_recommendations_equal_the_report(
        chrome: webdriver.Chrome, plain_server: str, demo_db: Path, range_key: str) -> None:
    label = views.RANGES[range_key][0]
    chrome.set_window_size(1440, 900)
    chrome.get_log("browser")
    _open(chrome, plain_server + "/", "page-fleet")
    _set_range(chrome, label)
    want = views.RANGES[range_key][1] * NS
    _wait(chrome, lambda d: (lambda w: w[1] - w[0] == want)(_window(d, "fleet-window-text")))
    _idle(chrome, "page-fleet")
    window = _window(chrome, "fleet-window-text")
    r = _report(demo_db, window)
    t = r["totals"]

    # Fleet cards: the report's headline figures, printed the same way.
    unit = t["fleet_per"]["unit"]
    assert _card(chrome, "energy") == units.energy(t["it_energy_j"])
    assert _card(chrome, "facility") == units.energy(t["facility_energy_j"])
    assert _card(chrome, "per") == units.per3(t["fleet_per"]["per"][unit], PER_UNITS[unit])
    assert _card(chrome, "carbon") == units.mass_co2(t["emissions"]["g_co2"])
    assert _card(chrome, "cost") == units.money(t["cost"], t["currency"])
    assert f"PUE {t['pue']:.2f}" in _texts(chrome, "#kpi-facility .wl-kpi-note")[0]

    # Jobs table: the same window, and each row's energy and PER equal the report's job rows.
    chrome.find_element(By.ID, "nav-jobs").click()
    _wait(chrome, lambda d: d.find_elements(By.ID, "jobs-window"))
    _idle(chrome, "page-jobs")
    assert _window(chrome, "jobs-window") == window
    report_jobs = {j["name"]: j for j in r["per"]["job"]}
    jobs, energy, pers = _column(chrome, "job"), _column(chrome, "energy_kwh"), _column(chrome, "per_num")
    assert jobs and len(jobs) == len(energy) == len(pers)
    assert int(_texts(chrome, "#jobs-summary")[0].split(" jobs")[0]) == len(report_jobs)
    for job, kwh, per_text in zip(jobs, energy, pers, strict=True):
        row = report_jobs[job]
        assert float(kwh.replace(",", "")) == pytest.approx(row["energy_j"] / 3.6e6, abs=0.006), job
        job_unit = next(u for u in ("tokens", "samples", "flops", "steps") if u in row["per"])
        if per_text:
            assert float(per_text.replace(",", "")) == pytest.approx(row["per"][job_unit], abs=0.006)

    # Recommendations: the same window, the same items, and the same all-applied total.
    chrome.find_element(By.ID, "nav-recommendations").click()
    _wait(chrome, lambda d: d.find_elements(By.ID, "recs-window-text"))
    _idle(chrome, "page-recs")
    assert _window(chrome, "recs-window-text") == window
    total = r["recommendations_total"]
    assert _card(chrome, "recs-kwh") == f"{total['kwh_per_day']:,.1f} kWh/day"
    assert _card(chrome, "recs-count") == str(len(r["recommendations"]))
    assert len(chrome.find_elements(By.CSS_SELECTOR, ".wl-rec")) == len(r["recommendations"])
    assert _severe(chrome) == []


def test_jobs_table_sorts_numbers_as_numbers(chrome: webdriver.Chrome, plain_server: str) -> None:
    """PER and work sort as numbers (61.18 before 580.32, not after), right-aligned, unit in
    the header."""
    chrome.set_window_size(1440, 900)
    _open(chrome, plain_server + "/jobs", "page-jobs")
    header = _texts(chrome, '#jobs-table th[data-dash-column="per_num"]')[0]
    assert "units/J" in header
    widths: dict[str, int] = {}
    for column in ("per_num", "work_m", "energy_kwh"):
        chrome.find_element(By.CSS_SELECTOR,
                            f'th[data-dash-column="{column}"] .column-header--sort').click()
        _idle(chrome, "page-jobs")
        texts = [v for v in _column(chrome, column) if v]
        values = [float(v.replace(",", "")) for v in texts]
        assert len(values) >= 10 and values in (sorted(values), sorted(values, reverse=True)), (column, values)
        widths[column] = len({len(v.replace(",", "").split(".")[0]) for v in texts})
    # At least one sorted column mixes integer widths, where a text sort would order differently.
    assert max(widths.values()) > 1, widths
    cell = chrome.find_element(By.CSS_SELECTOR, '#jobs-table td[data-dash-column="per_num"]')
    assert cell.value_of_css_property("text-align") == "right"
    assert all(len(v.split(".")[1]) == 2 for v in _column(chrome, "energy_kwh"))  # even decimals
