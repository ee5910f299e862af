"""The embedded store's on-disk layout: tables, column names, settings, and retention per tier.

Per measurement ``m`` (names quoted, so any text is safe):

- ``series:m`` — one row per series: an integer ``id``, the series ``key``
  and one ``t:TAG`` column per tag. Data rows carry only the integer id.
- ``raw:m`` — one row per series per time, ``PRIMARY KEY (time_ns, sid)``
  ``WITHOUT ROWID``: the key is the table, so there is no second index, and
  points written in time order append at the end of the B-tree. One ``f:FIELD``
  column per field. A number with at most three decimals (NVML reports mW and
  mJ; gauges are rounded) is stored as the INTEGER value x 1000, which takes
  1–4 bytes instead of 8; any other number as REAL. Both read back exactly:
  :func:`value_expr` and :func:`decode` undo the scaling.
- ``1m:m``, ``5m:m`` and ``1h:m`` — the same key, with ``s:F``, ``n:F``, ``lo:F``, ``hi:F``
  (sum, count, min, max) per field, maintained in the write's transaction. The 5-minute
  tier (layout 3) is what 5-minute buckets over a day read: a fifth of the 1m rows.

- ``pk:m`` — the raw rows of minutes older than a few, one compressed block per
  series and minute (layout 4, :mod:`collector.store.sqlite_pack`). A series-minute's
  rows are all in ``raw:m`` or all in its block, never split.

``meta`` holds the layout version, the retention of each tier (seconds, 0 = kept) and,
per measurement, how far packing got (``packed_to:m``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from collector.errors import ConfigError

LAYOUT_VERSION = "4"
ROLLUP_WIDTHS_S = (60, 300, 3600)
TIER_TABLE = {0: "raw", 60: "1m", 300: "5m", 3600: "1h"}
ROLLUP_TIERS = tuple(TIER_TABLE[w] for w in ROLLUP_WIDTHS_S)
# Each rollup tier is rebuilt from the next finer one when a rewrite touches it.
ROLLUP_SOURCE = {"1m": "raw", "5m": "1m", "1h": "1m"}
DEFAULT_RETENTION_S = {"raw": 7 * 86400, "1m": 90 * 86400, "5m": 90 * 86400, "1h": 0}
PARTS = ("s", "n", "lo", "hi")


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction (BEGIN IMMEDIATE): committed at the end, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        rollback(conn)
        raise
    conn.execute("COMMIT")


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if there is one: SQLite ends it by itself on some errors
    (a full disk), and a ROLLBACK then raises "no transaction is active" over the real error."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def qident(name: str) -> str:
    """Quote an SQL identifier: any string is safe inside double quotes with quotes doubled."""
    if "\x00" in name:
        raise ValueError(f"identifier: NUL is not allowed, got {name!r}")
    return '"' + name.replace('"', '""') + '"'


def table(tier: str, measurement: str) -> str:
    return qident(f"{tier}:{measurement}")


def series_table(measurement: str) -> str:
    return qident(f"series:{measurement}")


def tag_col(tag: str) -> str:
    return qident(f"t:{tag}")


def field_col(field_name: str) -> str:
    return qident(f"f:{field_name}")


def part_col(part: str, field_name: str) -> str:
    return qident(f"{part}:{field_name}")


def create_meta(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) "
                 "WITHOUT ROWID")
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('layout', ?)", (LAYOUT_VERSION,))
    for tier, seconds in DEFAULT_RETENTION_S.items():
        conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (f"retention_{tier}_s",
                                                                   str(seconds)))


def read_retention(conn: sqlite3.Connection) -> dict[str, int]:
    rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    return {tier: int(rows.get(f"retention_{tier}_s", default))
            for tier, default in DEFAULT_RETENTION_S.items()}


def write_retention(conn: sqlite3.Connection, retention_s: dict[str, int]) -> None:
    for tier, seconds in retention_s.items():
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"retention_{tier}_s",
                                                                   str(int(seconds))))


def old_layout_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables of the first layout (``m:NAME`` with a text series key per row), if any."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'm:%'")
    return [r[0] for r in rows.fetchall()]


def create_measurement(conn: sqlite3.Connection, measurement: str) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {series_table(measurement)} "
                 "(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)")
    for tier in ("raw", *ROLLUP_TIERS):
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table(tier, measurement)} "
                     "(time_ns INTEGER NOT NULL, sid INTEGER NOT NULL, "
                     "PRIMARY KEY (time_ns, sid)) WITHOUT ROWID")
    create_packed(conn, measurement)


def create_packed(conn: sqlite3.Connection, measurement: str) -> None:
    """``pk:m``: one block per series and minute, keyed ``minute << 32 | sid`` as its rowid (no
    second index; WITHOUT ROWID would keep whole blocks in interior pages too); ``n`` rows,
    the first and last of them ``lo`` and ``hi`` ns after the minute's start."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table('pk', measurement)} "
                 "(key INTEGER PRIMARY KEY, n INTEGER NOT NULL, lo INTEGER NOT NULL, "
                 "hi INTEGER NOT NULL, data BLOB NOT NULL)")


