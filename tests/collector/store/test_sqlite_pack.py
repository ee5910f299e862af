"""Packed raw minutes: the codec gives back what it was given, and every read of a packed store
equals the same read of the rows never packed (aggregates, last, tag values, time range)."""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.schema import point
from collector.store import AggregateQuery, packed_block
from collector.store import sqlite_pack as pk
from collector.store.base import Aggregate
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
MIN = 60 * NS
T0 = 1_795_000_000 * NS // 3600 // NS * 3600 * NS
AGGS: tuple[tuple[Aggregate, str], ...] = (
    ("sum", "energy_j"), ("max", "power_w"), ("min", "power_w"), ("count", "power_w"),
    ("mean", "power_w"), ("last", "power_w"), ("last", "state"))

_cell = st.one_of(st.none(), st.integers(-(2**53) + 1, 2**53 - 1),
                  st.floats(allow_nan=False), st.text(max_size=4))


@given(st.lists(st.integers(0, 60 * NS - 1), min_size=0, max_size=70, unique=True),
       st.integers(0, 2**62), st.data())
def test_a_block_decodes_to_the_rows_it_was_made_of(offsets: list[int], base: int,
                                                    data: st.DataObject) -> None:
    times = sorted(base + o for o in offsets)
    kinds = data.draw(st.lists(st.sampled_from(["int", "real", "any", "none"]), max_size=6))
    columns: list[list[object]] = []
    for kind in kinds:
        cell = {"int": st.one_of(st.none(), st.integers(-(2**53) + 1, 2**53 - 1)),
                "real": st.one_of(st.none(), st.floats()), "any": _cell, "none": st.none()}[kind]
        columns.append(data.draw(st.lists(cell, min_size=len(times), max_size=len(times))))
    got_times, got_columns = packed_block.decode(packed_block.encode(times, columns, base), base)
    assert got_times == times
    assert len(got_columns) == len(columns)
    for got, want in zip(got_columns, columns, strict=True):
        assert [type(v) for v in got] == [type(v) for v in want]
        assert all(g == w or (isinstance(g, float) and math.isnan(g) and math.isnan(w))  # type: ignore[arg-type]
                   for g, w in zip(got, want, strict=True))


def test_a_block_of_another_version_is_refused() -> None:
    import zlib

    block = bytearray(zlib.decompress(packed_block.encode([T0], [[1]], T0), -15))
    block[0] = 99
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    with pytest.raises(ValueError, match="packed block: version 99 is not 1"):
        packed_block.decode(deflate.compress(bytes(block)) + deflate.flush(), T0)


def _points(seconds: int, hosts: tuple[str, ...], rnd: random.Random,
            start: int = T0) -> list:  # type: ignore[type-arg]
    out = []
    for s in range(seconds):
        for h in hosts:
            if rnd.random() < 0.1:
                continue  # a missed sample
            fields: dict[str, object] = {"energy_j": round(rnd.uniform(0, 700), 3),
                                         "power_w": rnd.choice([round(rnd.uniform(50, 700), 3),
                                                                rnd.uniform(50, 700)])}
            if rnd.random() < 0.3:
                fields["state"] = rnd.choice(["train", "idle"])
            out.append(point("gpu", {"host": h, "model": f"m-{h}"}, fields,  # type: ignore[arg-type]
                             start + s * NS + rnd.randrange(NS)))
    return out


def _stores(tmp_path: Path, pts: list, batch: int) -> tuple[SQLiteStore, SQLiteStore]:  # type: ignore[type-arg]
    """The same points into a store that packs after every batch and one that never packs."""
    packed = SQLiteStore(tmp_path / "packed.db", purge_every_s=0)
    plain = SQLiteStore(tmp_path / "plain.db", purge_every_s=10**9)
    for i in range(0, len(pts), batch):
        packed.write(pts[i:i + batch])
        plain.write(pts[i:i + batch])
    packed.pack(budget_s=None)
    return packed, plain


