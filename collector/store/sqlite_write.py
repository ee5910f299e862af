"""Writing into the embedded layout: raw rows plus the 1m, 5m and 1h rollups, in the caller's transaction.

Points newer than anything stored (the agent's normal case) are added to the
rollups incrementally: sum, count, min and max of the batch per series and
bucket, upserted onto what the bucket holds. A point that rewrites a stored
row (a spool replay, a later write with more fields) cannot be added again
without counting twice, so the buckets it touches are recomputed from the
raw rows (and the hours from the minutes) instead.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence

from collector.schema import FieldValue
from collector.store import sqlite_layout as lay
from collector.store import sqlite_pack

NS = 1_000_000_000
Parts = list[float | None]  # [sum, count, min, max]; text counts, with no sum or extremes


def write_measurement(conn: sqlite3.Connection, measurement: str,
                      rows: dict[tuple[int, int], dict[str, FieldValue]],
                      all_fields: Sequence[str]) -> None:
    """Upsert ``rows`` ((time_ns, sid) -> fields) into ``raw:m`` and keep the rollups exact."""
    raw = lay.table("raw", measurement)
    times = [t for t, _ in rows]
    # A write into a packed minute (a late point, a spool replay) first turns the minute's
    # block back into rows, so the rewrite below finds every row of it.
    sqlite_pack.unpack(conn, measurement, set(rows))
    newest = conn.execute(f"SELECT MAX(time_ns) FROM {raw}").fetchone()[0]
    existing: set[tuple[int, int]] = set()
    if newest is not None and min(times) <= newest:
        existing = {(int(t), int(s)) for t, s in conn.execute(
            f"SELECT time_ns, sid FROM {raw} WHERE time_ns >= ? AND time_ns <= ?",
            (min(times), max(times))).fetchall()} & rows.keys()
    _upsert_raw(conn, raw, rows)
    if newest is None or min(times) > newest:
        # All new and newer than anything stored (the agent's case): the rows in
        # [min, max] are exactly this batch, so SQLite aggregates them itself.
        present = sorted({k for f in rows.values() for k in f})
        _add_rollups_sql(conn, measurement, min(times), max(times), present)
        return
    fresh = {k: v for k, v in rows.items() if k not in existing}
    if fresh:
        _add_rollups(conn, measurement, fresh)
    if existing:
        recompute(conn, measurement, existing, all_fields)


def _upsert_raw(conn: sqlite3.Connection, raw: str,
                rows: dict[tuple[int, int], dict[str, FieldValue]]) -> None:
    by_keys: dict[tuple[str, ...], list[tuple[object, ...]]] = defaultdict(list)
    for (t, sid), fields in rows.items():
        keys = tuple(fields)
        by_keys[keys].append((t, sid, *(_sql_value(fields[k]) for k in keys)))
    for keys, values in by_keys.items():
        cols = ["time_ns", "sid", *(lay.field_col(k) for k in keys)]
        updates = ",".join(f"{c}=excluded.{c}" for c in cols[2:])
        conn.executemany(
            f"INSERT INTO {raw} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))}) "
            f"ON CONFLICT(time_ns, sid) DO UPDATE SET {updates}", values)


_sql_value = lay.encode


def _add_rollups(conn: sqlite3.Connection, measurement: str,
                 rows: dict[tuple[int, int], dict[str, FieldValue]]) -> None:
    for width_s in lay.ROLLUP_WIDTHS_S:
        width = width_s * NS
        acc: dict[tuple[int, int], dict[str, Parts]] = defaultdict(dict)
        for (t, sid), fields in rows.items():
            bucket = acc[(t // width * width, sid)]
            for k, v in fields.items():
                p = bucket.get(k)
                if isinstance(v, str):  # counted (as SQL's COUNT does); no sum or extremes
                    if p is None:
                        bucket[k] = [None, 1.0, None, None]
                    else:
                        p[1] = (p[1] or 0.0) + 1
                    continue
                x = float(v)
                if p is None:
                    bucket[k] = [x, 1.0, x, x]
                else:
                    p[0] = x if p[0] is None else p[0] + x
                    p[1] = (p[1] or 0.0) + 1
                    if p[2] is None or x < p[2]:
                        p[2] = x
                    if p[3] is None or x > p[3]:
                        p[3] = x
        _upsert_parts(conn, lay.table(lay.TIER_TABLE[width_s], measurement), acc)


def _add_rollups_sql(conn: sqlite3.Connection, measurement: str, lo_ns: int, hi_ns: int,
                     fields: Sequence[str]) -> None:
    raw = lay.table("raw", measurement)
    for width_s in lay.ROLLUP_WIDTHS_S:
        width = width_s * NS
        cols, select, sets = ["time_ns", "sid"], [f"(time_ns / {width}) * {width}", "sid"], []
        for f in fields:
            c = lay.field_col(f)
            v = lay.value_expr(c)
            s, n, lo, hi = (lay.part_col(p, f) for p in lay.PARTS)
            cols += [s, n, lo, hi]
            select += [f"SUM({v})", f"COUNT({c})", f"MIN({v})", f"MAX({v})"]
            sets += _merge_sets(s, n, lo, hi)
        conn.execute(
            f"INSERT INTO {lay.table(lay.TIER_TABLE[width_s], measurement)} ({','.join(cols)}) "
            f"SELECT {','.join(select)} FROM {raw} WHERE time_ns >= ? AND time_ns <= ? "
            f"GROUP BY 1, 2 ON CONFLICT(time_ns, sid) DO UPDATE SET {','.join(sets)}",
            (lo_ns, hi_ns))


def _merge_sets(s: str, n: str, lo: str, hi: str) -> list[str]:
    """Upsert terms that add a batch's parts onto a bucket's (NULL where a side has none)."""
    return [f"{s}=COALESCE({s}+excluded.{s}, {s}, excluded.{s})",
            f"{n}=COALESCE({n}, 0)+COALESCE(excluded.{n}, 0)",
            f"{lo}=COALESCE(MIN({lo}, excluded.{lo}), {lo}, excluded.{lo})",
            f"{hi}=COALESCE(MAX({hi}, excluded.{hi}), {hi}, excluded.{hi})"]


def _upsert_parts(conn: sqlite3.Connection, tier_table: str,
                  acc: dict[tuple[int, int], dict[str, Parts]]) -> None:
    by_keys: dict[tuple[str, ...], list[tuple[object, ...]]] = defaultdict(list)
    for (t, sid), fields in acc.items():
        keys = tuple(sorted(fields))
        if keys:
            by_keys[keys].append((t, sid, *(x for k in keys for x in fields[k])))
    for keys, values in by_keys.items():
        cols = ["time_ns", "sid"]
        sets: list[str] = []
        for k in keys:
            s, n, lo, hi = (lay.part_col(p, k) for p in lay.PARTS)
            cols += [s, n, lo, hi]
            sets += _merge_sets(s, n, lo, hi)
        conn.executemany(
            f"INSERT INTO {tier_table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))}) "
            f"ON CONFLICT(time_ns, sid) DO UPDATE SET {','.join(sets)}", values)


def recompute(conn: sqlite3.Connection, measurement: str, keys: set[tuple[int, int]],
              all_fields: Sequence[str]) -> None:
    """Rebuild the rollup buckets holding ``keys`` ((time_ns, sid)): the minutes from raw rows,
    then the 5-minute and hourly buckets from the minutes."""
    if not all_fields:
        return
    part_cols = [lay.part_col(p, f) for f in all_fields for p in lay.PARTS]
    insert = f"INSERT OR REPLACE INTO {{dst}} (time_ns, sid, {','.join(part_cols)}) "
    from_raw = ", ".join(f"SUM({v}), COUNT({c}), MIN({v}), MAX({v})"
                         for c, v in ((c, lay.value_expr(c)) for c in
                                      (lay.field_col(f) for f in all_fields)))
    from_parts = ", ".join(
        f"SUM({lay.part_col('s', f)}), SUM({lay.part_col('n', f)}), "
        f"MIN({lay.part_col('lo', f)}), MAX({lay.part_col('hi', f)})" for f in all_fields)
    for width_s in lay.ROLLUP_WIDTHS_S:  # finest first: each reads a tier already rebuilt
        tier = lay.TIER_TABLE[width_s]
        source = lay.ROLLUP_SOURCE[tier]
        dst, src = lay.table(tier, measurement), lay.table(source, measurement)
        select = from_raw if source == "raw" else from_parts
        width = width_s * NS
        buckets: dict[int, set[int]] = defaultdict(set)
        for t, sid in keys:
            buckets[t // width * width].add(sid)
        for start, sids in sorted(buckets.items()):
            marks = ",".join("?" * len(sids))
            conn.execute(f"DELETE FROM {dst} WHERE time_ns = ? AND sid IN ({marks})",
                         (start, *sids))
            conn.execute(
                insert.format(dst=dst) + f"SELECT {start}, sid, {select} FROM {src} "
                f"WHERE time_ns >= ? AND time_ns < ? AND sid IN ({marks}) GROUP BY sid",
                (start, start + width, *sids))
