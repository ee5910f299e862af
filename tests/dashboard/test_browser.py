"""The dashboard in a real headless Chromium over a demo store: every page, the controls, live patches, apply."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from plotly.offline import get_plotlyjs_version
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.wait import WebDriverWait

from collector.actuation import PowerCapActuator
from collector.agent import AgentStats
from collector.exporter import Exporter
from collector.sources.simulated import SimulatedFleet, fleet_layout
from collector.store.sqlite import SQLiteStore
from dashboard import views
from dashboard.actuation import AgentClient
from dashboard.app import create_app
from dashboard.figures import iso
from dashboard.server import DashboardServer
from tests.collector.sources.fake_pynvml import FakeGpu, FakeNvml
from tests.dashboard.conftest import write_fleet

pytestmark = pytest.mark.browser

NS = 1_000_000_000
AGENT_TOKEN = "agent-token-for-browser-tests-42"
IDLE_JS = """
const s = window.store && window.store.getState();
if (!s || !document.getElementById(arguments[0])) { return false; }
const c = Object.assign({}, s.callbacks); delete c.stored; delete c.completed;
return Object.values(c).every(a => !a || a.length === 0);
"""
TRACES_JS = """
const el = document.getElementById(arguments[0]);
const gd = el && (el.classList.contains('js-plotly-plot') ? el : el.querySelector('.js-plotly-plot'));
if (!gd || !gd.data) { return null; }
return gd.data.map(t => ({name: t.name || '', type: t.type || 'scatter',
                          x: t.x ? Array.from(t.x) : [], y: t.y ? Array.from(t.y) : [],
                          z: t.z ? t.z.length : 0}));
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, FakeNvml]]:
    """A real agent HTTP server whose power-cap actuator drives a fake NVML (the hardware boundary)."""
    nv = FakeNvml([FakeGpu(uuid=f"GPU-{i}") for i in range(8)])
    act = PowerCapActuator(host="node-00", enabled=True, token=AGENT_TOKEN,
                           audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl", nvml=nv,
                           is_root=lambda: True)
    exporter = Exporter(AgentStats(), port=0)
    act.mount(exporter)
    exporter.start()
    yield exporter, nv
    exporter.stop()


@pytest.fixture(scope="module")
def server(demo_db: Path, agent: tuple[Exporter, FakeNvml]) -> Iterator[str]:
    """The dashboard over the demo store, actuation on (pointed at the test agent), no auto-refresh."""
    store = SQLiteStore(demo_db)
    client = AgentClient(agent[0].url, AGENT_TOKEN)
    srv = DashboardServer(create_app(store, refresh_s=3600, actuation=client), "127.0.0.1", 0)
    srv.start()
    yield srv.url.rstrip("/")
    srv.stop()
    store.close()


