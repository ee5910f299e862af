"""prometheus:// against a real Prometheus and a real VictoriaMetrics scraping simulated exporters.

One scrape session (about 45 s) feeds both engines from three targets: a real
`wattlens collect --source sim` agent (wattlens' own /metrics, writing the same
points to SQLite), and the simulated fleet served as dcgm-exporter (with MIG
instances and one counter reset half way) and as vLLM. Every total read back
through PromQL must be within 1 % of the SQLite store's for the same window.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from analytics.report import build_report
from analytics.timeutil import Window
from collector.exporter import Response, RouteServer
from collector.simexport import SimExporter
from collector.sources.simulated import SimulatedFleet
from collector.store import open_store
from collector.store.base import AggregateQuery, Store
from collector.store.sqlite import SQLiteStore
from tests.servers import ServerProcess, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NS = 1_000_000_000
NODES, GPUS = 4, 2
SCRAPE_S = 45
ENGINES = ("prometheus", "victoria-metrics")


@dataclass
class Session:
    """What the scrape session left: engine URLs, the agent's SQLite, the truth, and the window."""

    engines: dict[str, ServerProcess]
    agent_db: Path
    truth: SQLiteStore  # the simulated fleet's own points for the window, 1 s apart
    window: Window


class Swappable:
    """A /metrics route whose exporter can be replaced (a restart: counters back to zero)."""

    def __init__(self, exporter: SimExporter) -> None:
        self.exporter = exporter

    def __call__(self, _req: object) -> Response:
        return Response(200, self.exporter.metrics().encode(), "text/plain; version=0.0.4")


def _serve(fmt: str, start_ns: int, mig: int = 0) -> tuple[RouteServer, Swappable]:
    route = Swappable(SimExporter(SimulatedFleet(NODES, GPUS), fmt, mig=mig, start_ns=start_ns))
    server = RouteServer("127.0.0.1", free_port())
    server.route("GET", "/metrics", route)
    server.start()
    return server, route


