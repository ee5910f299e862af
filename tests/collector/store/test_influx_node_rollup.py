"""InfluxDB's per-node rollup (``gpu_node``): the sum of its GPUs, read only where it is exact."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.schema import point
from collector.store import AggregateQuery
from collector.store.influx import InfluxStore
from collector.store.sqlite import SQLiteStore
from tests.collector.store.test_influx import HOUR, NS, T0, _assert_rows_equal, _sim_points
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

T_OLD = T0 - 3 * HOUR  # five hours ago: every rollup is complete there
BY_NODE = (("sum", "energy_j"), ("mean", "power_w"), ("max", "power_w"), ("min", "util_pct"),
           ("count", "power_w"))


@pytest.fixture
def store(influxdb: ServerProcess, influx_db: str) -> Iterator[InfluxStore]:
    """A database with rollups (node ones included) over three hours of 2 nodes x 4 GPUs."""
    s = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    s.init(raw_retention="30d")
    s.write(_sim_points(T_OLD, 3 * 3600, step_s=20))
    s.backfill_rollups(T_OLD, T_OLD + 3 * HOUR)
    yield s
    s.close()


def _statements(store: InfluxStore) -> list[str]:
    """Record every InfluxQL statement the store sends from now on."""
    seen: list[str] = []
    original = store.influxql

    def logged(statement: str, **kw: str | None) -> list[dict[str, object]]:
        seen.append(statement)
        return original(statement, **kw)

    store.influxql = logged  # type: ignore[method-assign,assignment]
    return seen


def _by_node_queries(start: int, end: int) -> list[AggregateQuery]:
    return [AggregateQuery("gpu", BY_NODE, start, end, group_by=by, bucket_s=b,  # type: ignore[arg-type]
                           where=where)
            for by, b, where in ((("host",), 300, {}), ((), 3600, {}), (("method",), None, {}),
                                 (("model",), 900, {}), ((), None, {"host": "node-01"}),
                                 (("host",), 60, {}))]


def test_node_rollup_equals_the_sum_of_its_gpus(store: InfluxStore) -> None:
    """Each node row's parts are its GPUs' rows' parts added (sums, counts) or extremes."""
    window = f"time >= {T_OLD} AND time < {T_OLD + 3 * HOUR}"
    for rp in ("rollup_1m", "rollup_5m", "rollup_1h"):
        node = {(v[0], s["tags"]["host"]): v[1:] for s in store.influxql(
            f'SELECT "energy_j_sum", "energy_j_count", "power_w_min", "power_w_max" '
            f'FROM "{rp}"."gpu_node" WHERE {window} GROUP BY "host"') for v in s["values"]}
        gpus: dict[tuple[int, str], list[float]] = {}
        for s in store.influxql(
                f'SELECT "energy_j_sum", "energy_j_count", "power_w_min", "power_w_max" '
                f'FROM "{rp}"."gpu" WHERE {window} GROUP BY "host", "gpu"'):
            for t, e, n, lo, hi in s["values"]:
                have = gpus.setdefault((t, s["tags"]["host"]), [0.0, 0, lo, hi])
                have[0] += e
                have[1] += n
                have[2], have[3] = min(have[2], lo), max(have[3], hi)
        assert len(node) > 2 and node.keys() == gpus.keys(), rp
        for key, (e, n, lo, hi) in node.items():
            assert e == pytest.approx(gpus[key][0], rel=1e-12), (rp, key)
            assert (n, lo, hi) == tuple(gpus[key][1:]), (rp, key)


def test_by_node_reads_use_the_node_rollup_and_equal_raw_and_sqlite(
        store: InfluxStore, tmp_path: Path) -> None:
    sqlite = SQLiteStore(tmp_path / "ref.db")
    sqlite.write(_sim_points(T_OLD, 3 * 3600, step_s=20))
    start, end = T_OLD + 7 * NS, T_OLD + 3 * HOUR - 13 * NS
    seen = _statements(store)
    for q in _by_node_queries(start, end):
        got = store.query(q)
        assert got, q
        _assert_rows_equal(got, store.raw_query(q), f"raw {q}")  # type: ignore[arg-type]
        _assert_rows_equal(got, sqlite.query(q), f"sqlite {q}")  # type: ignore[arg-type]
    assert any('."gpu_node"' in s for s in seen)
    # A per-GPU read (or one filtered by GPU) never reads the node rollup.
    seen.clear()
    for q in (AggregateQuery("gpu", BY_NODE, start, end, group_by=("host", "gpu"),  # type: ignore[arg-type]
                             bucket_s=3600),
              AggregateQuery("gpu", BY_NODE, start, end, where={"gpu": "0"})):  # type: ignore[arg-type]
        _assert_rows_equal(store.query(q), sqlite.query(q), f"per GPU {q}")  # type: ignore[arg-type]
    assert seen and not any("gpu_node" in s for s in seen)
    sqlite.close()


