"""The embedded store's tiers: rollups kept exact through any write order, retention, tiered reads."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from collector.errors import ConfigError
from collector.schema import point
from collector.store import AggregateQuery, tiers
from collector.store import sqlite_layout as lay
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
HOUR = 3600 * NS
T0 = 1_795_000_000 * NS // HOUR * HOUR
AGGS = (("sum", "energy_j"), ("max", "power_w"), ("min", "power_w"), ("count", "power_w"),
        ("mean", "power_w"))


def _reference(latest: dict[tuple[int, str], tuple[float, float]], start: int, end: int,
               bucket_s: int | None) -> dict[tuple[int | None, str], dict[str, float]]:
    groups: dict[tuple[int | None, str], list[tuple[float, float]]] = {}
    for (t, host), v in latest.items():
        if start <= t < end:
            b = None if bucket_s is None else t // (bucket_s * NS) * bucket_s * NS
            groups.setdefault((b, host), []).append(v)
    return {k: {"sum_energy_j": sum(e for e, _ in vs), "max_power_w": max(p for _, p in vs),
                "min_power_w": min(p for _, p in vs), "count_power_w": float(len(vs)),
                "mean_power_w": sum(p for _, p in vs) / len(vs)} for k, vs in groups.items()}


@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.lists(st.tuples(st.integers(0, 3 * 3600 - 1), st.sampled_from(["a", "b"]),
                          st.integers(0, 10**6), st.integers(0, 700_000)),
                min_size=1, max_size=120),
       st.integers(1, 6), st.integers(0, 3 * 3600), st.integers(1, 3 * 3600),
       st.sampled_from([None, 7, 60, 300, 3600]), st.randoms(use_true_random=False))
def test_any_write_order_and_window_matches_a_reference(
        tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, str, int, int]],
        batches: int, start_s: int, span_s: int, bucket_s: int | None,
        rnd: random.Random) -> None:
    """Batches out of time order and rewrites (a spool replay) keep the rollups exact."""
    store = SQLiteStore(tmp_path_factory.mktemp("tiers") / "w.db")
    pts = [point("gpu", {"host": h}, {"energy_j": e / 1000, "power_w": p / 997}, T0 + t * NS)
           for t, h, e, p in rows]
    rnd.shuffle(pts)
    cut = [*sorted(rnd.sample(range(1, len(pts)), min(batches, len(pts)) - 1)), len(pts)]
    latest: dict[tuple[int, str], tuple[float, float]] = {}
    prev = 0
    for c in cut:
        store.write(pts[prev:c])
        prev = c
    store.write(pts[: len(pts) // 2])  # replayed again: must not count twice
    for p in pts + pts[: len(pts) // 2]:  # the order the store saw them
        latest[(p.time_ns, p.tags[0][1])] = (float(p.field("energy_j")),  # type: ignore[arg-type]
                                             float(p.field("power_w")))  # type: ignore[arg-type]
    start = T0 + start_s * NS - 3 * NS
    end = start + span_s * NS
    q = AggregateQuery("gpu", AGGS, start, end, group_by=("host",), bucket_s=bucket_s)  # type: ignore[arg-type]
    got = {(r.time_ns, r.tags["host"]): r.values for r in store.query(q)}
    ref = _reference(latest, start, end, bucket_s)
    assert set(got) == set(ref)
    for key, want in ref.items():
        for name, value in want.items():
            assert got[key][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, name)
    store.close()


def test_long_windows_read_the_hour_tier(tmp_path: Path) -> None:
    q = AggregateQuery("gpu", AGGS, T0 + 5 * NS, T0 + 3 * HOUR - 61 * NS,  # type: ignore[arg-type]
                       bucket_s=3600)
    pieces = [(p.tier.width_s, p.start_ns - T0, p.end_ns - T0) for p in tiers.plan(q)]
    assert pieces == [(3600, HOUR, 2 * HOUR), (300, 300 * NS, HOUR), (60, 60 * NS, 300 * NS),
                      (0, 5 * NS, 60 * NS), (300, 2 * HOUR, 3 * HOUR - 300 * NS),
                      (60, 3 * HOUR - 300 * NS, 3 * HOUR - 120 * NS),
                      (0, 3 * HOUR - 120 * NS, 3 * HOUR - 61 * NS)]
    five_min = AggregateQuery("gpu", AGGS, T0, T0 + 2 * HOUR + 90 * NS,  # type: ignore[arg-type]
                              bucket_s=300)
    assert [(p.tier.width_s, p.start_ns - T0) for p in tiers.plan(five_min)] == [
        (300, 0), (60, 2 * HOUR), (0, 2 * HOUR + 60 * NS)]  # the 5 min tier; 1 h does not divide
    five_s = AggregateQuery("gpu", AGGS, T0, T0 + HOUR, bucket_s=5)  # type: ignore[arg-type]
    assert [p.tier.width_s for p in tiers.plan(five_s)] == [0]
    last = AggregateQuery("gpu", (("last", "power_w"),), T0, T0 + 3 * HOUR)
    assert [p.tier.width_s for p in tiers.plan(last)] == [0]


def test_retention_per_tier_keeps_the_store_bounded_and_old_totals_exact(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db", purge_every_s=0)
    lines = store.init(raw_retention="2d", rollup_1m_retention="5d", rollup_1h_retention="INF")
    assert "retention raw: 2 d" in lines and "retention 1h: kept" in lines
    days = 10
    total_by_day = [0.0] * days
    for k in range(days * 24 * 6):  # every 10 minutes for ten days
        t = T0 + k * 600 * NS
        e = float(k % 7 + 1)
        total_by_day[k // 144] += e
        store.write([point("gpu", {"host": "h"}, {"energy_j": e, "power_w": 300.0}, t)])
    newest = T0 + (days * 144 - 1) * 600 * NS
    assert store.count("gpu") == 2 * 144 + 1  # raw: the last two days (and the horizon row)
    assert store.count("gpu", "1m") == 5 * 144 + 1
    assert store.count("gpu", "5m") == 5 * 144 + 1
    assert store.count("gpu", "1h") == days * 24
    # The first day is only in the hour tier now, and still adds up exactly.
    for day in (0, 4, 9):
        rows = store.query(AggregateQuery("gpu", (("sum", "energy_j"),), T0 + day * 24 * HOUR,
                                          T0 + (day + 1) * 24 * HOUR))
        assert rows[0].values["sum_energy_j"] == total_by_day[day]
    assert store.time_range("gpu") == (T0, newest)
    with pytest.raises(ConfigError, match="--rollup-1m-retention: 'ninety days'"):
        store.init(rollup_1m_retention="ninety days")
    reopened = SQLiteStore(tmp_path / "w.db")
    # The 5-minute tier follows the 1-minute retention (one flag).
    assert reopened.retention_s == {"raw": 2 * 86400, "1m": 5 * 86400, "5m": 5 * 86400, "1h": 0}


def test_init_moves_a_first_layout_database_into_the_tiers(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute('CREATE TABLE "m:gpu" (time_ns INTEGER NOT NULL, series TEXT NOT NULL, '
                 '"t:host", "f:energy_j", "f:power_w")')
    conn.executemany('INSERT INTO "m:gpu" VALUES (?, ?, ?, ?, ?)',
                     [(T0 + k * 30 * NS, "s", f"h{k % 2}", 1.5, 300.0 + k) for k in range(240)])
    conn.commit()
    conn.close()
    store = SQLiteStore(db)
    assert store.count("gpu") == 0
    assert "moved 240 gpu rows from the first layout" in store.init()
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("max", "power_w")), T0, T0 + 2 * HOUR,
                       group_by=("host",))
    rows = {r.tags["host"]: r.values for r in store.query(q)}
    assert rows == {"h0": {"sum_energy_j": 180.0, "max_power_w": 538.0},
                    "h1": {"sum_energy_j": 180.0, "max_power_w": 539.0}}
    assert store.count("gpu", "1h") == 4


def _five_minute_rows(store: SQLiteStore) -> list[dict[str, object]]:
    cur = store._conn().execute('SELECT * FROM "5m:gpu" ORDER BY time_ns, sid')
    names = [d[0] for d in cur.description]
    return [{n: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v
             for n, v in zip(names, r, strict=True)} for r in cur.fetchall()]


def _fill(store: SQLiteStore, minutes: int) -> None:
    rng = random.Random(3)
    for k in range(minutes * 3):  # every 20 s, two hosts
        store.write([point("gpu", {"host": f"h{h}"}, {"energy_j": rng.uniform(1, 9),
                                                      "power_w": rng.uniform(50, 400)},
                           T0 + k * 20 * NS) for h in range(2)])


def test_a_layout_2_file_gets_its_five_minute_tier_on_open(tmp_path: Path) -> None:
    """A file written before the 5-minute tier: opening it builds the tier from the minutes,
    equal to what writing the same points builds."""
    store = SQLiteStore(tmp_path / "v3.db")
    _fill(store, 95)
    want = _five_minute_rows(store)
    conn = store._conn()
    conn.execute('DROP TABLE "5m:gpu"')
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'layout'")
    store.close()
    upgraded = SQLiteStore(tmp_path / "v3.db")
    assert len(want) == 2 * 19 and _five_minute_rows(upgraded) == want
    assert upgraded._conn().execute("SELECT value FROM meta WHERE key = 'layout'").fetchone() == (lay.LAYOUT_VERSION,)


def test_a_five_minute_tier_behind_the_minutes_is_read_only_as_far_as_it_goes(
        tmp_path: Path) -> None:
    """A layout-2 writer still running after the upgrade does not maintain the 5-minute tier:
    reads stay exact by taking the minutes where the 5-minute tier stops."""
    store = SQLiteStore(tmp_path / "mixed.db")
    _fill(store, 95)
    q = AggregateQuery("gpu", AGGS, T0, T0 + 2 * HOUR, group_by=("host",),  # type: ignore[arg-type]
                       bucket_s=300)
    raw = SQLiteStore(tmp_path / "mixed.db", tiered=False).query(q)
    store._conn().execute('DELETE FROM "5m:gpu" WHERE time_ns >= ?', (T0 + 3600 * NS,))
    got = store.query(q)
    assert [(r.time_ns, r.tags) for r in got] == [(r.time_ns, r.tags) for r in raw]
    for a, b in zip(got, raw, strict=True):
        assert a.values == {k: pytest.approx(v, rel=1e-12) for k, v in b.values.items()}
