"""InfluxDB 1.6 store against a real influxd: round trips with hostile names, aggregates equal SQLite's."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.errors import StoreRejected, StoreUnavailable
from collector.schema import MEASUREMENTS, Point, escape_key, point, to_line
from collector.sources.simulated import SimulatedFleet
from collector.store import AggregateQuery, open_store, tiers
from collector.store.base import Aggregate
from collector.store.influx import InfluxStore
from collector.store.sqlite import SQLiteStore
from tests.fixtures_influx import influx_query
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.integration

NS = 1_000_000_000
HOUR = 3600 * NS
# Two hours ago, on an hour boundary: inside any retention policy, and buckets line up.
T0 = (time.time_ns() // HOUR - 2) * HOUR
HOSTILE = [
    "x' OR '1'='1", 'a"b', "back\\slash", "空格 name", "c,o=m m", "=", " lead", 'x\\"y',
    "\\'", "tab\there", "émoji 🔋", "back\\\\double", "semi;colon", "--", "/*x*/", "{a}",
]


def _rows(store: InfluxStore, statement: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for s in store.influxql(statement):
        cols = s["columns"]
        out.extend(dict(zip(cols, v, strict=True)) for v in s["values"])
    return out


def test_every_measurement_round_trips_with_hostile_names(influx_url: str) -> None:
    store = InfluxStore(influx_url)
    expected: dict[str, list[Point]] = {}
    for m, (tags, fields) in MEASUREMENTS.items():
        pts = []
        for i, name in enumerate(HOSTILE):
            pts.append(point(
                m, {t: f"{name}-{t}" if j else name for j, t in enumerate(tags)},
                {f: float(i * 100 + k) + 0.25 for k, f in enumerate(fields)}, T0 + i * NS))
        expected[m] = pts
        store.write(pts)
    for m, pts in expected.items():
        got = _rows(store, f'SELECT * FROM "{m}" ORDER BY time')
        assert len(got) == len(pts), m
        for row, p in zip(got, pts, strict=True):
            assert row["time"] == p.time_ns
            for k, v in p.tags:
                assert row[k] == v, (m, k)
            for k, fv in p.fields:
                assert row[k] == fv, (m, k)
    store.close()


def test_hostile_filters_select_exactly_their_own_rows(influx_url: str) -> None:
    store = InfluxStore(influx_url)
    store.write([point("job", {"job": name, "host": "h"}, {"energy_j": float(i + 1)}, T0 + i * NS)
                 for i, name in enumerate(HOSTILE)])
    end = T0 + HOUR
    rows = store.query(AggregateQuery("job", (("sum", "energy_j"),), T0, end, group_by=("job",)))
    assert {r.tags["job"]: r.values["sum_energy_j"] for r in rows} == {
        name: float(i + 1) for i, name in enumerate(HOSTILE)}
    for i, name in enumerate(HOSTILE):
        only = store.query(AggregateQuery("job", (("sum", "energy_j"), ("count", "energy_j")),
                                          T0, end, where={"job": name}))
        assert [(r.values["sum_energy_j"], r.values["count_energy_j"]) for r in only] == [
            (float(i + 1), 1.0)], name
    either = store.query(AggregateQuery("job", (("count", "energy_j"),), T0, end,
                                        where={"job": (HOSTILE[0], HOSTILE[1])}))
    assert either[0].values["count_energy_j"] == 2.0
    assert store.tag_values("job", "job", T0, end) == sorted(HOSTILE)
    assert store.time_range("job") == (T0, T0 + (len(HOSTILE) - 1) * NS)
    assert store.time_range("nothing_here") is None
    store.close()


def _writable(text: str) -> bool:
    try:
        escape_key(text)
    except ValueError:
        return False
    return True


def test_schema_escaping_agrees_with_influxdb(influx_url: str) -> None:
    """Hundreds of names over a hostile alphabet: InfluxDB stores exactly what schema.py wrote."""
    rng = random.Random(7)
    alphabet = ["\\", ",", "=", " ", '"', "'", "a", "空", "é", "\t", "#", "{", "}", "🔋"]
    names: set[str] = set(HOSTILE)
    refused: list[str] = []
    while len(names) < 600:
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        (names.add if _writable(name) else refused.append)(name)
    ordered = sorted(names)
    lines = [to_line(Point("esc", (("job", n), (f"k{n}", "1")), (("note", n), ("v", 1.0)),
                           T0 + i)) for i, n in enumerate(ordered)]
    store = InfluxStore(influx_url)
    store.write_lines("\n".join(lines).encode())
    got = _rows(store, 'SELECT * FROM "esc"')
    assert len(got) == len(ordered)
    for row in got:
        name = ordered[int(str(row["time"])) - T0]
        assert (row["job"], row["note"], row[f"k{name}"]) == (name, name, "1")
    # What InfluxDB cannot store is refused before it is sent, naming the value.
    assert refused
    for name in refused[:50]:
        with pytest.raises(ValueError, match="backslash"):
            escape_key(name)
    store.close()


def test_a_point_line_protocol_cannot_carry_is_dropped_alone(influx_url: str) -> None:
    store = InfluxStore(influx_url)
    bad = Point("job", (("host", "h"), ("job", "trail\\")), (("samples", 1.0),), T0)
    with pytest.raises(ValueError, match="backslash at the end"):
        to_line(bad)
    good = [point("job", {"host": "h", "job": "ok"}, {"samples": 2.0}, T0 + i * NS)
            for i in range(3)]
    store.write([good[0], bad, *good[1:]])
    assert store.points_rejected == 1
    assert len(_rows(store, 'SELECT * FROM "job"')) == 3
    store.close()


def _sim_points(start_ns: int, seconds: int, step_s: int = 2) -> list[Point]:
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, seed=11)
    pts: list[Point] = []
    for k in range(seconds // step_s):
        pts.extend(fleet.points_between(start_ns + k * step_s * NS,
                                        start_ns + (k + 1) * step_s * NS))
    return pts


def _assert_rows_equal(a: list[object], b: list[object], what: str) -> None:
    # SQL answers an ungrouped aggregate over no rows with one row of NULLs;
    # InfluxDB answers with no row. Both mean "nothing there".
    a = [r for r in a if any(v is not None for v in r.values.values())]  # type: ignore[attr-defined]
    b = [r for r in b if any(v is not None for v in r.values.values())]  # type: ignore[attr-defined]
    assert len(a) == len(b), what
    for x, y in zip(a, b, strict=True):
        assert (x.time_ns, dict(x.tags)) == (y.time_ns, dict(y.tags)), what  # type: ignore[attr-defined]
        xv, yv = dict(x.values), dict(y.values)  # type: ignore[attr-defined]
        assert xv.keys() == yv.keys(), what
        for k, v in xv.items():
            w = yv[k]
            assert (v is None) == (w is None), (what, k)
            if v is not None and w is not None:
                assert v == pytest.approx(w, rel=1e-9, abs=1e-9), (what, k, x, y)


def test_aggregates_match_sqlite(influx_url: str, tmp_path: Path) -> None:
    start = T0 + 13 * NS  # not on a bucket boundary
    pts = _sim_points(start, 1500)
    influx = InfluxStore(influx_url)
    sqlite = SQLiteStore(tmp_path / "ref.db")
    influx.write(pts)
    sqlite.write(pts)
    end = start + 1500 * NS
    hosts = sqlite.tag_values("gpu", "host", start, end)
    jobs = sqlite.tag_values("job", "job", start, end)
    all_aggs: tuple[tuple[Aggregate, str], ...] = tuple(
        (a, f) for a in ("sum", "mean", "max", "min", "count") for f in ("power_w", "energy_j"))
    queries = [
        AggregateQuery("gpu", (*all_aggs, ("last", "power_w")), start, end,
                       group_by=("host", "gpu"), bucket_s=60),
        AggregateQuery("gpu", all_aggs, start + 5 * NS, end - 7 * NS, group_by=("host",),
                       bucket_s=7),
        AggregateQuery("gpu", all_aggs, start, end),
        AggregateQuery("gpu", (("sum", "energy_j"), ("last", "temp_c")), start, end,
                       group_by=("host", "gpu")),
        AggregateQuery("gpu", (("mean", "util_pct"),), start, end, group_by=("model",),
                       bucket_s=3600),
        AggregateQuery("cpu", (("sum", "energy_j"), ("mean", "power_w")), start, end,
                       group_by=("host", "domain"), bucket_s=300),
        AggregateQuery("job", (("sum", "samples"), ("sum", "tokens"), ("sum", "energy_j"),
                               ("max", "gpus")), start, end, group_by=("job",),
                       where={"host": tuple(hosts)}),
        AggregateQuery("job", (("sum", "energy_j"),), start, end, where={"job": jobs[0]},
                       bucket_s=600),
        AggregateQuery("facility", (("mean", "it_power_w"), ("sum", "facility_energy_j")),
                       start, end, bucket_s=60),
        AggregateQuery("gpu", (("sum", "energy_j"), ("count", "no_such_field")), start, end,
                       group_by=("host",)),
        AggregateQuery("gpu", (("sum", "energy_j"),), start, end, where={"host": ()}),
        AggregateQuery("gpu", (("sum", "energy_j"),), start, end, where={"host": "nobody"}),
        AggregateQuery("no_such_measurement", (("sum", "energy_j"),), start, end),
    ]
    for q in queries:
        _assert_rows_equal(influx.query(q), sqlite.query(q), repr(q))  # type: ignore[arg-type]
    assert influx.query(queries[0])  # the comparison was not vacuous
    for m, tag in (("gpu", "host"), ("gpu", "uuid"), ("cpu", "domain"), ("job", "job")):
        assert influx.tag_values(m, tag, start, end) == sqlite.tag_values(m, tag, start, end)
        assert influx.tag_values(m, tag, start + 600 * NS, start + 700 * NS) == \
            sqlite.tag_values(m, tag, start + 600 * NS, start + 700 * NS)
    for m in ("gpu", "cpu", "job", "facility"):
        assert influx.time_range(m) == sqlite.time_range(m)
    influx.close()
    sqlite.close()


def test_errors_are_mapped_and_never_show_the_password(influxdb: ServerProcess,
                                                      influx_db: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = point("gpu", {"host": "h"}, {"power_w": 1.0}, T0)
    dead = open_store(f"influxdb://admin:s3cr3t-pw@127.0.0.1:{free_port()}/{influx_db}")
    assert "s3cr3t" not in dead.url and "***" in dead.url
    with pytest.raises(StoreUnavailable, match="connection refused") as down:
        dead.write([p])
    with pytest.raises(StoreUnavailable):
        dead.query(AggregateQuery("gpu", (("sum", "power_w"),), T0, T0 + NS))
    assert "s3cr3t" not in str(down.value) and "s3cr3t" not in repr(dead)
    missing = open_store(f"influxdb://u:s3cr3t-pw@127.0.0.1:{influxdb.port}/no_such_db")
    with pytest.raises(StoreUnavailable, match="wattlens store init") as no_db:
        missing.write([p])
    assert "s3cr3t" not in str(no_db.value)
    store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    store.write([p])
    conflict = point("gpu", {"host": "h"}, {"power_w": "not a number"}, T0 + NS)
    with pytest.raises(StoreRejected, match="field type conflict"):
        store.write([conflict])
    assert "s3cr3t" not in caplog.text
    for s in (dead, missing, store):
        s.close()


def test_wrong_credentials_are_unavailable_not_dropped(
        influxdb_factory: Callable[..., ServerProcess]) -> None:
    server = influxdb_factory("auth", auth=True)
    # With no user yet, InfluxDB lets the first admin be created without credentials.
    influx_query(server, "CREATE USER \"admin\" WITH PASSWORD 'right-pw' WITH ALL PRIVILEGES")
    wrong = InfluxStore(f"influxdb://admin:wrong-pw@127.0.0.1:{server.port}/secured")
    with pytest.raises(StoreUnavailable, match="refused the credentials") as refused:
        wrong.init()
    assert "wrong-pw" not in str(refused.value) and "right-pw" not in str(refused.value)
    right = InfluxStore(f"influxdb://admin:right-pw@127.0.0.1:{server.port}/secured")
    right.init()
    right.write([point("gpu", {"host": "h"}, {"power_w": 5.0}, T0)])
    rows = right.query(AggregateQuery("gpu", (("max", "power_w"),), T0, T0 + NS))
    assert rows[0].values["max_power_w"] == 5.0
    wrong.close()
    right.close()


def test_init_creates_retention_policies_and_rollups(influxdb: ServerProcess,
                                                     influx_db: str) -> None:
    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    # A continuous query of the first layout (means only) is replaced.
    store.influxql(f'CREATE DATABASE "{influx_db}"', database="")
    store.influxql(f'CREATE CONTINUOUS QUERY "wattlens_gpu_1m" ON "{influx_db}" BEGIN '
                   f'SELECT mean("power_w") AS "power_w" INTO "{influx_db}"."autogen"."gpu_old" '
                   f'FROM "gpu" GROUP BY time(1m), * END', database="")
    first = store.init(raw_retention="30d")
    assert "continuous query 'wattlens_gpu_1m': dropped (first layout, means only)" in first
    assert "continuous query 'wattlens_gpu_1m_v2': created" in first
    again = store.init(raw_retention="30d")
    assert "continuous query 'wattlens_gpu_1m_v2': exists" in again
    policies = json.loads(influx_query(influxdb, f'SHOW RETENTION POLICIES ON "{influx_db}"'))
    rps = {v[0]: (v[1], v[4]) for v in policies["results"][0]["series"][0]["values"]}
    assert rps["raw"] == ("720h0m0s", True)
    assert rps["rollup_1m"][0] == "2160h0m0s" and rps["rollup_1h"][0] == "0s"
    assert rps["rollup_5m"][0] == "2160h0m0s"  # kept as long as the 1m rollup
    cqs = json.loads(influx_query(influxdb, "SHOW CONTINUOUS QUERIES"))
    mine = next(s for s in cqs["results"][0]["series"] if s["name"] == influx_db)
    assert sorted(v[0] for v in mine["values"]) == sorted(
        f"wattlens_{m}_{r}_v2" for m in ("gpu", "cpu", "job", "facility", "gpu_node")
        for r in ("1m", "5m", "1h"))
    store.close()


def test_reads_use_the_rollup_policies_and_match_raw(influxdb: ServerProcess,
                                                     influx_db: str) -> None:
    """Whole hours from rollup_1h, whole minutes from rollup_1m, edges from raw: same numbers."""
    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    store.init(raw_retention="30d")
    t_old = T0 - 3 * HOUR  # five hours ago: both rollups are complete there
    store.write(_sim_points(t_old, 3 * 3600, step_s=20))
    store.backfill_rollups(t_old, t_old + 3 * HOUR)
    assert set(store.tier_starts("gpu")) == {60, 300, 3600}
    aggs = (("sum", "energy_j"), ("mean", "power_w"), ("max", "power_w"), ("min", "util_pct"),
            ("count", "power_w"))
    start, end = t_old + 7 * NS, t_old + 3 * HOUR - 13 * NS
    # Extremes alone (only min/max parts are read), sums alone, and everything; buckets as wide
    # as a tier (its rows read plain and folded here) and narrower or wider (grouped by influxd).
    for which in (aggs, (("max", "temp_c"), ("min", "power_w")), (("sum", "energy_j"),)):
        for bucket_s, group_by in ((None, ("host",)), (3600, ()), (600, ("host", "gpu")), (5, ()),
                                   (300, ("host", "gpu")), (60, ("gpu",))):
            q = AggregateQuery("gpu", which, start, end, group_by=group_by,  # type: ignore[arg-type]
                               bucket_s=bucket_s)
            _assert_rows_equal(store.query(q), store.raw_query(q), f"{which} {bucket_s} {group_by}")  # type: ignore[arg-type]
    # Sums alone read no counts: a field some points lack (tokens, idle_j) must still be absent,
    # not 0, exactly where raw points have none, and present where it sums to 0.
    job_sums = tuple(("sum", f) for f in ("tokens", "samples", "idle_j", "estimated_j"))
    for bucket_s, group_by in ((3600, ("job",)), (None, ("job", "host")), (300, ("kind",))):
        q = AggregateQuery("job", job_sums, start, end, group_by=group_by,  # type: ignore[arg-type]
                           bucket_s=bucket_s)
        _assert_rows_equal(store.query(q), store.raw_query(q), f"job sums {bucket_s} {group_by}")
    pieces = tiers.plan(AggregateQuery("gpu", aggs, start, end), [  # type: ignore[arg-type]
        tiers.RAW, tiers.Tier("1m", 60, since_ns=t_old), tiers.Tier("1h", 3600, since_ns=t_old)])
    assert [p.tier.width_s for p in pieces] == [3600, 60, 0, 60, 0]
    store.close()


def test_a_database_without_the_5_minute_policy_reads_its_1m_and_1h_ones(
        influxdb: ServerProcess, influx_db: str) -> None:
    """Set up before rollup_5m existed: reads use the policies there are, and still match raw."""
    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    store.init(raw_retention="30d")
    t_old = T0 - 3 * HOUR
    store.write(_sim_points(t_old, 2 * 3600, step_s=30))
    store.backfill_rollups(t_old, t_old + 2 * HOUR)
    store.influxql(f'DROP RETENTION POLICY "rollup_5m" ON "{influx_db}"', database="")
    store.forget_tiers()
    assert set(store.tier_starts("gpu")) == {60, 3600}
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("mean", "power_w"), ("max", "util_pct")),
                       t_old + 3 * NS, t_old + 2 * HOUR - 7 * NS, group_by=("host", "gpu"),
                       bucket_s=300)
    _assert_rows_equal(store.query(q), store.raw_query(q), "no rollup_5m")  # type: ignore[arg-type]
    assert "retention policy 'rollup_5m': 90d created" in store.init(raw_retention="30d")
    store.close()


def test_gzip_and_small_batches_write_the_same(influxdb: ServerProcess, influx_db: str) -> None:
    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
                        f"?gzip=on&batch_size=97&max_inflight=3")
    pts = _sim_points(T0, 120, step_s=1)
    store.write(pts)
    got = _rows(store, 'SELECT count("power_w") FROM "gpu"')
    assert got[0]["count"] == sum(1 for p in pts if p.measurement == "gpu")
    store.close()


def test_downsample_writes_rollup_measurements_that_reads_use(influxdb: ServerProcess,
                                                              influx_db: str) -> None:
    """The InfluxDB 2.x/3.x path (NAME_1m, NAME_1h), run on a real server through InfluxQL."""
    from collector.store.influx_rollups import downsample

    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    store.init(raw_retention="30d", rollups=False)
    store.rollup_layout = "measurement"
    t_old = T0 - 3 * HOUR
    store.write(_sim_points(t_old, 3 * 3600, step_s=30))
    assert store.tier_starts("gpu") == {}
    done = downsample(store, t_old, t_old + 3 * HOUR)
    assert any(line.startswith("gpu_1m: ") and not line.endswith(": 0 rows") for line in done)
    assert set(store.tier_starts("gpu")) == {60, 300, 3600}
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("mean", "power_w"), ("max", "temp_c")),
                       t_old + 11 * NS, t_old + 3 * HOUR - 5 * NS, group_by=("host",),
                       bucket_s=1800)
    _assert_rows_equal(store.query(q), store.raw_query(q), "downsampled")  # type: ignore[arg-type]
    assert downsample(store, t_old, t_old + 3 * HOUR) == done  # idempotent
    store.close()