def _wait(driver: webdriver.Chrome, check: Callable[[webdriver.Chrome], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)


def _idle(driver: webdriver.Chrome, anchor: str, timeout: float = 40) -> None:
    time.sleep(0.2)  # let a click or a key reach the renderer before asking whether it is idle
    _wait(driver, lambda d: d.execute_script(IDLE_JS, anchor), timeout)


def _traces(driver: webdriver.Chrome, graph_id: str) -> list[dict[str, Any]]:
    return _wait(driver, lambda d: d.execute_script(TRACES_JS, graph_id))  # type: ignore[no-any-return]


def _severe(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _open(driver: webdriver.Chrome, url: str, anchor: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.ID, anchor))
    _idle(driver, anchor)


def _shot(driver: webdriver.Chrome, path: Path, width: int = 1440, min_height: int = 900) -> None:
    """A full-page screenshot for people to look at: grow the window to the page, shoot, put it back."""
    old = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(min_height, min(int(height) + 8, 4000)))
    time.sleep(0.6)  # plotly resizes its charts to the new width
    driver.save_screenshot(str(path))
    driver.set_window_size(old["width"], old["height"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, path


def _texts(driver: webdriver.Chrome, css: str) -> list[str]:
    """The text of each match as written (textContent: CSS may upper-case what is shown)."""
    return [(e.get_attribute("textContent") or "").strip()
            for e in driver.find_elements(By.CSS_SELECTOR, css)]


PAGES = ["fleet", "jobs", "tradeoff", "carbon", "recommendations", "alerts"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_data_and_no_console_errors(
        chrome: webdriver.Chrome, server: str, artifacts_dir: Path, page: str) -> None:
    path = "/" if page == "fleet" else f"/{page}"
    anchor = "page-recs" if page == "recommendations" else f"page-{page}"
    chrome.set_window_size(1440, 900)
    chrome.get_log("browser")  # start clean
    _open(chrome, server + path, anchor)
    assert chrome.find_element(By.ID, "banner-sim").is_displayed()  # simulated data says so
    active = _texts(chrome, ".wl-nav-active")
    assert active and active[0].startswith({"fleet": "Fleet", "jobs": "Jobs", "tradeoff": "Trade-off",
                                            "carbon": "Carbon", "recommendations": "Recommendations",
                                            "alerts": "Alerts"}[page])
    if page == "fleet":
        values = _texts(chrome, ".wl-kpi .wl-kpi-value")
        assert len(values) == 6 and all(v and v != "–" for v in values), values
        units = ("kW", "kWh", "kWh", "tokens/J", "CO₂", "$")
        for v, unit in zip(values, units, strict=True):
            assert unit in v
        power = _traces(chrome, "fleet-power")
        assert [t["name"] for t in power] == ["node-00", "node-01", "node-02", "node-03"]
        assert all(len(t["x"]) > 200 for t in power)
        heat = _traces(chrome, "fleet-heat")
        assert len(heat) == 1 and heat[0]["type"] == "heatmap" and heat[0]["z"] == 8
    elif page == "jobs":
        assert len(chrome.find_elements(By.CSS_SELECTOR, '#jobs-table td[data-dash-column="job"]')) >= 15
        assert "jobs in the range" in chrome.find_element(By.ID, "jobs-summary").text
    elif page == "tradeoff":
        assert len(chrome.find_elements(By.CSS_SELECTOR, '#rank-table td[data-dash-column="job"]')) >= 10
        names = [t["name"] for t in _traces(chrome, "tradeoff-pareto")]
        assert "Pareto frontier" in names and any(n.startswith("recommended at η=0.50") for n in names)
        # One bar per cap the selected class (H100 LLM training) runs at in the simulated layout.
        caps = {g.cap_w for g in fleet_layout(4, 8) if g.runs and g.runs[0].job.workload == "llm-1.3b"}
        assert len(_traces(chrome, "tradeoff-cost")[0]["x"]) == len(caps) == 2
    elif page == "carbon":
        assert len(chrome.find_elements(By.CSS_SELECTOR, "#carbon-window-list li")) == 3
        assert len(_traces(chrome, "carbon-intensity")) == 3
        nodes = _traces(chrome, "carbon-nodes")[0]["y"]
        assert len(nodes) == 5 and views.UNATTRIBUTED_NODE in nodes  # 4 nodes + the named rest
    elif page == "recommendations":
        cards = chrome.find_elements(By.CSS_SELECTOR, ".wl-rec")
        assert len(cards) >= 5
        assert all("/day" in c.text for c in cards)
        chrome.find_element(By.CSS_SELECTOR, "#rec-1 summary").click()  # evidence opens
        assert chrome.find_element(By.CSS_SELECTOR, "#rec-1 .wl-evidence-table").is_displayed()
    elif page == "alerts":
        states = _texts(chrome, '#alerts-table td[data-dash-column="state"]')
        assert states and states[0] == "FIRING"  # firing first
        firing_now = int(_texts(chrome, "#kpi-alerts-firing .wl-kpi-value")[0])
        resolved = int(_texts(chrome, "#kpi-alerts-resolved .wl-kpi-value")[0])
        assert firing_now >= 2  # the rule engine fired alerts on the planted waste
        # Which alerts have cleared by now depends on the time of day the data ends at; the
        # card must agree with the table either way (one row per alert, firing first).
        if len(states) < 20:
            assert resolved == states.count("resolved")
        assert states.count("FIRING") == min(firing_now, len(states))
        timeline = _traces(chrome, "alerts-timeline")
        assert any(t["name"].endswith("(firing now)") for t in timeline)
        # The card's count of ended firing periods is the timeline's grey bars (two points a bar).
        closed = sum(len([y for y in t["y"] if y]) // 2 for t in timeline
                     if not t["name"].endswith("(firing now)"))
        note = _texts(chrome, "#kpi-alerts-resolved .wl-kpi-note")
        assert any(f"{closed} firing period" in n for n in note), (closed, note)
        badge = _texts(chrome, ".wl-badge")
        assert badge and int(badge[0]) == firing_now
    _shot(chrome, artifacts_dir / f"{page}.png")
    assert _severe(chrome) == []
    # The charts were drawn by the cartesian bundle in assets; the full plotly.js never came.
    assert chrome.execute_script("return window.Plotly.version") == get_plotlyjs_version()
    fetched = chrome.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert any("/assets/plotly-cartesian-" in u for u in fetched)
    assert not any("package_data/plotly.min.js" in u for u in fetched)


def test_time_range_changes_the_charts(chrome: webdriver.Chrome, server: str) -> None:
    chrome.set_window_size(1440, 900)
    _open(chrome, server + "/", "page-fleet")
    before = _traces(chrome, "fleet-power")
    chrome.find_element(By.ID, "range").click()
    _wait(chrome, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]")
                             if o.text == "Last 6 hours"])[0].click()
    _wait(chrome, lambda d: d.execute_script(TRACES_JS, "fleet-power")[0]["x"][0] != before[0]["x"][0])
    _idle(chrome, "page-fleet")
    after = _traces(chrome, "fleet-power")
    t0 = datetime.fromisoformat(before[0]["x"][0])
    t1 = datetime.fromisoformat(after[0]["x"][0])
    assert 17.5 * 3600 <= (t1 - t0).total_seconds() <= 18.5 * 3600  # 24 h -> 6 h back
    assert len(after[0]["x"]) != len(before[0]["x"])  # a finer bucket for the shorter range
    t_end0 = datetime.fromisoformat(before[0]["x"][-1])
    t_end1 = datetime.fromisoformat(after[0]["x"][-1])
    assert abs((t_end1 - t_end0).total_seconds()) <= 300  # both end at the newest data
    # The choice holds on another page: the jobs table reads the same range.
    chrome.find_element(By.ID, "nav-jobs").click()
    _idle(chrome, "page-jobs")
    assert "6 hours" in chrome.find_element(By.ID, "range").text
    _open(chrome, server + "/", "page-fleet")  # back to 24 h for the other tests
    chrome.find_element(By.ID, "range").click()
    _wait(chrome, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]")
                             if o.text == "Last 24 hours"])[0].click()
    _idle(chrome, "page-fleet")
    assert _severe(chrome) == []