def test_a_database_without_the_node_rollup_reads_the_gpu_rollups(
        store: InfluxStore, influx_db: str, caplog: pytest.LogCaptureFixture) -> None:
    """Created before the node rollup: no gpu_node rows, no such continuous queries. Reads fall
    back to the per-GPU rollups, and say once how to add it; `store init` adds the queries; a
    node rollup that starts later than the GPU ones is read only from where it starts."""
    start, end = T_OLD + 7 * NS, T_OLD + 3 * HOUR - 13 * NS
    expected = {repr(q): store.query(q) for q in _by_node_queries(start, end)}
    assert "no gpu_node rollup" not in caplog.text
    store.influxql('DROP MEASUREMENT "gpu_node"')
    for every in ("1m", "5m", "1h"):
        store.influxql(f'DROP CONTINUOUS QUERY "wattlens_gpu_node_{every}_v2" ON "{influx_db}"',
                       database="")
    store.forget_tiers()
    assert store.tier_starts("gpu_node") == {}
    store.forget_tiers()
    assert store.tier_starts("gpu_node") == {}
    hints = [r.getMessage() for r in caplog.records if "no gpu_node rollup" in r.getMessage()]
    assert len(hints) == 1 and "wattlens store init" in hints[0], hints
    seen = _statements(store)
    for q in _by_node_queries(start, end):
        _assert_rows_equal(store.query(q), expected[repr(q)], f"fallback {q}")  # type: ignore[arg-type]
    assert seen and not any("gpu_node" in s for s in seen)
    assert "continuous query 'wattlens_gpu_node_1m_v2': created" in store.init(raw_retention="30d")
    # Rollups recomputed for the last hour only: the node rollup starts there.
    store.backfill_rollups(T_OLD + 2 * HOUR, T_OLD + 3 * HOUR)
    assert set(store.tier_starts("gpu_node")) == {60, 300, 3600}
    assert store.tier_starts("gpu_node")[3600] == T_OLD + 2 * HOUR
    seen.clear()
    for q in _by_node_queries(start, end):
        _assert_rows_equal(store.query(q), expected[repr(q)], f"partial {q}")  # type: ignore[arg-type]
    assert any('."gpu_node"' in s for s in seen) and any('."gpu" WHERE' in s for s in seen
                                                         if "rollup_" in s)


def test_downsample_writes_node_measurements_that_reads_use(influxdb: ServerProcess,
                                                            influx_db: str) -> None:
    """The InfluxDB 2.x/3.x layout: gpu_node_1m, gpu_node_5m and gpu_node_1h measurements."""
    from collector.store.influx_rollups import downsample

    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    store.init(raw_retention="30d", rollups=False)
    store.rollup_layout = "measurement"
    store.write(_sim_points(T_OLD, 2 * 3600, step_s=30))
    done = downsample(store, T_OLD, T_OLD + 2 * HOUR)
    assert "gpu_node_5m: 48 rows" in done  # 2 nodes x 24 buckets
    assert set(store.tier_starts("gpu_node")) == {60, 300, 3600}
    seen = _statements(store)
    q = AggregateQuery("gpu", BY_NODE, T_OLD + 3 * NS, T_OLD + 2 * HOUR - 5 * NS,  # type: ignore[arg-type]
                       group_by=("host",), bucket_s=600)
    _assert_rows_equal(store.query(q), store.raw_query(q), "downsampled by node")  # type: ignore[arg-type]
    assert any('"gpu_node_5m"' in s for s in seen)
    store.close()


