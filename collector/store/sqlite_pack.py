"""Packed raw minutes in the embedded store: ``pk:m`` holds one block per series and minute.

Raw rows older than a few minutes are packed (:func:`pack`, run by the writer where it purges),
each series-minute into one :mod:`collector.store.packed_block`. A series-minute's rows are all in
``raw:m`` or all in its block, never split: a write into a packed minute first turns the block
back into rows (:func:`unpack`). Reads decode only the blocks they need (:func:`load`,
:func:`last_rows`, :func:`sids`, :func:`bounds`) and see them through a temp table with
``raw:m``'s columns (:func:`stage`), so the SQL that reads rows reads them too.

A block's key is one integer, ``minute << 32 | sid`` (the minute since the epoch), the table's
rowid: no second index, and a time range is a rowid range.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import struct
import time
import zlib
from datetime import UTC, datetime

from collector.store import packed_block
from collector.store import sqlite_layout as lay

MINUTE_NS = 60 * 1_000_000_000
PACK_AFTER_NS = 5 * MINUTE_NS  # the newest minutes stay rows: late points and live edges
MIN_ROWS = 3  # a series-minute with fewer rows stays rows: its block would not be smaller
SID_BITS = 32
log = logging.getLogger("wattlens.store.sqlite")
Rows = list[tuple[object, ...]]  # (time_ns, sid, field columns in raw:m's order)


def packed_table(measurement: str) -> str:
    return lay.table("pk", measurement)


def staged_table(measurement: str) -> str:
    return "temp." + lay.qident(f"unpacked:{measurement}")


def key(minute_ns: int, sid: int) -> int:
    if not 0 <= sid < 1 << SID_BITS:
        raise ValueError(f"packed block: series id {sid} is out of range")
    return (minute_ns // MINUTE_NS) << SID_BITS | sid


def unkey(k: int) -> tuple[int, int]:
    """(minute start in ns, series id) of a block's key."""
    return (k >> SID_BITS) * MINUTE_NS, k & ((1 << SID_BITS) - 1)


