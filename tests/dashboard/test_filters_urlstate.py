"""Filters (analytics.filters) reconcile with the whole fleet; the URL state parses strictly and round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from dash import no_update

from analytics.context import load_context
from analytics.filters import Filter, filter_context
from analytics.health import HealthFilter, gpu_health
from analytics.timeutil import Window
from collector.store.sqlite import SQLiteStore
from dashboard import urlstate, views
from dashboard.app import zoom_to_range

NS = 1_000_000_000


@pytest.fixture(scope="module")
def ctx_and_store(demo_db: Path):  # type: ignore[no-untyped-def]
    store = SQLiteStore(demo_db)
    end = views.data_end_ns(store)
    assert end is not None
    window = Window(end // (300 * NS) * 300 * NS - 6 * 3600 * NS, end // (300 * NS) * 300 * NS)
    yield load_context(store, window), store, window
    store.close()


def test_node_filters_add_up_to_the_fleet(ctx_and_store) -> None:  # type: ignore[no-untyped-def]
    ctx, _store, _w = ctx_and_store
    whole = ctx.headline()
    nodes = sorted({g.host for g in ctx.gpus})
    parts = [filter_context(ctx, Filter(node=n)).headline() for n in nodes]
    assert len(nodes) == 4
    assert sum(p.gpu_energy_j for p in parts) == pytest.approx(whole.gpu_energy_j, rel=1e-12)
    assert sum(p.cpu_energy_j for p in parts) == pytest.approx(whole.cpu_energy_j, rel=1e-12)
    # What no node holds: the meter's "other IT" (switches, storage) and its share of facility
    # overhead. The nodes' grid energy plus that equals the site's, within hourly PUE variation.
    other_it = whole.it_energy_j - whole.gpu_energy_j - whole.cpu_energy_j
    assert other_it > 0
    assert sum(p.grid_energy_j for p in parts) + other_it * whole.pue == pytest.approx(
        whole.grid_energy_j, rel=0.01)
    assert sum(p.grid_energy_j for p in parts) < whole.grid_energy_j
    assert all(0 < p.it_energy_j < whole.it_energy_j for p in parts)
    # The site's meter is not split by node: a node's facility energy is its IT energy × the site PUE.
    for p in parts:
        assert p.facility_energy_j == pytest.approx(p.it_energy_j * whole.pue, rel=0.02)
        assert "filtered" in p.grid_basis or "PUE" in p.grid_basis


def test_a_model_filter_keeps_only_that_model(ctx_and_store) -> None:  # type: ignore[no-untyped-def]
    ctx, _store, _w = ctx_and_store
    models = sorted({g.model for g in ctx.gpus})
    sub = filter_context(ctx, Filter(model=models[0]))
    assert sub.gpus and {g.model for g in sub.gpus} == {models[0]}
    assert {j.gpu_model for j in sub.jobs} <= {models[0]}
    assert filter_context(ctx, Filter()) is ctx


def test_health_filter_by_job_keeps_that_jobs_hosts(ctx_and_store) -> None:  # type: ignore[no-untyped-def]
    ctx, store, window = ctx_and_store
    job = ctx.jobs[0]
    hosts = {j.host for j in ctx.jobs if j.job == job.job}
    v = gpu_health(store, window, HealthFilter(job=job.job))
    assert v.gpus and {g.host for g in v.gpus} == hosts
    assert gpu_health(store, window, HealthFilter(node="no-such-node")).gpus == []


def test_url_state_round_trips_and_rejects_bad_values() -> None:
    s = urlstate.ViewState(range="2026-11-29T10:00:00Z..2026-11-29T12:00:00Z", node="node-01",
                           model="NVIDIA H100 80GB HBM3", eta=0.3)
    assert urlstate.parse(urlstate.to_search(s)) == s
    assert urlstate.parse("") == urlstate.ViewState()
    for search, name in (("?range=yesterday", "range"), ("?range=2026-11-29..2026-11-28", "range"),
                         ("?range=noon..night", "range"), ("?eta=2", "eta"), ("?eta=abc", "eta")):
        with pytest.raises(ValueError, match=rf"^{name}: .*{search.split('=')[1][:4]}"):
            urlstate.parse(search)


def test_custom_range_is_the_window_it_names(demo_db: Path) -> None:
    store = SQLiteStore(demo_db)
    try:
        key = "2026-11-29T10:00:00Z..2026-11-29T12:30:00Z"
        w = views.window_for(store, key)
        assert (w.end_ns - w.start_ns) // NS == 9000 == views.range_seconds(key)
        assert views.range_window(store, key) == w
        assert views.range_key_for(w.start_ns, w.end_ns) == key
        assert views.range_label(key) == "2026-11-29 10:00 – 12:30 UTC"
    finally:
        store.close()


def test_report_filter_that_matches_nothing_names_the_flag(demo_db: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store", f"sqlite:///{demo_db}",
                          "--since", "1h", "--node", "node-09", "--format", "json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert "--node: no data for 'node-09' in this window; it has node-00, node-01" in out.stderr


def test_a_chart_zoom_becomes_an_absolute_range_and_anything_else_keeps_it() -> None:
    assert zoom_to_range(["2026-11-29 04:20:00.123", "2026-11-29 10:20:00"]) == \
        "2026-11-29T04:20:00..2026-11-29T10:20:00"
    for bad in (None, [], ["2026-11-29 04:20:00"], [1.5, 2.5], ["tomorrow", "later"],
                ["2026-11-29 10:20:00", "2026-11-29 04:20:00"]):
        assert zoom_to_range(bad) is no_update, bad


def test_the_custom_range_fields_make_the_key_a_zoom_makes() -> None:
    from dashboard.urlstate import range_fields, range_from_fields

    key = range_from_fields("2026-11-29 10:00", "2026-11-29T12:30:05Z")
    assert key == "2026-11-29T10:00:00Z..2026-11-29T12:30:05Z"
    assert range_fields(key) == ("2026-11-29 10:00:00", "2026-11-29 12:30:05")
    assert range_from_fields(*range_fields(key)) == key  # the fields round-trip
    assert range_from_fields("2026-11-29 12:00+02:00", "2026-11-29 11:00") == \
        "2026-11-29T10:00:00Z..2026-11-29T11:00:00Z"
    assert range_fields("6h") == ("", "")
    for start, end, words in (("yesterday", "2026-11-29 12:00", ("from", "'yesterday'")),
                              ("2026-11-29 10:00", "", ("to", "''")),
                              ("2026-11-29 12:00", "2026-11-29 10:00", ("to", "after"))):
        with pytest.raises(ValueError) as err:
            range_from_fields(start, end)
        assert all(w in str(err.value) for w in words), err.value