def _rank_order(driver: webdriver.Chrome) -> list[str]:
    return _texts(driver, '#rank-table td[data-dash-column="job"]')


def _set_lambda(driver: webdriver.Chrome, value: str) -> None:
    """Move the λ slider's thumb with the keyboard, as a person can: Home is 0, End is 1."""
    thumb = driver.find_element(By.CSS_SELECTOR, "#lam-slider [role=slider]")
    thumb.send_keys({"0": Keys.HOME, "1": Keys.END}[value])


def test_lambda_slider_reranks_jobs_and_moves_the_recommended_cap(chrome: webdriver.Chrome, server: str) -> None:
    _open(chrome, server + "/tradeoff", "page-tradeoff")
    _set_lambda(chrome, "0")
    _wait(chrome, lambda d: any(t["name"].startswith("recommended at η=0.00")
                                for t in d.execute_script(TRACES_JS, "tradeoff-pareto") or []))
    _idle(chrome, "page-tradeoff")
    speed = _rank_order(chrome)
    star0 = next(t for t in _traces(chrome, "tradeoff-pareto") if t["name"].startswith("recommended"))
    _set_lambda(chrome, "1")
    _wait(chrome, lambda d: any(t["name"].startswith("recommended at η=1.00")
                                for t in d.execute_script(TRACES_JS, "tradeoff-pareto") or []))
    _idle(chrome, "page-tradeoff")
    energy = _rank_order(chrome)
    star1 = next(t for t in _traces(chrome, "tradeoff-pareto") if t["name"].startswith("recommended"))
    assert len(speed) == len(energy) == 15 and speed[:4] != energy[:4]  # first page, re-ranked
    assert star0["name"].endswith("700 W") and not star1["name"].endswith("700 W")
    assert star1["y"][0] < star0["y"][0] and star1["x"][0] > star0["x"][0]  # less energy, more time
    # λ is kept for the session: the jobs page computes cost(λ) with it.
    chrome.find_element(By.ID, "nav-jobs").click()
    _idle(chrome, "page-jobs")
    _wait(chrome, lambda d: "η = 1.00" in d.find_element(By.ID, "jobs-summary").text)
    assert _severe(chrome) == []