def _span(start_ns: int, end_ns: int) -> tuple[int, int]:
    """Keys of the blocks whose minute overlaps [start_ns, end_ns): lo <= key < hi."""
    return key(start_ns // MINUTE_NS * MINUTE_NS, 0), key(-(-end_ns // MINUTE_NS) * MINUTE_NS, 0)


def _raw(measurement: str) -> str:
    return lay.table("raw", measurement)


def _width(conn: sqlite3.Connection, measurement: str) -> int:
    """Field columns of raw:m (all columns but time_ns and sid)."""
    return len(conn.execute(f"PRAGMA table_info({_raw(measurement)})").fetchall()) - 2


@functools.lru_cache(maxsize=2048)
def _rows_of(measurement: str, k: int, block: bytes, width: int) -> tuple[tuple[object, ...], ...]:
    """A block's rows as raw:m holds them. Remembered (the block's bytes are part of the key, so
    a changed block is decoded again): the dashboard's queries of one page share a window's
    edges, and a refresh reads them again. 2,048 blocks: a window's two edges on 1,000 GPUs.

    A block that cannot be decoded (a damaged file) is logged once, naming it, and read as
    empty: its minute's sums, counts and extremes are still in the rollups, which every window
    reads for its whole minutes; only raw reads of that series-minute lose it."""
    minute, sid = unkey(k)
    try:
        times, columns = packed_block.decode(block, minute)
    except (zlib.error, ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        log.error("packed block of %r, series %d, minute %s cannot be decoded (%s: %s); read as "
                  "empty. The database file is damaged: check it with sqlite3 FILE 'PRAGMA "
                  "integrity_check'", measurement, sid,
                  datetime.fromtimestamp(minute / 1e9, UTC).isoformat(timespec="minutes"),
                  type(exc).__name__, exc)
        return ()
    pad = [[None] * len(times)] * (width - len(columns))
    return tuple(zip(times, [sid] * len(times), *columns, *pad, strict=True))


def forget_decoded() -> None:
    """Drop the remembered decoded blocks (a benchmark's cold read)."""
    _rows_of.cache_clear()


def _entry(k: int, rows: Rows) -> tuple[int, int, int, int, bytes]:
    """A pk:m row for a series-minute's ``rows``: key, n, lo, hi, block."""
    rows.sort(key=lambda r: r[0])  # type: ignore[arg-type, return-value]
    minute = unkey(k)[0]
    cols = list(zip(*rows, strict=True))
    block = packed_block.encode(cols[0], [list(c) for c in cols[2:]], minute)  # type: ignore[arg-type]
    return k, len(rows), rows[0][0] - minute, rows[-1][0] - minute, block  # type: ignore[operator]


def pack(conn: sqlite3.Connection, measurement: str, *, max_minutes: int = 480,
         chunk_minutes: int = 1, until: float | None = None) -> int:
    """Pack raw rows older than the newest minus :data:`PACK_AFTER_NS`, at most ``max_minutes``
    of them, ``chunk_minutes`` a transaction, and no transaction begun after ``until``
    (``time.monotonic()``). Rows packed. A watermark in ``meta`` keeps where it got to, so
    series-minutes left as rows (too few rows) are not looked at again."""
    raw = _raw(measurement)
    mark_key = f"packed_to:{measurement}"
    done = 0
    for _ in range(max(1, max_minutes // chunk_minutes)):
        if until is not None and time.monotonic() > until:
            return done
        newest, first = conn.execute(f"SELECT (SELECT MAX(time_ns) FROM {raw}), "
                                     f"(SELECT MIN(time_ns) FROM {raw})").fetchone()
        if newest is None:
            return done
        horizon = (newest - PACK_AFTER_NS) // MINUTE_NS * MINUTE_NS
        mark = conn.execute("SELECT value FROM meta WHERE key = ?", (mark_key,)).fetchone()
        start = max(int(mark[0]) if mark else 0, first // MINUTE_NS * MINUTE_NS)
        if start >= horizon:
            return done
        upto = min(horizon, start + chunk_minutes * MINUTE_NS)
        with lay.immediate(conn):
            done += _pack_span(conn, measurement, start, upto)
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (mark_key, str(upto)))
    return done


def purge(conn: sqlite3.Connection, measurement: str, horizon_ns: int) -> int:
    """Drop the blocks whose whole minute is before ``horizon_ns`` (raw retention); blocks dropped."""
    kept_from = ((horizon_ns - MINUTE_NS) // MINUTE_NS + 1) * MINUTE_NS  # its minute ends after
    with lay.immediate(conn):
        return int(conn.execute(f"DELETE FROM {packed_table(measurement)} WHERE rowid < ?",
                                (key(kept_from, 0),)).rowcount)


def _pack_span(conn: sqlite3.Connection, measurement: str, start: int, end: int) -> int:
    groups: dict[int, Rows] = {}
    for r in conn.execute(f"SELECT * FROM {_raw(measurement)} WHERE time_ns >= ? AND time_ns < ?",
                          (start, end)):
        groups.setdefault(key(r[0] // MINUTE_NS * MINUTE_NS, r[1]), []).append(r)
    big = {k: rows for k, rows in groups.items() if len(rows) >= MIN_ROWS}
    if not big:
        return 0
    pk, width = packed_table(measurement), _width(conn, measurement)
    for k, data in conn.execute(  # blocks already there (a rewrite, another packer): merged
            f"SELECT rowid, data FROM {pk} WHERE rowid >= ? AND rowid < ?",
            _span(start, end)).fetchall():
        rows = big.get(k)
        if rows is not None:
            have = {r[0] for r in rows}
            rows += [r for r in _rows_of(measurement, k, data, width) if r[0] not in have]
    conn.executemany(f"INSERT OR REPLACE INTO {pk} (rowid, n, lo, hi, data) VALUES (?, ?, ?, ?, ?)",
                     [_entry(k, rows) for k, rows in big.items()])
    conn.executemany(f"DELETE FROM {_raw(measurement)} WHERE time_ns = ? AND sid = ?",
                     [(r[0], r[1]) for rows in big.values() for r in rows])
    return sum(len(rows) for rows in big.values())


def unpack(conn: sqlite3.Connection, measurement: str, keys: set[tuple[int, int]]) -> int:
    """Move the blocks holding ``keys`` ((time_ns, sid)) back into raw rows, in the caller's
    transaction: a write into a packed minute then finds every row of it where it writes."""
    pk = packed_table(measurement)
    newest = conn.execute(f"SELECT MAX(rowid) FROM {pk}").fetchone()[0]
    if newest is None:
        return 0
    last_minute = unkey(newest)[0]
    wanted = {key(t // MINUTE_NS * MINUTE_NS, sid) for t, sid in keys
              if t < last_minute + MINUTE_NS}
    if not wanted:
        return 0
    width = _width(conn, measurement)
    rows: Rows = []
    for k in sorted(wanted):
        got = conn.execute(f"SELECT data FROM {pk} WHERE rowid = ?", (k,)).fetchone()
        if got is not None:
            rows += _rows_of(measurement, k, got[0], width)
            conn.execute(f"DELETE FROM {pk} WHERE rowid = ?", (k,))
    if rows:
        marks = ",".join("?" * (width + 2))
        conn.executemany(f"INSERT OR IGNORE INTO {_raw(measurement)} VALUES ({marks})", rows)
    return len(rows)


def load(conn: sqlite3.Connection, measurement: str, start_ns: int, end_ns: int,
         keys: set[int] | None = None) -> Rows:
    """The packed rows in [start_ns, end_ns), as raw:m holds rows; only the blocks whose
    :func:`key` is in ``keys`` when given. A block whose rows all lie outside is not decoded."""
    width = _width(conn, measurement)
    out: Rows = []
    for k, lo, hi, data in conn.execute(
            f"SELECT rowid, lo, hi, data FROM {packed_table(measurement)} "
            "WHERE rowid >= ? AND rowid < ?", _span(start_ns, end_ns)):
        if keys is not None and k not in keys:
            continue
        minute = unkey(k)[0]
        if minute + hi < start_ns or minute + lo >= end_ns:
            continue
        rows = _rows_of(measurement, k, data, width)
        if minute + lo < start_ns or minute + hi >= end_ns:
            out += [r for r in rows if start_ns <= r[0] < end_ns]  # type: ignore[operator]
        else:
            out += rows
    return out


def stage(conn: sqlite3.Connection, measurement: str, rows: Rows) -> str | None:
    """Put ``rows`` in this connection's temp table for ``m`` (emptied first), so the same SQL
    that reads raw:m reads them; the table's name, or None when there are no rows."""
    t = staged_table(measurement)
    conn.execute(f"DROP TABLE IF EXISTS {t}")
    if not rows:
        return None
    conn.execute(f"CREATE TEMP TABLE {lay.qident(f'unpacked:{measurement}')} AS "
                 f"SELECT * FROM main.{_raw(measurement)} WHERE 0")
    marks = ",".join("?" * len(rows[0]))
    conn.executemany(f"INSERT INTO {t} VALUES ({marks})", rows)
    return t


def has_blocks(conn: sqlite3.Connection, measurement: str, start_ns: int, end_ns: int) -> bool:
    return conn.execute(f"SELECT 1 FROM {packed_table(measurement)} "
                        "WHERE rowid >= ? AND rowid < ? LIMIT 1",
                        _span(start_ns, end_ns)).fetchone() is not None


def sids(conn: sqlite3.Connection, measurement: str, start_ns: int, end_ns: int) -> set[int]:
    """Series with a packed row in [start_ns, end_ns); only the blocks at the edges are decoded."""
    inner_lo = -(-start_ns // MINUTE_NS) * MINUTE_NS
    inner_hi = end_ns // MINUTE_NS * MINUTE_NS
    found: set[int] = set()
    if inner_lo < inner_hi:
        found = {unkey(int(r[0]))[1] for r in conn.execute(
            f"SELECT rowid FROM {packed_table(measurement)} WHERE rowid >= ? AND rowid < ?",
            (key(inner_lo, 0), key(inner_hi, 0)))}
    for lo, hi in ((start_ns, min(inner_lo, end_ns)), (max(inner_hi, start_ns), end_ns)):
        if lo < hi:
            found.update(int(r[1]) for r in load(conn, measurement, lo, hi))  # type: ignore[call-overload]
    return found


def bounds(conn: sqlite3.Connection, measurement: str) -> tuple[int, int] | None:
    """(first, last) packed row time, from the first and the last minute's blocks' ``lo``/``hi``."""
    pk = packed_table(measurement)
    first_key, last_key = conn.execute(f"SELECT (SELECT MIN(rowid) FROM {pk}), "
                                       f"(SELECT MAX(rowid) FROM {pk})").fetchone()
    if first_key is None:
        return None
    first_minute, last_minute = unkey(first_key)[0], unkey(last_key)[0]
    (lo,) = conn.execute(f"SELECT MIN(lo) FROM {pk} WHERE rowid >= ? AND rowid < ?",
                         (key(first_minute, 0), key(first_minute + MINUTE_NS, 0))).fetchone()
    (hi,) = conn.execute(f"SELECT MAX(hi) FROM {pk} WHERE rowid >= ?",
                         (key(last_minute, 0),)).fetchone()
    return first_minute + lo, last_minute + hi


def rows_count(conn: sqlite3.Connection, measurement: str) -> int:
    return int(conn.execute(f"SELECT TOTAL(n) FROM {packed_table(measurement)}").fetchone()[0])


def last_rows(conn: sqlite3.Connection, measurement: str, field_name: str, start_ns: int,
              end_ns: int, bucket_s: int | None) -> Rows:
    """The packed rows a LAST(field) over [start_ns, end_ns) needs, without decoding the window.

    Per series (and bucket), the last value lies in the window's partial edge minutes or in the
    newest whole minute where the 1-minute tier counts the field; only those blocks are decoded.
    A bucket that is not whole minutes decodes every block in the window.
    """
    if not has_blocks(conn, measurement, start_ns, end_ns):
        return []
    if bucket_s is not None and bucket_s % 60:
        return load(conn, measurement, start_ns, end_ns)
    lo = -(-start_ns // MINUTE_NS) * MINUTE_NS
    hi = max(lo, end_ns // MINUTE_NS * MINUTE_NS)
    per = f", time_ns / {bucket_s * 1_000_000_000}" if bucket_s else ""
    n = lay.part_col("n", field_name)
    keys = {key(int(t), int(s)) for s, t in conn.execute(
        f"SELECT sid, MAX(time_ns) FROM {lay.table('1m', measurement)} "
        f"WHERE time_ns >= ? AND time_ns < ? AND {n} > 0 GROUP BY sid{per}", (lo, hi))}
    rows = load(conn, measurement, lo, hi, keys) if keys else []
    for a, b in ((start_ns, min(lo, end_ns)), (max(hi, start_ns), end_ns)):
        if a < b:
            rows += load(conn, measurement, a, b)
    return rows