@pytest.fixture(scope="module")
def session(prometheus_factory: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("prom-session")
    t0 = time.time_ns()
    # One dcgm-exporter per engine: a counter reset loses what a scraper had not yet seen,
    # so each engine gets its own exporter, reset right after that engine's last scrape.
    dcgms = {engine: _serve("dcgm-exporter", t0, mig=2) for engine in ENGINES}
    vllm, _ = _serve("vllm", t0)
    kepler, _ = _serve("kepler", t0)
    agent_port = free_port()
    agent_db = root / "agent.db"
    agent = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", str(NODES),
         "--gpus", str(GPUS), "--interval", "1", "--store", f"sqlite:///{agent_db}",
         "--prometheus-port", str(agent_port), "--spool-dir", str(root / "spool")],
        stdout=subprocess.DEVNULL, stderr=(root / "agent.log").open("wb"))
    engines: dict[str, ServerProcess] = {}
    try:
        wait_until(lambda: agent_db.exists(), 60, "agent")
        for engine in ENGINES:
            targets = [f"127.0.0.1:{agent_port}", f"127.0.0.1:{dcgms[engine][0].port}",
                       f"127.0.0.1:{vllm.port}", f"127.0.0.1:{kepler.port}"]
            engines[engine] = prometheus_factory(targets, 1.0, honor_labels=True, engine=engine)
        start = time.time_ns()
        time.sleep(SCRAPE_S / 2)
        # dcgm-exporter's counters reset (a driver reload): from zero again, counting from
        # the last scrape on, so no energy goes unreported and the totals stay comparable.
        for _server, route in dcgms.values():
            route.exporter = SimExporter(SimulatedFleet(NODES, GPUS), "dcgm-exporter", mig=2,
                                         start_ns=route.exporter.last_ns)
        time.sleep(SCRAPE_S / 2)
        window = Window((start // NS + 8) * NS, (time.time_ns() // NS - 3) * NS)
        time.sleep(5)  # let the last scrapes land
    finally:
        agent.terminate()
        agent.wait(30)
        for server, _route in dcgms.values():
            server.stop()
        vllm.stop()
        kepler.stop()
    truth = SQLiteStore(root / "truth.db")
    fleet = SimulatedFleet(NODES, GPUS)
    for t in range(window.start_ns, window.end_ns, NS):
        # Points are stamped at the end of their interval: (t, t+1] is stamped t+1.
        truth.write(fleet.points_between(t, t + NS))
    yield Session(engines, agent_db, truth, window)
    truth.close()


def _url(session: Session, engine: str, mapping: str) -> str:
    return f"prometheus://127.0.0.1:{session.engines[engine].port}?mapping={mapping}"


def _by(store: Store, q: AggregateQuery, col: str) -> dict[tuple[str, ...], float]:
    return {tuple(r.tags[t] for t in q.group_by): r.values[col] or 0.0 for r in store.query(q)}


def _close(got: dict[tuple[str, ...], float], want: dict[tuple[str, ...], float]) -> None:
    assert want and sum(want.values()) > 0
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=0.01), key



@pytest.mark.parametrize("engine", ENGINES)
def test_dcgm_energy_matches_sqlite_across_mig_and_a_reset(session: Session, engine: str) -> None:
    """GPU energy per GPU from DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ, 2 MIG instances each)."""
    store = open_store(_url(session, engine, "dcgm-exporter"))
    w = session.window
    q = AggregateQuery("gpu", (("sum", "energy_j"),), w.start_ns + NS, w.end_ns + NS,
                       group_by=("host", "gpu"))
    want = _by(session.truth, q, "sum_energy_j")
    assert len(want) == NODES * GPUS
    _close(_by(store, AggregateQuery("gpu", q.aggregates, w.start_ns, w.end_ns,
                                     group_by=("host", "gpu")), "sum_energy_j"), want)


@pytest.mark.parametrize("engine", ENGINES)
def test_kepler_node_energy_matches_sqlite(session: Session, engine: str) -> None:
    """CPU energy per node from kepler_node_cpu_joules_total (package + dram zones)."""
    store = open_store(_url(session, engine, "kepler"))
    w = session.window
    q = AggregateQuery("cpu", (("sum", "energy_j"),), w.start_ns, w.end_ns, group_by=("host",))
    want = _by(session.truth, AggregateQuery("cpu", q.aggregates, w.start_ns + NS, w.end_ns + NS,
                                             group_by=("host",)), "sum_energy_j")
    _close(_by(store, q, "sum_energy_j"), want)


@pytest.mark.parametrize("engine", ENGINES)
def test_bucketed_power_and_gauges_match(session: Session, engine: str) -> None:
    """10 s buckets (aligned to the epoch) and the window's cut edges: energy, mean and max power."""
    store = open_store(_url(session, engine, "dcgm-exporter"))
    w = session.window
    aggs = (("sum", "energy_j"), ("max", "power_limit_w"))
    got = store.query(AggregateQuery("gpu", aggs, w.start_ns, w.end_ns, bucket_s=10))
    assert all(r.time_ns is not None and r.time_ns % (10 * NS) == 0 for r in got)
    assert len(got) <= w.seconds // 10 + 2
    truth = session.truth.query(AggregateQuery("gpu", aggs, w.start_ns + NS, w.end_ns + NS))
    total = sum(r.values["sum_energy_j"] or 0.0 for r in got)
    # VictoriaMetrics' increase() starts from the sample before each bucket: exact. Prometheus'
    # starts from the first sample inside it and extrapolates at most half a scrape interval,
    # so a late scrape at a bucket edge loses up to that gap: of the order of scrape / bucket
    # (1 s / 10 s here, on a loaded machine; a report's 5 min buckets make it 0.3 %).
    rel = 0.01 if engine == "victoria-metrics" else 0.05
    assert total == pytest.approx(truth[0].values["sum_energy_j"], rel=rel)
    assert max(r.values["max_power_limit_w"] or 0 for r in got) == truth[0].values[
        "max_power_limit_w"]


@pytest.mark.parametrize("engine", ENGINES)
def test_means_divided_in_the_engine_equal_sums_over_counts(session: Session, engine: str) -> None:
    """A mean asked as one PromQL division equals its sum and count divided here, per bucket."""
    from collector.store.promql import Plan, field_exprs, plan, selector

    store = open_store(_url(session, engine, "dcgm-exporter"))
    w = session.window
    q = AggregateQuery("gpu", (("mean", "power_w"), ("mean", "util_pct")), w.start_ns + NS // 2,
                       w.end_ns, group_by=("host", "gpu"), bucket_s=10)
    mm = store.mapping["gpu"]  # type: ignore[attr-defined]
    one = plan(q, mm)
    assert [e.op for e in one.exprs] == ["mean", "mean"]
    two = Plan(tuple(e for agg, f in q.aggregates for src in mm.fields[f]
                     for e in field_exprs(agg, f, src, selector(src, {}) or "",
                                          tuple(src.labels[t] for t in q.group_by))),
               one.group_by, False)
    assert [e.part for e in two.exprs] == ["mean_power_w#s", "mean_power_w#c",
                                           "mean_util_pct#s", "mean_util_pct#c"]

    def rows(p: Plan) -> dict[tuple[int | None, str, str], dict[str, float | None]]:
        return {(r.time_ns, r.tags["host"], r.tags["gpu"]): dict(r.values)
                for r in store._query(q, p)}  # type: ignore[attr-defined]

    got, want = rows(one), rows(two)
    assert len(want) >= NODES * GPUS * (w.seconds // 10) and set(got) == set(want)
    for key, values in want.items():
        assert got[key] == pytest.approx(values, rel=1e-9), key


@pytest.mark.parametrize("engine", ENGINES)
def test_wattlens_exporter_totals_match_the_agents_sqlite(session: Session, engine: str) -> None:
    """The agent's own /metrics read back equal what the same agent wrote to SQLite."""
    store = open_store(_url(session, engine, "wattlens"))
    sqlite = SQLiteStore(session.agent_db)
    w = session.window
    for measurement, by, col in (("gpu", ("host", "gpu"), "energy_j"), ("cpu", ("host", "domain"),
                                 "energy_j"), ("job", ("job", "host"), "energy_j"),
                                 ("job", ("job",), "samples"), ("facility", ("site",),
                                                                 "it_energy_j")):
        q = AggregateQuery(measurement, (("sum", col),), w.start_ns, w.end_ns, group_by=by)
        want = _by(sqlite, q, f"sum_{col}")
        got = _by(store, q, f"sum_{col}")
        _close({k: v for k, v in got.items() if v or k in want}, want)


@pytest.mark.parametrize("engine", ENGINES)
def test_dcgm_and_vllm_give_per_per_pod(session: Session, engine: str) -> None:
    """dcgm-exporter + vLLM only: tokens and energy per inference pod join into one job row."""
    store = open_store(_url(session, engine, "dcgm-exporter,vllm"))
    w = session.window
    aggs = (("sum", "energy_j"), ("sum", "tokens"))
    rows = store.query(AggregateQuery("job", aggs, w.start_ns, w.end_ns,
                                      group_by=("job", "host", "kind", "gpu_model")))
    infer = {r.tags["job"]: r for r in rows if r.tags["kind"] == "infer"}
    truth = {r.tags["job"]: r for r in session.truth.query(AggregateQuery(
        "job", aggs, w.start_ns + NS, w.end_ns + NS, group_by=("job", "kind")))
        if r.tags["kind"] == "infer"}
    assert infer and set(infer) == set(truth)
    for job, row in infer.items():
        assert row.tags["gpu_model"]  # from dcgm-exporter's modelName, joined on pod and host
        for col in ("sum_energy_j", "sum_tokens"):
            assert row.values[col] == pytest.approx(truth[job].values[col], rel=0.01), (job, col)


@pytest.mark.parametrize("engine", ENGINES)
def test_dcgm_pod_labels_give_per_per_namespace(session: Session, engine: str) -> None:
    """dcgm-exporter's namespace label on job rows: energy and PER per namespace, no agent needed."""
    store = open_store(_url(session, engine, "dcgm-exporter,vllm"))
    w = session.window
    aggs = (("sum", "energy_j"), ("sum", "tokens"))
    rows = {r.tags["namespace"]: r for r in store.query(AggregateQuery(
        "job", aggs, w.start_ns, w.end_ns, group_by=("namespace",)))}
    # The simulated dcgm-exporter puts each pod in the namespace named after its kind.
    truth = {r.tags["kind"]: r for r in session.truth.query(AggregateQuery(
        "job", aggs, w.start_ns + NS, w.end_ns + NS, group_by=("kind",)))}
    infer = rows["infer"].values
    assert infer["sum_energy_j"] == pytest.approx(truth["infer"].values["sum_energy_j"], rel=0.01)
    assert infer["sum_tokens"] / infer["sum_energy_j"] == pytest.approx(
        truth["infer"].values["sum_tokens"] / truth["infer"].values["sum_energy_j"], rel=0.02)


@pytest.mark.parametrize("engine", ENGINES)
def test_report_on_the_engine_matches_the_report_on_sqlite(session: Session, engine: str) -> None:
    """`wattlens report`'s analytics over the engine and over the agent's SQLite agree."""
    w = session.window
    on_engine = build_report(open_store(_url(session, engine, "wattlens")), w).to_dict()
    on_sqlite = build_report(SQLiteStore(session.agent_db), w).to_dict()
    for key in ("gpu_energy_j", "cpu_energy_j", "it_energy_j"):
        assert on_engine["totals"][key] == pytest.approx(on_sqlite["totals"][key], rel=0.01), key
    for level in ("node", "fleet"):
        want = {r["name"]: r for r in on_sqlite["per"][level]}
        got = {r["name"]: r for r in on_engine["per"][level]}
        assert want and set(got) == set(want), level
        for name, row in want.items():
            assert got[name]["energy_j"] == pytest.approx(row["energy_j"], rel=0.01), name
            for unit, per in row["per"].items():
                assert got[name]["per"][unit] == pytest.approx(per, rel=0.01), (name, unit)
    assert {r["name"] for r in on_engine["per"]["job"]} == {
        r["name"] for r in on_sqlite["per"]["job"]}


RULES = """
version = 1
[[rule]]
name = "gpu-power-high"
kind = "threshold"
above_w = 100
for = "0s"
hysteresis = 5
window = "20s"
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_alert_rules_fire_alike_on_the_engine_and_on_sqlite(session: Session, engine: str) -> None:
    from analytics.alerts.engine import Engine
    from analytics.alerts.rules import parse_rules

    rules = parse_rules(RULES, "rules.toml")
    end = session.window.end_ns

    def firing(store: Store) -> set[tuple[str, str]]:
        res = Engine(store, rules).evaluate(end)
        assert not res.errors
        return {(t.rule, t.target) for t in res.transitions}

    want = firing(SQLiteStore(session.agent_db))
    assert want  # H100s training draw far more than 100 W
    assert firing(open_store(_url(session, engine, "wattlens"))) == want


@pytest.mark.parametrize("engine", ENGINES)
def test_dashboard_heatmap_on_the_engine(session: Session, engine: str) -> None:
    from dashboard.views import gpu_heat

    cells = {(c.host, c.gpu): c for c in gpu_heat(open_store(_url(session, engine, "wattlens")),
                                                  session.window)}
    want = {(c.host, c.gpu): c for c in gpu_heat(SQLiteStore(session.agent_db), session.window)}
    assert want and set(cells) == set(want)
    for key, c in want.items():
        assert cells[key].power_w == pytest.approx(c.power_w, rel=0.01), key
        assert cells[key].util_pct == pytest.approx(c.util_pct, rel=0.01, abs=0.5), key


def test_writes_are_refused_with_a_clear_error(session: Session) -> None:
    from collector.errors import StoreRejected
    from collector.schema import point

    store = open_store(_url(session, "prometheus", "wattlens"))
    with pytest.raises(StoreRejected, match="read-only"):
        store.write([point("gpu", {"host": "h"}, {"power_w": 1.0}, time.time_ns())])


def test_time_range_and_tag_values(session: Session) -> None:
    store = open_store(_url(session, "victoria-metrics", "dcgm-exporter"))
    span = store.time_range("gpu")
    assert span is not None
    assert span[0] <= session.window.start_ns and span[1] >= session.window.end_ns
    w = session.window
    assert store.tag_values("gpu", "host", w.start_ns, w.end_ns) == [
        f"node-{i:02d}" for i in range(NODES)]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_newest_sample_of_a_stopped_agent_is_found(session: Session, engine: str) -> None:
    """The agent is gone when the tests run, and the engine has marked its series stale: the
    last sample is still its last one, not the last one before a minute step (the Fleet page's
    window then ended before the session's data, and its power chart was empty)."""
    span = open_store(_url(session, engine, "wattlens")).time_range("gpu")
    assert span is not None
    assert span[1] >= session.window.end_ns
    agent = SQLiteStore(session.agent_db).time_range("gpu")
    assert agent is not None and agent[1] - span[1] < 5 * NS  # within a few scrapes of it


@pytest.mark.parametrize("engine", ENGINES)
def test_dashboard_fleet_page_renders_from_the_engine(session: Session, engine: str) -> None:
    """The Fleet page's whole first render (KPIs, power chart, heatmap) through the dashboard's cache."""
    from collector.store.cache import CachedStore
    from dashboard.views import fleet_view
    from dashboard.views.fleet import gpu_heat

    store = CachedStore(open_store(_url(session, engine, "wattlens")))
    sqlite = SQLiteStore(session.agent_db)
    view = fleet_view(store, "1h")
    want = fleet_view(sqlite, "1h")
    assert view.power.series and {s.name for s in view.power.series} == {s.name for s in want.power.series}
    assert [k.key for k in view.kpis] == [k.key for k in want.kpis]
    # The page's heatmap covers the last settled five minutes, which a one-minute session may
    # not reach; over the session's own window both stores must show every GPU.
    heat = {(c.host, c.gpu) for c in gpu_heat(store, session.window)}
    assert heat == {(c.host, c.gpu) for c in gpu_heat(sqlite, session.window)}
    assert len(heat) == NODES * GPUS
    assert all(v > 0 for s in view.power.series for v in s.values[:-1])


def test_report_command_total_equals_promql_increase_of_the_dcgm_counter(session: Session) -> None:
    """The issue's check: `wattlens report --store prometheus://…` against our own PromQL."""
    import json
    import urllib.parse
    import urllib.request
    from datetime import UTC, datetime

    server = session.engines["victoria-metrics"]
    w = session.window

    def iso(ns: int) -> str:
        return datetime.fromtimestamp(ns / NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    res = subprocess.run(
        [sys.executable, "-m", "wattlens", "report", "--format", "json", "--store",
         _url(session, "victoria-metrics", "dcgm-exporter"), "--since", iso(w.start_ns),
         "--until", iso(w.end_ns)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    reported = json.loads(res.stdout)["totals"]["gpu_energy_j"]
    # Our own PromQL: each GPU's counter once (max over its MIG instances), in J.
    query = (f"sum(max by (Hostname, UUID) (increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
             f"[{w.seconds:.0f}s]))) / 1000")
    url = f"{server.url}/api/v1/query?" + urllib.parse.urlencode({"query": query,
                                                                   "time": w.end_ns / NS})
    with urllib.request.urlopen(url, timeout=30) as resp:
        own = float(json.loads(resp.read())["data"]["result"][0]["value"][1])
    assert reported == pytest.approx(own, rel=0.001)
    assert reported > 0
