"""View models over a real demo store: KPIs, the live chart's incremental update, jobs, trade-off, carbon, alerts."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics import queries
from analytics.context import Settings
from analytics.report import build_report
from analytics.savings import combined
from analytics.timeutil import Window
from collector.sources.simulated import SimulatedFleet
from collector.store.cache import CachedStore
from collector.store.sqlite import SQLiteStore
from dashboard import views
from dashboard.pages.fleet import power_patch
from tests.dashboard.conftest import write_fleet

NS = 1_000_000_000
DAY = 86400 * NS


@pytest.fixture(scope="module")
def raw(demo_db: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(demo_db)
    yield s
    s.close()


@pytest.fixture(scope="module")
def cached(raw: SQLiteStore) -> CachedStore:
    return CachedStore(raw)


@pytest.fixture(scope="module")
def ctx(cached: CachedStore) -> Any:
    return views.ContextMemo(Settings()).get(cached, "24h")


@pytest.mark.parametrize("range_key", ["1h", "6h", "24h"])
def test_fleet_cards_follow_the_range_and_equal_the_report(cached: CachedStore, raw: SQLiteStore,
                                                           range_key: str) -> None:
    """The cards are the report's headline figures for the same window (one definition), and a
    change against the prior range is shown because 49 h of data cover it."""
    end = views.data_end_ns(cached)
    assert end is not None
    kpis = {k.key: k for k in views.fleet_kpis(cached, range_key, end, Settings())}
    assert list(kpis) == ["power", "energy", "facility", "per", "carbon", "cost"]
    assert kpis["power"].value.endswith(("kW", "MW")) and "32 GPUs" in kpis["power"].note
    assert 8_000 < (kpis["power"].raw or 0) < 16_000  # 32 GPUs busy with jobs, plus four hosts' CPUs
    label = views.RANGES[range_key][0].replace("Last ", "")
    assert kpis["energy"].label == f"IT energy, {label}"
    assert "PUE" in kpis["facility"].note and "carbon and cost use it" in kpis["facility"].note
    assert "GPU-only" in kpis["per"].note
    for key in ("energy", "facility", "per", "carbon", "cost"):
        assert kpis[key].change_pct is not None and kpis[key].compare == f"vs prior {label}", key
    w = views.range_window(cached, range_key, end)
    t = build_report(raw, w).to_dict()["totals"]
    assert kpis["energy"].raw == pytest.approx(t["it_energy_j"], rel=1e-9)
    assert kpis["facility"].raw == pytest.approx(t["facility_energy_j"], rel=1e-9)
    assert kpis["cost"].raw == pytest.approx(t["cost"], rel=1e-9)
    assert kpis["carbon"].raw == pytest.approx(t["emissions"]["g_co2"], rel=1e-9)
    unit = t["fleet_per"]["unit"]
    assert kpis["per"].raw == pytest.approx(t["fleet_per"]["per"][unit], rel=1e-9)
    # And with the store's own sums, read without the cache.
    prior = Window(w.start_ns - (w.end_ns - w.start_ns), w.start_ns)
    gpu_cpu = sum(sum(queries.energy_by(raw, win, m, ()).values()) for m in ("gpu", "cpu")
                  for win in (w,))
    assert t["gpu_energy_j"] + t["cpu_energy_j"] == pytest.approx(gpu_cpu, rel=1e-9)
    assert queries.covered_s(raw, prior) >= 0.9 * prior.seconds


def test_no_change_without_a_covered_prior_window(cached: CachedStore) -> None:
    """7 days against the 7 days before: the store holds 49 h, so there is no prior week."""
    end = views.data_end_ns(cached)
    assert end is not None
    for k in views.fleet_kpis(cached, "7d", end, Settings())[1:]:
        assert k.change_pct is None and k.compare == "n/a (not enough history)", k.key


@pytest.mark.parametrize(("prior_hours", "shown"), [(20.0, False), (23.0, True)])
def test_a_change_needs_90_percent_of_the_prior_window(tmp_path: Path, prior_hours: float,
                                                       shown: bool) -> None:
    store = SQLiteStore(tmp_path / "h.db")
    end = time.time_ns() // (300 * NS) * 300 * NS
    write_fleet(store, SimulatedFleet(nodes=1, gpus_per_node=2, seed=5),
                end - int((24 + prior_hours) * 3600) * NS, end, 60)
    kpis = {k.key: k for k in views.fleet_kpis(store, "24h", end, Settings())}
    assert (kpis["energy"].change_pct is not None) is shown
    assert (kpis["energy"].compare == "n/a (not enough history)") is not shown
    store.close()


def test_power_chart_names_the_top_groups_and_sums_the_rest_as_other(cached: CachedStore) -> None:
    w = views.window_for(cached, "6h")
    chart = views.fleet_power(cached, w, "host", max_series=2)
    names = [s.name for s in chart.series]
    assert names[:2] == chart.top and names[2] == "other (2 nodes)" and chart.groups == 4
    total = queries.power_series(cached, chart.window, chart.bucket_s, ())[0]
    grid = chart.series[0].times_ns
    assert all(s.times_ns == grid for s in chart.series)  # one regular grid for every trace
    assert all(b - a == chart.bucket_s * NS for a, b in itertools.pairwise(grid))
    by_t = dict(zip(total.times_ns, total.values, strict=True))
    for i, t in enumerate(grid):
        stacked = sum(s.values[i] or 0.0 for s in chart.series)
        assert stacked == pytest.approx(by_t[t], rel=1e-9)
    assert len(grid) <= views.MAX_BUCKETS + 1


def test_the_top_groups_under_a_filter_on_the_same_tag_stay_inside_it(cached: CachedStore) -> None:
    """The named groups are read alone (kept to the top names), and a filter on the grouping tag
    still narrows them: the stack sums to the filtered total, nothing from outside it."""
    w = views.window_for(cached, "6h")
    hosts = sorted(k[0] for k in queries.energy_by_where(cached, w, "gpu", ("host",), {}))
    picked = {"host": tuple(hosts[:3])}
    chart = views.fleet_power(cached, w, "host", max_series=1, where=picked)
    names = [s.name for s in chart.series]
    assert names[0] in picked["host"] and names[1] == "other (2 nodes)" and chart.groups == 3
    total = queries.power_series(cached, chart.window, chart.bucket_s, (), where=picked)[0]
    by_t = dict(zip(total.times_ns, total.values, strict=True))
    for i, t in enumerate(chart.series[0].times_ns):
        assert sum(s.values[i] or 0.0 for s in chart.series) == pytest.approx(by_t[t], rel=1e-9)
    whole = queries.power_series(cached, chart.window, chart.bucket_s, ())[0]
    assert sum(v for v in total.values if v) < sum(v for v in whole.values if v)  # a real filter


def _apply_patch(figure: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a dash.Patch the way dash-renderer does (negative indexes count from the end)."""
    for op in patch.to_plotly_json()["operations"]:
        *path, last = op["location"]
        node: Any = figure
        for key in path:
            node = node[key]
        if op["operation"] == "Delete":
            del node[last]
        elif op["operation"] == "Extend":
            node[last].extend(op["params"]["value"])
        else:
            raise AssertionError(f"unexpected patch operation {op['operation']}")
    return figure