def columns(conn: sqlite3.Connection, quoted_table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({quoted_table})").fetchall()}


def add_tag(conn: sqlite3.Connection, measurement: str, tag: str) -> None:
    conn.execute(f"ALTER TABLE {series_table(measurement)} ADD COLUMN {tag_col(tag)} TEXT")


def add_field(conn: sqlite3.Connection, measurement: str, field_name: str) -> None:
    conn.execute(f"ALTER TABLE {table('raw', measurement)} ADD COLUMN {field_col(field_name)}")
    for tier in ROLLUP_TIERS:
        for part in PARTS:
            kind = "INTEGER" if part == "n" else "REAL"
            conn.execute(f"ALTER TABLE {table(tier, measurement)} "
                         f"ADD COLUMN {part_col(part, field_name)} {kind}")


def upgrade(conn: sqlite3.Connection) -> list[str]:
    """Bring a layout-2 or -3 file to layout 4 in the caller's transaction: each measurement gets
    its 5-minute tier, built from its 1-minute rows (exact: the parts compose), and an empty
    packed table. Measurements that got a 5-minute tier."""
    have = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if have.get("layout") == LAYOUT_VERSION:
        return []
    done = []
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'raw:%'")
    for (name,) in rows.fetchall():
        m = name[4:]
        create_packed(conn, m)
        five = table("5m", m)
        if columns(conn, five):
            continue
        conn.execute(f"CREATE TABLE {five} (time_ns INTEGER NOT NULL, sid INTEGER NOT NULL, "
                     "PRIMARY KEY (time_ns, sid)) WITHOUT ROWID")
        fields = [c[2:] for c in columns(conn, table("1m", m)) if c.startswith("s:")]
        for f in fields:
            for part in PARTS:
                kind = "INTEGER" if part == "n" else "REAL"
                conn.execute(f"ALTER TABLE {five} ADD COLUMN {part_col(part, f)} {kind}")
        if fields:
            cols = [part_col(p, f) for f in fields for p in PARTS]
            select = [f"{'SUM' if p in ('s', 'n') else 'MIN' if p == 'lo' else 'MAX'}"
                      f"({part_col(p, f)})" for f in fields for p in PARTS]
            width = 300 * 1_000_000_000
            conn.execute(f"INSERT INTO {five} (time_ns, sid, {','.join(cols)}) "
                         f"SELECT (time_ns / {width}) * {width}, sid, {','.join(select)} "
                         f"FROM {table('1m', m)} GROUP BY 1, 2")
        done.append(m)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", (LAYOUT_VERSION,))
    return done


SCALE = 1000
_EXACT = 2 ** 53


def encode(v: object) -> object:
    """A field value as stored in ``raw:m``: milli-units as an INTEGER when that is exact."""
    if isinstance(v, bool):
        return SCALE if v else 0
    if isinstance(v, (int, float)):
        x = round(v * SCALE)
        if -_EXACT < x < _EXACT and x / SCALE == v:
            return x
        return float(v)
    return v


def decode(v: object) -> object:
    """A stored raw value back to what was written (text stays text)."""
    if isinstance(v, int):
        return v / SCALE
    return v


def value_expr(col: str) -> str:
    """SQL for a raw column's value as written (the same division as :func:`decode`)."""
    return f"(CASE WHEN typeof({col}) = 'integer' THEN {col} / {SCALE}.0 ELSE {col} END)"


_DURATION = re.compile(r"(\d+)(s|m|h|d|w)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def retention_seconds(flag: str, text: str) -> int:
    """Seconds in ``7d``, ``12w``, ``36h`` or ``1h30m``; ``INF`` (kept forever) is 0."""
    value = str(text).strip()
    if value.upper() in ("INF", "0"):
        return 0
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ConfigError(f"{flag}: {text!r} is not a duration; use e.g. 7d, 12w, 36h or INF")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def purge(conn: sqlite3.Connection, measurements: list[str], retention_s: dict[str, int],
          now_ns: int, *, chunk_s: int = 3600, max_chunks: int = 48) -> int:
    """Delete rows older than each tier's retention, in small transactions; rows deleted.

    Each transaction deletes at most ``chunk_s`` of one table, and one call at
    most ``max_chunks`` of them per table, so a writer never holds the lock for
    long; the next call continues. Freed pages are reused by later writes, so the file
    stops growing once retention is reached.
    """
    deleted = 0
    for tier, keep_s in retention_s.items():
        if keep_s <= 0:
            continue
        for m in measurements:
            horizon = now_ns - keep_s * 1_000_000_000
            deleted += _purge_table(conn, table(tier, m), horizon, chunk_s, max_chunks)
    return deleted


def _purge_table(conn: sqlite3.Connection, t: str, horizon: int, chunk_s: int,
                 max_chunks: int) -> int:
    deleted = 0
    for _ in range(max_chunks):
        first = conn.execute(f"SELECT MIN(time_ns) FROM {t}").fetchone()[0]
        if first is None or first >= horizon:
            break
        upto = min(horizon, first + chunk_s * 1_000_000_000)
        with immediate(conn):
            deleted += conn.execute(f"DELETE FROM {t} WHERE time_ns < ?", (upto,)).rowcount
    return deleted