def test_a_job_row_opens_its_detail_view(chrome: webdriver.Chrome, server: str, artifacts_dir: Path) -> None:
    _open(chrome, server + "/jobs", "page-jobs")
    cell = chrome.find_element(By.CSS_SELECTOR, '#jobs-table td[data-dash-column="job"]')
    job = cell.text
    cell.click()
    _wait(chrome, lambda d: d.find_elements(By.ID, "page-job"))
    _idle(chrome, "page-job")
    assert urlparse(chrome.current_url).path == "/jobs/" + job  # the query carries the view
    assert chrome.find_element(By.ID, "job-title").text == job
    names = [t["name"] for t in _traces(chrome, "job-graph")]
    assert names[:3] == ["power", "throughput", "PER"] and names[3].startswith("baseline")
    facts = dict(zip(_texts(chrome, "#job-facts-list dt"), _texts(chrome, "#job-facts-list dd"), strict=True))
    assert facts["Energy"].endswith("kWh") and facts["PER"].endswith("/J")
    _shot(chrome, artifacts_dir / "job-detail.png")
    chrome.find_element(By.LINK_TEXT, "← all jobs").click()
    _wait(chrome, lambda d: d.find_elements(By.ID, "page-jobs"))
    assert _severe(chrome) == []


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1920, 1080)])
def test_layout_fits_common_screens(chrome: webdriver.Chrome, server: str, artifacts_dir: Path,
                                    width: int, height: int) -> None:
    chrome.set_window_size(width, height)
    try:
        for path, anchor in (("/", "page-fleet"), ("/tradeoff", "page-tradeoff")):
            _open(chrome, server + path, anchor)
            time.sleep(0.5)
            fits = chrome.execute_script("""
                const doc = document.documentElement;
                const nav = document.getElementById('nav');
                const clipped = Array.from(document.querySelectorAll('.wl-kpi-value, .wl-card-head h2'))
                    .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent);
                return {page: doc.scrollWidth <= window.innerWidth, nav: nav.scrollWidth <= nav.clientWidth + 1,
                        clipped: clipped};""")
            assert fits == {"page": True, "nav": True, "clipped": []}, (path, fits)
        _open(chrome, server + "/jobs", "page-jobs")
        cut = chrome.execute_script("""
            return Array.from(document.querySelectorAll('#jobs-table td[data-dash-column="job"]'))
                .filter(td => {  // the text's own width against the room the cell gives it
                    const r = document.createRange(); r.selectNodeContents(td);
                    const cs = getComputedStyle(td);
                    const room = td.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
                    return r.getBoundingClientRect().width > room + 1; })
                .map(td => td.textContent);""")
        assert cut == [], "job ids must be readable in full (the table scrolls sideways instead)"
        _open(chrome, server + "/", "page-fleet")
        _shot(chrome, artifacts_dir / f"fleet-{width}x{height}.png", width=width, min_height=height)
    finally:
        chrome.set_window_size(1440, 900)
    assert _severe(chrome) == []