def test_live_update_fetches_only_new_buckets_and_equals_a_redraw(demo_store: SQLiteStore) -> None:
    store = CachedStore(demo_store, clock=time.time_ns, range_ttl_s=0)
    w = views.window_for(store, "1h")
    chart = views.fleet_power(store, w, "model")
    state = chart.state("1h")
    figure: dict[str, Any] = {"data": [{"x": _iso(s.times_ns),
                        "y": [None if v is None else v / 1000 for v in s.values]}
                       for s in chart.series]}
    # The agent writes four more minutes; the chart asks only for what changed.
    end = w.end_ns - 1
    fleet = SimulatedFleet(nodes=4, gpus_per_node=8, seed=1)
    write_fleet(demo_store, fleet, end, end + 240 * NS, 10)
    update = views.fleet_power_update(store, "1h", state)
    assert update is not None
    assert update.times_ns[0] == state["t1"] - chart.bucket_s * NS  # from the last whole bucket on
    assert len(update.times_ns) <= 240 // chart.bucket_s + 3
    assert update.replace == 2 and update.drop == 240 // chart.bucket_s
    _apply_patch(figure, power_patch(update, state["names"]))
    fresh = views.fleet_power(store, views.window_for(store, "1h"), "model")
    assert [len(t["x"]) for t in figure["data"]] == [len(s.times_ns) for s in fresh.series]
    for trace, s in zip(figure["data"], fresh.series, strict=True):
        assert trace["x"] == _iso(s.times_ns)
        for got, want in zip(trace["y"], s.values, strict=True):
            assert (got is None) == (want is None)
            if got is not None:
                assert got == pytest.approx(want / 1000, rel=1e-9)
    assert update.state["t1"] == fresh.series[0].times_ns[-1]


