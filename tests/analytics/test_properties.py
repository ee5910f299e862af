"""Properties: PER and cost do not depend on how a window is split or grouped; cost(λ) and the best cap behave."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import queries
from analytics.cost import Tariff, energy_cost
from analytics.frontier import Frontier, FrontierPoint, best_cap, pareto, point_cost
from analytics.levels import aggregate_jobs
from analytics.per import per
from analytics.timeutil import Window
from collector.schema import point
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
T0 = 1_795_737_600 * NS
SPAN_S = 3 * 3600
HOUR_NS = 3600 * NS

# (second offset, host, job, energy J, samples)
rows = st.lists(st.tuples(st.integers(0, SPAN_S - 1), st.sampled_from(["h0", "h1", "h2"]),
                          st.sampled_from(["a", "b"]), st.floats(1.0, 1e6), st.floats(0.0, 1e4)),
                min_size=1, max_size=40, unique_by=lambda r: (r[0], r[1], r[2]))


def write(rows_: list[tuple[int, str, str, float, float]], path: Path) -> SQLiteStore:
    store = SQLiteStore(path)
    pts = []
    for off, host, job, energy, samples in rows_:
        t = T0 + off * NS
        pts.append(point("job", {"job": job, "host": host, "kind": "train", "precision": "bf16",
                                 "gpu_model": "X"},
                         {"energy_j": energy, "samples": samples, "active_s": 1.0, "gpus": 1}, t))
        pts.append(point("gpu", {"host": host, "gpu": "0", "model": "X", "method": "counter"},
                         {"energy_j": energy, "util_pct": 50.0}, t))
    store.write(pts)
    return store


def totals(store: SQLiteStore, window: Window, bucket_s: int) -> tuple[float, float]:
    aggs = aggregate_jobs(queries.job_buckets(store, window, bucket_s))
    return (sum(a.work["samples"] for a in aggs.values()), sum(a.energy_j for a in aggs.values()))


@settings(max_examples=30)
@given(rows, st.integers(1, SPAN_S - 1), st.sampled_from([60, 300, 3600]))
def test_per_does_not_depend_on_split_or_grouping(rows_: list[tuple[int, str, str, float, float]],
                                                  split_s: int, bucket_s: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = write(rows_, Path(d) / "p.db")
        whole = Window(T0, T0 + SPAN_S * NS)
        w, e = totals(store, whole, 3600)
        left = totals(store, Window(T0, T0 + split_s * NS), bucket_s)
        right = totals(store, Window(T0 + split_s * NS, T0 + SPAN_S * NS), bucket_s)
        assert left[0] + right[0] == pytest.approx(w, rel=1e-9, abs=1e-9)
        assert left[1] + right[1] == pytest.approx(e, rel=1e-9)
        assert per(left[0] + right[0], left[1] + right[1]) == pytest.approx(per(w, e), rel=1e-9)
        # Grouped by host, the parts add up to the fleet as well.
        by_host = queries.job_buckets(store, whole, bucket_s)
        assert sum(b.work["samples"] for b in by_host) == pytest.approx(w, rel=1e-9, abs=1e-9)
        store.close()


tariffs = st.builds(
    lambda base, peak, start, length: Tariff(base, periods=((start, (start + length) % 24 or 24, peak),)),
    st.floats(0.0, 1.0), st.floats(0.0, 2.0), st.integers(0, 23), st.integers(1, 12))


def hourly_energy(store: SQLiteStore, window: Window, bucket_s: int,
                  host: str | None = None) -> dict[int, float]:
    out: dict[int, float] = {}
    for (h,), t, e in queries.energy_buckets(store, window, "gpu", bucket_s, ("host",)):
        if host is None or h == host:
            key = t // HOUR_NS * HOUR_NS
            out[key] = out.get(key, 0.0) + e
    return out


@settings(max_examples=30)
@given(rows, st.integers(1, SPAN_S - 1), tariffs)
def test_cost_does_not_depend_on_split_or_grouping(rows_: list[tuple[int, str, str, float, float]],
                                                   split_s: int, tariff: Tariff) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = write(rows_, Path(d) / "c.db")
        whole = Window(T0, T0 + SPAN_S * NS)
        total = energy_cost(hourly_energy(store, whole, 3600), tariff)
        parts = (energy_cost(hourly_energy(store, Window(T0, T0 + split_s * NS), 300), tariff)
                 + energy_cost(hourly_energy(store, Window(T0 + split_s * NS, whole.end_ns), 60), tariff))
        assert parts == pytest.approx(total, rel=1e-9, abs=1e-12)
        per_host = sum(energy_cost(hourly_energy(store, whole, 300, h), tariff) for h in ("h0", "h1", "h2"))
        assert per_host == pytest.approx(total, rel=1e-9, abs=1e-12)
        store.close()


P_MAX = 700.0
# (cap W, seconds per unit, mean power as a share of P_max): energy = time × power <= P_max × time.
caps = st.lists(st.tuples(st.integers(100, 700), st.floats(0.01, 10.0), st.floats(0.05, 1.0)),
                min_size=1, max_size=8, unique_by=lambda c: c[0])


def frontier_of(cs: list[tuple[int, float, float]]) -> Frontier:
    pts = tuple(FrontierPoint(float(c), t, t * share * P_MAX, 1.0, t * share * P_MAX, t, share * P_MAX,
                              (), ()) for c, t, share in cs)
    return Frontier("X", "train", "w", "bf16", "samples", P_MAX, pts)


@given(caps, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_cost_is_monotone_in_lambda_for_a_fixed_frontier(cs: list[tuple[int, float, float]],
                                                         a: float, b: float) -> None:
    f = frontier_of(cs)
    lo, hi = min(a, b), max(a, b)
    best_lo, best_hi = best_cap(f, lo), best_cap(f, hi)
    assert best_lo is not None and best_hi is not None
    # Power never exceeds P_max, so each point's cost falls as λ rises, and so does the optimum...
    for p in f.points:
        assert point_cost(f, p, hi) <= point_cost(f, p, lo) + 1e-9 * point_cost(f, p, lo)
    assert point_cost(f, best_hi, hi) <= point_cost(f, best_lo, lo) * (1 + 1e-9)
    # ... and more weight on energy never picks a hungrier cap.
    assert best_hi.energy_j_per_unit <= best_lo.energy_j_per_unit * (1 + 1e-9)
    assert best_hi.time_s_per_unit >= best_lo.time_s_per_unit * (1 - 1e-9)


@given(caps, st.floats(0.0, 1.0))
def test_the_optimal_cap_lies_on_the_frontier(cs: list[tuple[int, float, float]], lam: float) -> None:
    f = frontier_of(cs)
    best = best_cap(f, lam)
    assert best in pareto(f.points)
    # Searching every cap seen, not just the frontier, finds nothing cheaper.
    cheapest = min(point_cost(f, p, lam) for p in f.points)
    assert point_cost(f, best, lam) <= cheapest * (1 + 1e-12)