def test_apply_asks_for_confirmation_then_caps_the_gpus_through_the_agent(
        chrome: webdriver.Chrome, server: str, agent: tuple[Exporter, FakeNvml]) -> None:
    _exporter, nv = agent
    _open(chrome, server + "/tradeoff", "page-tradeoff")
    _set_lambda(chrome, "1")  # energy first: the 700 W runs get a power-cap recommendation
    _wait(chrome, lambda d: any(t["name"].startswith("recommended at η=1.00")
                                for t in d.execute_script(TRACES_JS, "tradeoff-pareto") or []))
    chrome.find_element(By.ID, "nav-recommendations").click()
    _wait(chrome, lambda d: d.find_elements(By.ID, "page-recs"))
    _idle(chrome, "page-recs")
    card = next(c for c in chrome.find_elements(By.CSS_SELECTOR, ".wl-rec")
                if "POWER CAP" in c.text.upper() and "llm-1.3b" in c.text
                and c.find_elements(By.TAG_NAME, "button"))
    assert all(g.limit_mw == 700_000 for g in nv.gpus)
    # Cancel first: nothing changes.
    card.find_element(By.TAG_NAME, "button").click()
    alert = _wait(chrome, EC.alert_is_present())
    assert "Apply now?" in alert.text and "W" in alert.text
    alert.dismiss()
    time.sleep(1.0)
    assert all(g.limit_mw == 700_000 for g in nv.gpus)
    card.find_element(By.TAG_NAME, "button").click()
    _wait(chrome, EC.alert_is_present()).accept()
    toast = _wait(chrome, lambda d: d.find_elements(By.ID, "apply-toast"))[0]
    # node-00 runs llm-pretrain at 700 W on GPUs 0-3 and at 490 W on GPUs 4-7 (the layout); at
    # λ = 1 the best cap is 490 W: exactly the 700 W job's four GPUs are capped, the others untouched.
    low = min(g.cap_w for g in fleet_layout(4, 8) if g.host == "node-00")
    assert toast.text.startswith("Applied to 4 of 4 GPU(s).")
    assert [g.limit_mw for g in nv.gpus] == [int(low * 1000)] * 4 + [700_000] * 4
    assert _severe(chrome) == []


def test_live_refresh_patches_the_power_chart_to_match_a_redraw(
        chrome: webdriver.Chrome, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "live.db")
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, seed=3)
    end = [time.time_ns() // (10 * NS) * 10 * NS]
    write_fleet(store, fleet, end[0] - 70 * 60 * NS, end[0], 10)
    app = create_app(store, refresh_s=1.0)
    bodies: list[str] = []

    @app.server.after_request
    def record(resp: Any) -> Any:  # what the server sent, to tell patches from redraws
        from flask import request

        if request.path == "/_dash-update-component" and b"fleet-power" in request.get_data():
            bodies.append(resp.get_data(as_text=True))
        return resp

    srv = DashboardServer(app, "127.0.0.1", 0)
    srv.start()
    stop = threading.Event()

    def agent_loop() -> None:  # an agent writing 40 s of data per second
        while not stop.wait(0.25):
            write_fleet(store, fleet, end[0], end[0] + 10 * NS, 10)
            end[0] += 10 * NS

    writer = threading.Thread(target=agent_loop)
    try:
        chrome.get(srv.url)
        _wait(chrome, lambda d: d.find_elements(By.ID, "page-fleet"))
        chrome.find_element(By.ID, "range").click()
        _wait(chrome, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]")
                                 if o.text == "Last hour"])[0].click()
        _wait(chrome, lambda d: len((d.execute_script(TRACES_JS, "fleet-power") or [{}])[0].get("x", [])) in
              range(355, 365))
        first = _traces(chrome, "fleet-power")
        writer.start()
        time.sleep(5)
        stop.set()
        writer.join()
        want = views.fleet_power(store, views.window_for(store, "1h"), "host")
        want_x = [iso(t) for t in want.series[0].times_ns]
        _wait(chrome, lambda d: d.execute_script(TRACES_JS, "fleet-power")[0]["x"][-1] == want_x[-1], 15)
        got = _traces(chrome, "fleet-power")
    finally:
        stop.set()
        chrome.get("about:blank")  # stop the page's refresh timer before the server goes away
        srv.stop()
        store.close()
    assert got[0]["x"][0] > first[0]["x"][0]  # old buckets dropped off the front
    patches = [b for b in bodies if "__dash_patch_update" in b]
    assert len(patches) >= 3, "the refresh sent patches, not whole figures"
    appended = [len(op["params"]["value"]) for b in patches
                for op in json.loads(b)["response"]["fleet-power"]["figure"]["operations"]
                if op["operation"] == "Extend" and op["location"][-1] == "x"]
    # Each patch carries the few buckets that changed (4 new ones a second here, more when a
    # tick is late), never the 360 the chart holds.
    assert appended and max(appended) <= 60 and len(got[0]["x"]) >= 355
    assert [t["name"] for t in got] == [s.name for s in want.series]
    for trace, s in zip(got, want.series, strict=True):
        assert trace["x"] == want_x
        for g, w in zip(trace["y"], s.values, strict=True):
            assert (g is None) == (w is None)
            if g is not None:
                assert g == pytest.approx(w / 1000, rel=1e-6)
    assert _severe(chrome) == []