def _iso(times: list[int]) -> list[str]:
    from dashboard.figures import iso

    return [iso(t) for t in times]


def test_live_update_asks_for_a_redraw_when_the_range_or_groups_change(demo_store: SQLiteStore) -> None:
    chart = views.fleet_power(demo_store, views.window_for(demo_store, "1h"), "host")
    state = chart.state("1h")
    assert views.fleet_power_update(demo_store, "24h", state) is None  # other bucket width
    assert views.fleet_power_update(demo_store, "1h", {**state, "names": ["node-00"]}) is None
    assert views.fleet_power_update(demo_store, "1h", {**state, "t0": None}) is None


def test_heat_cells_cover_every_gpu_with_means_in_range(cached: CachedStore) -> None:
    cells = views.gpu_heat(cached, views.window_for(cached, "24h"))
    assert len(cells) == 32
    for c in cells:
        assert c.util_pct is not None and 0 <= c.util_pct <= 100
        assert c.power_w is not None and c.power_limit_w is not None and c.power_w <= c.power_limit_w * 1.02
    idle = [c for c in cells if c.host == "node-01" and c.gpu in ("6", "7")]
    assert len(idle) == 2 and all((c.util_pct or 0) < 1 for c in idle)  # the planted idle GPUs


def test_jobs_rank_by_cost_over_the_best_cap_and_lambda_reorders_them(ctx: Any) -> None:
    speed = views.jobs_rows(ctx, 0.0)
    energy = views.jobs_rows(ctx, 1.0)
    assert {r["job"] for r in speed} == {r["job"] for r in energy} and len(speed) >= 10
    assert [r["job"] for r in speed[:5]] != [r["job"] for r in energy[:5]]
    llm = [r for r in speed if r["job"].startswith("llm-pretrain")]
    assert {r["best_cap_w"] for r in llm} == {700}  # λ = 0: time only, the fastest cap
    top_speed, top_energy = speed[0], energy[0]
    assert top_speed["cap_w"] < 700 and top_speed["excess_mj"] > 0  # capped jobs pay in time
    assert top_energy["cap_w"] == 700 and top_energy["excess_mj"] > 0  # uncapped ones in energy
    assert [r["rank"] for r in speed] == list(range(1, len(speed) + 1))
    for r in energy:
        if r["excess_mj"] is not None and r["cap_w"] == r["best_cap_w"]:
            assert abs(r["excess_mj"]) <= 0.02 * (r["cost_mj"] or 1)


def test_job_detail_series_and_baseline(cached: CachedStore, ctx: Any) -> None:
    # The run with the most time in the window: whichever run the window's start cuts short
    # (how much of it is left depends on the time of day the test runs) is not the one shown.
    job = max((j for j in ctx.job_aggs.values() if j.job.startswith("llm-pretrain-node-00-a")),
              key=lambda j: j.active_s)
    d = views.job_detail(cached, "24h", job.job)
    assert d.found and d.unit == "tokens" and d.times_ns == sorted(d.times_ns)
    assert len(d.times_ns) == len(d.power_w) == len(d.rate) == len(d.per_values) >= 10
    assert d.baseline is not None and d.baseline_source == "first hour"
    finite = [p for p in d.per_values if p is not None]
    assert min(finite) > 0.5 * d.baseline and max(finite) < 1.5 * d.baseline
    power = [p for p in d.power_w if p]
    assert 4 * 300 < max(power) <= 4 * 720  # four H100s at their 700 W cap
    assert dict(d.facts)["Power cap"] == "700 W"
    assert not views.job_detail(cached, "24h", "no-such-job").found