def _same(a: list, b: list) -> None:  # type: ignore[type-arg]
    assert [(r.time_ns, r.tags) for r in a] == [(r.time_ns, r.tags) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.values.keys() == y.values.keys()
        for k in x.values:
            assert x.values[k] == pytest.approx(y.values[k], rel=1e-12, abs=1e-9), k


def test_every_read_of_a_packed_store_equals_the_rows_never_packed(tmp_path: Path) -> None:
    rnd = random.Random(7)
    pts = _points(40 * 60, ("a", "b", "c"), rnd)
    packed, plain = _stores(tmp_path, pts, 500)
    assert plain.count("gpu") == packed.count("gpu") == len(pts)
    conn = sqlite3.connect(tmp_path / "packed.db")
    in_rows = conn.execute('SELECT COUNT(*) FROM "raw:gpu"').fetchone()[0]
    blocks = conn.execute('SELECT COUNT(*), TOTAL(n) FROM "pk:gpu"').fetchone()
    assert blocks[0] >= 3 * 34 and blocks[1] == len(pts) - in_rows  # all but the newest minutes
    assert in_rows < len(pts) / 5
    assert packed.time_range("gpu") == plain.time_range("gpu") == (
        min(p.time_ns for p in pts), max(p.time_ns for p in pts))
    for _ in range(40):
        start = T0 + rnd.randrange(-60, 40 * 60) * NS + rnd.randrange(NS)
        end = start + rnd.choice([1, 30, 61, 600, 3600]) * NS + rnd.randrange(NS)
        bucket = rnd.choice([None, 7, 60, 300])
        where: dict[str, str | tuple[str, ...]] = rnd.choice(
            [{}, {"host": "b"}, {"host": ("a", "c")}])
        for group in ((), ("host",), ("model",)):
            q = AggregateQuery("gpu", AGGS, start, end, group_by=group, bucket_s=bucket,  # type: ignore[arg-type]
                               where=where)
            _same(packed.query(q), plain.query(q))
        assert packed.tag_values("gpu", "host", start, end) == \
            plain.tag_values("gpu", "host", start, end)


def test_a_late_write_into_a_packed_minute_is_counted_once(tmp_path: Path) -> None:
    rnd = random.Random(3)
    pts = _points(20 * 60, ("a", "b"), rnd)
    packed, plain = _stores(tmp_path, pts, 300)
    late = point("gpu", {"host": "a", "model": "m-a"}, {"energy_j": 5.0}, T0 + 30 * NS + 1)
    replay = [*pts[100:900], late]  # a replay, and a new point in a packed minute
    for store in (packed, plain):
        store.write(replay)
        store.pack(budget_s=None)
    q = AggregateQuery("gpu", AGGS, T0, T0 + 3600 * NS, group_by=("host",), bucket_s=60)
    _same(packed.query(q), plain.query(q))
    parts: tuple[tuple[Aggregate, str], ...] = (("sum", "energy_j"), ("count", "energy_j"))
    minutes = AggregateQuery("gpu", parts, T0,
                             T0 + 3600 * NS, bucket_s=60)
    raw_only = SQLiteStore(tmp_path / "packed.db", tiered=False)
    _same(packed.query(minutes), raw_only.query(minutes))  # the 1m rollups: rebuilt exactly


def _nvml_points(seconds: int, gpus: int, rnd: random.Random,
                 start: int = T0) -> list:  # type: ignore[type-arg]
    """What an agent reads each second: power in mW with a 2 % jitter, the energy counter's mJ
    since the last read, temperature and clocks that move in whole steps."""
    out = []
    for g in range(gpus):
        temp = 60.0
        for s in range(seconds):
            power = round(450 * (1 + 0.02 * rnd.uniform(-1, 1)), 3)
            temp = min(85.0, max(40.0, temp + rnd.choice([-1.0, 0.0, 0.0, 0.0, 1.0])))
            out.append(point("gpu", {"host": "n1", "gpu": str(g)},
                             {"power_w": power, "energy_j": power, "temp_c": temp,
                              "util_pct": float(rnd.randint(95, 100)), "sm_clock_mhz": 1980.0},
                             start + s * NS + g * 1000))
    return sorted(out, key=lambda p: p.time_ns)


def test_retention_drops_old_blocks_and_a_packed_store_stays_small(tmp_path: Path) -> None:
    # Retention is measured back from the wall clock: the data ends ten minutes ago.
    start = time.time_ns() // MIN * MIN - 40 * MIN
    pts = _nvml_points(30 * 60, 4, random.Random(5), start)
    packed, plain = _stores(tmp_path, pts, 1000)
    size = {}
    for name, store in (("packed", packed), ("plain", plain)):
        conn = store._conn()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size[name] = pages - conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert size["packed"] < size["plain"] * 0.5, size  # both with ~10 pages of empty tables
    blob, rows = sqlite3.connect(tmp_path / "packed.db").execute(
        'SELECT SUM(LENGTH(data)), SUM(n) FROM "pk:gpu"').fetchone()
    assert blob / rows < 12, blob / rows  # bytes a row; a row of raw:gpu takes about 50
    packed.init(raw_retention="20m")  # purges: the horizon is 20-21 minutes after the start
    raw_only = SQLiteStore(tmp_path / "packed.db", tiered=False)
    count: tuple[tuple[Aggregate, str], ...] = (("count", "power_w"),)
    assert raw_only.query(AggregateQuery("gpu", count, start, start + 20 * MIN)) == []
    kept = AggregateQuery("gpu", count, start + 21 * MIN, start + 31 * MIN)
    assert raw_only.query(kept) == plain.query(kept)
    assert raw_only.query(kept)[0].values["count_power_w"] == 4 * 9 * 60
    conn = sqlite3.connect(tmp_path / "packed.db")
    oldest = conn.execute('SELECT MIN(key) FROM "pk:gpu"').fetchone()[0]
    assert pk.unkey(oldest)[0] == start + 20 * MIN
    # The minutes stay (1m retention): the first point is the first minute's.
    assert packed.time_range("gpu")[0] == start  # type: ignore[index]


def test_a_layout_3_file_gets_its_packed_tables_on_open(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "v3.db", purge_every_s=10**9)
    pts = _nvml_points(12 * 60, 2, random.Random(1))
    store.write(pts)
    conn = store._conn()
    conn.execute('DROP TABLE "pk:gpu"')
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'layout'")
    store.close()
    upgraded = SQLiteStore(tmp_path / "v3.db")
    assert upgraded.pack(budget_s=None) == 2 * 6 * 60  # the minutes before (newest - 5 min), 11:59 - 5:00
    assert upgraded.count("gpu") == len(pts)
    assert upgraded._conn().execute(
        "SELECT value FROM meta WHERE key = 'layout'").fetchone() == ("4",)


def test_a_read_while_another_connection_packs_counts_every_row_once(tmp_path: Path) -> None:
    """Packing moves rows from raw:m into blocks in its own transactions; a reader in another
    connection must see each row in one place, never in both or in neither."""
    pts = _nvml_points(30 * 60, 4, random.Random(2))
    writer = SQLiteStore(tmp_path / "w.db", purge_every_s=10**9)
    writer.write(pts)
    reader = SQLiteStore(tmp_path / "w.db", tiered=False)  # every read decodes and reads rows
    q = AggregateQuery("gpu", (("count", "power_w"), ("sum", "energy_j")), T0, T0 + 3600 * NS,
                       bucket_s=300)
    want = reader.query(q)
    done, reading = threading.Event(), threading.Event()
    seen: list[list[object]] = []

    def read() -> None:
        while not done.is_set():
            reading.set()  # a read begins: the packer commits its next minute during it
            seen.append(reader.query(q))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        conn = writer._conn()
        while True:
            assert reading.wait(30), "the reader did not start a read"
            reading.clear()
            if not pk.pack(conn, "gpu", max_minutes=1, chunk_minutes=1):
                break
    finally:
        done.set()
        thread.join()
    assert sqlite3.connect(tmp_path / "w.db").execute(
        'SELECT COUNT(*) FROM "pk:gpu"').fetchone()[0] == 4 * 24  # all but the newest 5 min
    assert len(seen) >= 24  # a read begun before each of the 24 minutes' commits
    for got in seen:
        _same(got, want)  # type: ignore[arg-type]


def test_a_damaged_block_is_logged_by_name_and_the_rollups_still_answer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pts = _nvml_points(20 * 60, 2, random.Random(4))
    packed, plain = _stores(tmp_path, pts, 600)
    conn = packed._conn()
    (k,) = conn.execute('SELECT key FROM "pk:gpu" ORDER BY key LIMIT 1 OFFSET 6').fetchone()
    conn.execute('UPDATE "pk:gpu" SET data = ? WHERE key = ?', (b"\x00garbage", k))
    pk.forget_decoded()
    minute, sid = pk.unkey(k)
    whole = AggregateQuery("gpu", (("sum", "energy_j"), ("max", "power_w")), T0, T0 + 3600 * NS,
                           group_by=("gpu",))
    _same(packed.query(whole), plain.query(whole))  # whole minutes: from the rollups
    count: tuple[tuple[Aggregate, str], ...] = (("count", "power_w"),)
    raw_only = SQLiteStore(tmp_path / "packed.db", tiered=False)
    edge = AggregateQuery("gpu", count, minute + NS // 2, minute + 59 * NS)
    with caplog.at_level("ERROR", logger="wattlens.store.sqlite"):
        got = raw_only.query(edge)[0].values["count_power_w"]
    want = plain.query(edge)[0].values["count_power_w"]
    assert want == 2 * 58 and got == 58  # the other GPU's rows: the damaged block's are gone
    assert f"packed block of 'gpu', series {sid}, minute 2026-11-18T" in caplog.text
    assert "integrity_check" in caplog.text


def test_a_full_disk_while_packing_loses_nothing_and_packing_resumes(tmp_path: Path) -> None:
    """SQLite's own "database or disk is full" (its page limit reached) in the middle of a pack:
    the pack's transaction rolls back, every row is still read once, and the next pass packs."""
    pts = _nvml_points(20 * 60, 4, random.Random(6))
    store = SQLiteStore(tmp_path / "w.db", purge_every_s=10**9)
    store.write(pts)
    q = AggregateQuery("gpu", (("count", "power_w"), ("sum", "energy_j")), T0, T0 + 3600 * NS,
                       group_by=("gpu",), bucket_s=60)
    raw_only = SQLiteStore(tmp_path / "w.db", tiered=False)
    want = raw_only.query(q)
    conn = store._conn()
    conn.execute("VACUUM")  # no free page left inside the file
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # and no page more: the file is "full"
    with pytest.raises(sqlite3.OperationalError, match="full"):
        pk.pack(conn, "gpu", chunk_minutes=10)  # ten minutes of blocks before any row goes
    assert store.count("gpu") == len(pts)
    _same(raw_only.query(q), want)
    conn.execute(f"PRAGMA max_page_count = {10 * pages}")  # space again
    assert store.pack(budget_s=None) == 4 * 14 * 60
    assert store.count("gpu") == len(pts)
    _same(raw_only.query(q), want)