def test_time_range_remembers_the_first_point_until_this_store_writes(
        influxdb: ServerProcess, influx_db: str) -> None:
    """A second call within 2 s asks nothing, a later one only the newest point; a write (here,
    an older point) is seen."""
    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    assert store.time_range("gpu") is None
    pts = _sim_points(T_OLD, 60, step_s=20)
    store.write(pts)
    first = min(p.time_ns for p in pts if p.measurement == "gpu")
    last = max(p.time_ns for p in pts if p.measurement == "gpu")
    assert store.time_range("gpu") == (first, last)
    seen = _statements(store)
    assert store.time_range("gpu") == (first, last)
    assert seen == []  # one page load asks from several callbacks: influxd answers once
    store._newest.ttl_s = 0.0  # as if 2 s had passed
    assert store.time_range("gpu") == (first, last)
    # the newest only: one field's newest, then whether any point lies after it
    assert len(seen) == 2 and "DESC" in seen[0] and f"time > {last}" in seen[1]
    older = _sim_points(T_OLD - HOUR, 20, step_s=20)
    store.write(older)
    assert store.time_range("gpu") == (min(p.time_ns for p in older if p.measurement == "gpu"),
                                       last)
    store.close()


def test_time_range_finds_a_bound_that_only_another_field_reaches(
        influxdb: ServerProcess, influx_db: str) -> None:
    """The bounds are asked of one field first (power_w for gpu), then checked over every field:
    an oldest point with only temp_c, a newest with only util_pct, and a measurement whose first
    field is never written are all found."""
    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    tags = {"host": "node-01", "gpu": "0", "uuid": "GPU-0", "model": "H100", "method": "counter"}
    store.write([point("gpu", tags, {"temp_c": 41.0}, T_OLD - 60 * NS),
                 *(point("gpu", tags, {"power_w": 300.0, "util_pct": 50.0}, T_OLD + k * 10 * NS)
                   for k in range(6)),
                 point("gpu", tags, {"util_pct": 12.0}, T_OLD + 120 * NS),
                 point("job", {"job": "j", "host": "node-01"}, {"samples": 8.0}, T_OLD + 7),
                 point("job", {"job": "j", "host": "node-01"}, {"samples": 9.0}, T_OLD + 9)])
    seen = _statements(store)
    assert store.time_range("gpu") == (T_OLD - 60 * NS, T_OLD + 120 * NS)
    assert store.time_range("job") == (T_OLD + 7, T_OLD + 9)  # no energy_j: every field asked
    store.forget_bounds()
    store.write([point("gpu", tags, {"power_w": 280.0}, T_OLD + 130 * NS)])
    seen.clear()
    assert store.time_range("gpu") == (T_OLD - 60 * NS, T_OLD + 130 * NS)
    src, newest = store.source_of("gpu"), T_OLD + 130 * NS
    # the newest is power_w's now: its probe and one read of the empty span after it, no more;
    # the oldest is still temp_c's: probe, a point found before it, every field asked there
    assert sorted(seen) == sorted([
        f'SELECT "power_w" FROM {src} ORDER BY time DESC LIMIT 1',
        f"SELECT * FROM {src} WHERE time > {newest} ORDER BY time ASC LIMIT 1",
        f'SELECT "power_w" FROM {src} ORDER BY time ASC LIMIT 1',
        f"SELECT * FROM {src} WHERE time < {T_OLD} ORDER BY time DESC LIMIT 1",
        f"SELECT * FROM {src} WHERE time < {T_OLD} ORDER BY time ASC LIMIT 1"]), seen
    store.close()


def test_a_window_before_the_first_point_is_not_asked_of_raw_points(store: InfluxStore) -> None:
    """The prior day of a store younger than a day: its rollups begin with the data, so that day
    would be read from raw points, where there are none. The answer is the same without asking."""
    first = store.first_point("gpu")
    assert first is not None and T_OLD <= first < T_OLD + 60 * NS
    seen = _statements(store)
    for q in _by_node_queries(T_OLD - 24 * HOUR, T_OLD + 2 * HOUR):
        _assert_rows_equal(store.query(q), store.raw_query(q), f"from a day before: {q}")
    spans = [tuple(int(t) for t in re.findall(r"time >= (\d+) AND time < (\d+)", s)[0])
             for s in seen if re.search(r'FROM "gpu" WHERE', s)]  # raw points, not a rollup
    tiered = len(_by_node_queries(0, 1))  # the raw_query statements, each over the whole window
    assert len([s for s in spans if s[0] == T_OLD - 24 * HOUR]) == tiered
    assert all(end > first for start, end in spans if start != T_OLD - 24 * HOUR)
    assert any(end > first for _, end in spans)  # the check above had statements to look at