def test_tradeoff_moves_the_recommended_cap_with_lambda(ctx: Any) -> None:
    fast = views.tradeoff(ctx, 0.0, None)
    frugal = views.tradeoff(ctx, 1.0, None)
    assert fast.selected == frugal.selected and "llm-1.3b" in (fast.selected or "")
    caps = sorted(p.cap_w for p in fast.points)
    from collector.sources.simulated import fleet_layout

    # Every cap the simulated fleet runs that workload at, as the layout says.
    assert caps == sorted({g.cap_w for g in fleet_layout(4, 8) if g.runs
                           and g.runs[0].job.workload == "llm-1.3b"}) == [490, 700]
    assert fast.best_cap_w == 700
    lowest_energy = min(frugal.points, key=lambda p: p.energy_j_per_unit)
    assert frugal.best_cap_w == lowest_energy.cap_w
    assert "best cap" in frugal.summary and "W" in frugal.summary
    picked = views.tradeoff(ctx, 0.5, fast.classes[-1][0])
    assert picked.selected == fast.classes[-1][0]


def test_carbon_view_windows_and_emissions(ctx: Any) -> None:
    v = views.carbon_view(ctx)
    assert v.source and v.total_g and v.total_g > 0
    assert [w["hours"] for w in v.windows] == [2, 4, 8]
    means = [w["mean_g_per_kwh"] for w in v.windows]
    assert means[0] <= means[1] <= means[2]  # a longer window cannot beat the best shorter one
    for w in v.windows:
        assert w["start_ns"] >= ctx.now_ns - 3600 * NS and w["vs_mean_pct"] < 0
    assert v.shade and v.shade[0][1] - v.shade[0][0] == 4 * 3600 * NS
    nodes = [n for n, _ in v.by_node if n != views.UNATTRIBUTED_NODE]
    assert len(nodes) == 4 and all(g > 0 for _, g in v.by_node)
    # By node and by job reconcile with the headline: what no node or job accounts for (other
    # IT on the facility meter, idle GPUs, overhead) is a named row, not a silent gap.
    assert sum(g for _, g in v.by_node) == pytest.approx(v.total_g, rel=1e-9)
    assert sum(g for _, g in v.by_job) == pytest.approx(v.total_g, rel=1e-9)
    assert dict(v.by_job)[views.UNATTRIBUTED_JOB] > 0
    assert any(r.kind == "carbon_window" for r in v.recs)


def test_recommendations_view_totals(ctx: Any) -> None:
    v = views.recommendations_view(ctx, 0.5)
    assert v.items and v.currency == "USD"
    # "If all were applied" counts each joule once: items touching the same jobs or GPUs
    # (fp8 and a clock lock on one job) add only the larger saving.
    total = combined(v.items)
    by_id = {r.id: r for r in v.items}
    assert v.kwh_per_day == pytest.approx(sum(by_id[i].savings_kwh_per_day for i in total.counted))
    assert v.kwh_per_day <= sum(r.savings_kwh_per_day for r in v.items) + 1e-9
    assert v.kwh_per_day < sum(r.savings_kwh_per_day for r in v.items)  # the demo plants overlaps
    seen: set[str] = set()
    for i in total.counted:
        keys = {f"job:{j}" for j in by_id[i].jobs} | {f"gpu:{g}" for g in by_id[i].gpus}
        assert not keys & seen, i  # no two counted items share a job or a GPU
        seen |= keys
    if total.overlaps:
        assert "not added again" in v.total_note
    # The refresh guard compares like with like: the signature survives the browser's JSON.
    sig = v.signature("24h", 0.5)
    assert sig == json.loads(json.dumps(sig))
    kinds = {r.kind for r in v.items}
    assert {"idle_gpu", "carbon_window"} <= kinds
    capped = views.recommendations_view(ctx, 1.0)
    assert any(r.kind == "power_cap" for r in capped.items)  # energy-first: lower the 700 W caps


