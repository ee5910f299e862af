"""Dashboard fixtures: a demo store written by the simulated fleet (with alerts from the real rule engine),
a served app, and a headless Chromium driven by Selenium."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from collector.sources.simulated import SimulatedFleet
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")
ALERT_RULES = """
version = 1
[[rule]]
name = "idle-gpu-waste"
kind = "idle_waste"
util_below_pct = 5
above_w = 40
for = "15m"
severity = "warning"
[[rule]]
name = "deferrable-at-carbon-peak"
kind = "carbon"
above_g_per_kwh = 420
window = "15m"
for = "0s"
hysteresis = 20
severity = "info"
[[rule]]
name = "gpu-power-at-cap"
kind = "threshold"
above_cap_pct = 98
window = "1m"
for = "10m"
hysteresis = 20
severity = "info"
"""


def write_fleet(store: SQLiteStore, fleet: SimulatedFleet, start_ns: int, end_ns: int,
                step_s: int) -> int:
    """Write the fleet's points for [start, end) in steps, as an agent would; returns points written."""
    batch: list[Any] = []
    written = 0
    t = start_ns
    while t < end_ns:
        nxt = min(end_ns, t + step_s * NS)
        batch.extend(fleet.points_between(t, nxt))
        t = nxt
        if len(batch) >= 20_000:
            store.write(batch)
            written += len(batch)
            batch = []
    store.write(batch)
    return written + len(batch)


def chrome_options(width: int = 1440, height: int = 900, headless: bool = True) -> Options:
    """Chromium for tests: no network side channels, a fixed window, SEVERE console logs kept."""
    opts = Options()
    opts.binary_location = CHROMIUM
    if headless:
        opts.add_argument("--headless=new")
    for arg in CHROME_ARGS:
        opts.add_argument(arg)
    opts.add_argument(f"--window-size={width},{height}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


def pytest_setup_options() -> Options:
    """Chrome options for Dash's own dash_duo fixture, should a test use it."""
    return chrome_options(headless=False)  # dash adds --headless itself when run with --headless


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """49 h of a 4-node x 8-GPU simulated fleet at 60 s resolution, ending now, plus the alert
    transitions the real rule engine writes when it evaluates every 10 minutes of the last 48 h
    (the carbon rule fires and clears every evening, so any 24 h holds a resolved alert)."""
    from analytics.alerts import parse_rules
    from analytics.alerts.engine import Engine

    path = tmp_path_factory.mktemp("demo") / "demo.db"
    store = SQLiteStore(path)
    end = time.time_ns() // (60 * NS) * 60 * NS
    write_fleet(store, SimulatedFleet(nodes=4, gpus_per_node=8, seed=1), end - 49 * 3600 * NS, end, 60)
    engine = Engine(store, parse_rules(ALERT_RULES))
    for k in range(288, -1, -1):
        engine.evaluate(end - k * 600 * NS)
    store.close()
    return path


@pytest.fixture
def demo_store(demo_db: Path, tmp_path: Path) -> Iterator[SQLiteStore]:
    """A private copy of the demo store, for tests that write to it."""
    copy = tmp_path / "demo.db"
    shutil.copy(demo_db, copy)
    store = SQLiteStore(copy)
    yield store
    store.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where browser tests leave screenshots: $WATTLENS_ARTIFACTS or tests-artifacts/ (git-ignored)."""
    root = Path(os.environ.get("WATTLENS_ARTIFACTS")
                or Path(__file__).resolve().parents[2] / "tests-artifacts")
    out = root / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def chrome(request: pytest.FixtureRequest) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the session (a missing binary fails, never skips)."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            raise RuntimeError(f"{binary} is missing: install Debian's chromium and chromium-driver "
                               f"(bash scripts/test.sh does)")
    headless = bool(request.config.getoption("headless", default=False)) or not os.environ.get("DISPLAY")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=chrome_options(headless=headless))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def plain_server(demo_db: Path) -> Iterator[str]:
    """The dashboard over the demo store, read-only, no auto-refresh."""
    from dashboard.app import create_app
    from dashboard.server import DashboardServer

    store = SQLiteStore(demo_db)
    srv = DashboardServer(create_app(store, refresh_s=3600), "127.0.0.1", 0)
    srv.start()
    yield srv.url.rstrip("/")
    srv.stop()
    store.close()