def test_alert_lanes_from_the_rule_engine(cached: CachedStore) -> None:
    end = views.data_end_ns(cached)
    assert end is not None
    lanes = views.alert_lanes(cached, end)
    assert lanes, "the engine fired alerts on the demo fleet"
    targets = {(a.rule, a.target) for a in lanes if a.firing}
    assert ("idle-gpu-waste", "node-01/gpu6") in targets and ("idle-gpu-waste", "node-01/gpu7") in targets
    firing_then = [a.firing for a in lanes]
    assert firing_then == sorted(firing_then, reverse=True)  # firing first
    for a in lanes:
        for start, stop in a.spans:
            assert stop is None or stop > start
        assert (a.spans[-1][1] is None) == a.firing
    v = views.alerts_view(cached, "24h")
    assert v.recorded and v.spans
    st = views.status(cached, "24h", time.time_ns())
    assert st.simulated and not st.estimated and st.firing == sum(a.firing for a in lanes)


def test_empty_store_reads_as_no_data(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "empty.db")
    assert views.data_end_ns(s) is None
    st = views.status(s, "24h", time.time_ns())
    assert st.newest_ns is None and not st.simulated
    v = views.alerts_view(s, "24h")
    assert not v.recorded and v.lanes == []
    chart = views.fleet_power(s, views.window_for(s, "1h"), "host")
    assert chart.series == []
    s.close()


def test_bad_range_and_grouping_are_named() -> None:
    with pytest.raises(ValueError, match=r"range: expected one of 1h, 6h, 24h, 7d or START\.\.END, got '2y'"):
        views.range_seconds("2y")
    with pytest.raises(ValueError, match="by: expected host or model, got 'rack'"):
        views.fleet_power(None, Window(0, 1), "rack")  # type: ignore[arg-type]
    assert math.isclose(views.range_seconds(None), 86400)


def test_context_memo_serves_the_last_context_while_a_newer_one_loads(demo_store: SQLiteStore) -> None:
    memo = views.ContextMemo(Settings(), stale_s=600)
    first = memo.get(demo_store, "6h")
    assert memo.get(demo_store, "6h") is first  # same five minutes of data: the same Context
    end = first.window.end_ns
    write_fleet(demo_store, SimulatedFleet(nodes=4, gpus_per_node=8, seed=1), end - 60 * NS,
                end + 360 * NS, 60)
    assert memo.get(demo_store, "6h") is first  # served at once, stale by five minutes ...
    deadline = time.monotonic() + 60
    while memo._loading and time.monotonic() < deadline:  # ... while the new one loads
        time.sleep(0.05)
    fresh = memo.get(demo_store, "6h")
    assert fresh is not first and fresh.window.end_ns == end + 300 * NS
    far = views.ContextMemo(Settings(), stale_s=60)
    old = far.get(demo_store, "1h")
    write_fleet(demo_store, SimulatedFleet(nodes=4, gpus_per_node=8, seed=1), end + 360 * NS,
                end + 900 * NS, 60)
    newer = far.get(demo_store, "1h")  # moved on by more than stale_s: loaded in the foreground
    assert newer is not old and newer.window.end_ns > old.window.end_ns


def test_prewarm_reads_the_fleet_and_analysis_pages_in_the_background(demo_store: SQLiteStore) -> None:
    import threading

    from dashboard.app import create_app

    app = create_app(demo_store, prewarm=True)
    for t in threading.enumerate():
        if t.name == "wattlens-prewarm":
            t.join(120)
    deps = app._wattlens_deps  # type: ignore[attr-defined]
    assert "24h" in deps.memo._items  # the analysis Context is ready for the first visitor
    assert deps.store.cached_rows > 0 and deps.store.stats.fetched_buckets > 0
    # every page's first callback reads the filter bar's picks: already in the cache
    asked = deps.store.stats.store_queries
    window = views.range_window(deps.store, views.DEFAULT_RANGE)
    assert views.filter_options(deps.store, window, "")[0]["node"]
    assert deps.store.stats.store_queries == asked


def test_the_prewarm_waits_for_a_pause_in_requests_before_the_analysis_pages() -> None:
    """A first visitor's callbacks and the prewarm's analysis pages shared the two cores (a just
    started dashboard's first load: 1.8 s on SQLite, 1.5 s when the prewarm waits)."""
    import threading

    import flask

    from dashboard.app import Quiet

    quiet, web = Quiet(), flask.Flask(__name__)
    with web.test_request_context():
        quiet.begin()
        assert quiet.wait(0.05, 0.2) is False  # a request in flight: no pause within the limit
        quiet.end()
    assert quiet.wait(0.05, 5.0) is True
    with web.test_request_context():
        quiet.end()  # answered by an earlier hook (a 401): never counted, so not uncounted
    assert quiet.wait(0.0, 0.0) is True
    begun, ended = threading.Event(), []

    def request() -> None:  # a callback answered on a server thread while the prewarm waits
        with web.test_request_context():
            quiet.begin()
            begun.set()
            time.sleep(0.1)
            ended.append(time.monotonic())
            quiet.end()

    server_thread = threading.Thread(target=request)
    server_thread.start()
    begun.wait(5)
    assert quiet.wait(0.05, 5.0) is True
    assert ended and time.monotonic() - ended[0] >= 0.05  # a pause after the request ended
    server_thread.join(5)


def test_the_prewarm_warms_the_analysis_pages_after_a_pause(demo_store: SQLiteStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app counts its requests, and the prewarm asks for the pause between the Fleet page
    and the analysis pages."""
    import threading

    from dashboard import app as dash_app

    calls: list[tuple[float, float, bool]] = []
    made: list[Any] = []
    ready = threading.Event()

    def wait(self: dash_app.Quiet, pause_s: float, limit_s: float) -> bool:
        ready.wait(10)  # until the app below is known
        calls.append((pause_s, limit_s, "24h" in made[0].memo._items))
        return True

    monkeypatch.setattr(dash_app.Quiet, "wait", wait)
    app = dash_app.create_app(demo_store, prewarm=True)
    deps = app._wattlens_deps  # type: ignore[attr-defined]
    made.append(deps)
    ready.set()
    for t in threading.enumerate():
        if t.name == "wattlens-prewarm":
            t.join(120)
    assert calls == [(dash_app.PREWARM_PAUSE_S, dash_app.PREWARM_WAIT_S, False)]  # before them
    assert "24h" in deps.memo._items
    hooks = [f.__func__ for f in app.server.before_request_funcs[None] if hasattr(f, "__func__")]
    assert dash_app.Quiet.begin in hooks


def test_evidence_is_rounded_text_not_raw_json() -> None:
    rows = dict(views.evidence_rows({"mean_power_w": 291.80000000000047, "gpus": 4, "ok": True,
                                     "frontier": [{"cap_w": 400.0, "j_per_token": 0.0123456}],
                                     "model": {"p_max_w": 700.0, "share": 0.333333333}}))
    assert rows == {"mean_power_w": "291.8", "gpus": "4", "ok": "yes",
                    "frontier": "cap_w: 400, j_per_token: 0.01235", "model.p_max_w": "700",
                    "model.share": "0.3333"}


def test_cap_command_names_every_gpu() -> None:
    from dashboard.actuation import plan

    steps = plan({"type": "power_cap", "watts": 500.0, "gpus": {"node-01": ["2", "0", "1"],
                                                               "node-00": ["3"]}})
    assert views.cap_commands(steps) == [
        "wattlens cap apply --host node-00 --gpu 3 --watts 500 --apply",
        "for g in 0 1 2; do wattlens cap apply --host node-01 --gpu $g --watts 500 --apply; done"]
