"""Reading the embedded layout: each piece of a tiered plan as one GROUP BY, merged exactly."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from collector.store import sqlite_layout as lay
from collector.store import sqlite_pack, tiers
from collector.store.base import AggregateQuery, Row, column

NS = 1_000_000_000


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Run a read's statements in one transaction: packing moves rows from ``raw:m`` into
    blocks, and a read that saw them in both (or in neither) would count them twice (or not)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:  # an error may have ended it already
            conn.execute("COMMIT")


def run_query(conn: sqlite3.Connection, q: AggregateQuery, tags: set[str],
              fields: set[str], *, tiered: bool = True) -> list[Row]:
    """Answer ``q``: composable aggregates from the coarsest tiers, ``last`` from raw rows."""
    with read_snapshot(conn):
        return _run_query(conn, q, tags, fields, tiered=tiered)


def _run_query(conn: sqlite3.Connection, q: AggregateQuery, tags: set[str],
               fields: set[str], *, tiered: bool) -> list[Row]:
    for tag, want in q.where.items():
        values = (want,) if isinstance(want, str) else tuple(want)
        if tag not in tags or not values:
            return []
    need = [f for f in tiers.expand(q) if f in fields]
    out: list[Row] = []
    if need and any(agg != "last" for agg, _ in q.aggregates):
        plain = AggregateQuery(q.measurement, tuple((a, f) for a, f in q.aggregates if a != "last"),
                               q.start_ns, q.end_ns, q.group_by, q.bucket_s, q.where)
        pieces = tiers.plan(plain, _tiers(conn, q.measurement) if tiered else (tiers.RAW,))
        out = _merged(conn, q, pieces, need, tags)
    lasts = [f for agg, f in q.aggregates if agg == "last"]
    if lasts:
        out = _fill_lasts(conn, q, out, [f for f in lasts if f in fields], tags)
    return out


def _tiers(conn: sqlite3.Connection, measurement: str) -> tuple[tiers.Tier, ...]:
    """The tiers to read, the 5-minute one complete only as far as it keeps pace with the minutes.

    A writer of layout 2 still running after the file was upgraded does not maintain the
    5-minute tier: where its newest bucket is not the newest minutes' bucket, it is read only
    up to that bucket, and the minutes answer the rest.
    """
    def newest(tier: str) -> int | None:
        got = conn.execute(f"SELECT MAX(time_ns) FROM {lay.table(tier, measurement)}").fetchone()
        return None if got[0] is None else int(got[0])

    minute = newest("1m")
    if minute is None:
        return tiers.TIERS
    width = tiers.FIVE_MINUTES.width_s * NS
    five = newest("5m")
    if five is not None and five == minute // width * width:
        return tiers.TIERS
    held = tiers.Tier("5m", tiers.FIVE_MINUTES.width_s, ready_ns=five or 0)
    return tuple(held if t.name == "5m" else t for t in tiers.TIERS)


def _merged(conn: sqlite3.Connection, q: AggregateQuery, pieces: list[tiers.Piece],
            need: list[str], tags: set[str]) -> list[Row]:
    """All pieces in one statement: each piece's parts (sum, count, min, max per field) grouped
    in its tier, then combined across pieces and finished by SQLite (the rules of
    :func:`tiers.merge` and its finishers), so Python only builds the result rows."""
    if not pieces:
        return []
    raw = [p for p in pieces if p.tier.width_s == 0]
    staged = sqlite_pack.stage(conn, q.measurement, [
        r for p in raw for r in sqlite_pack.load(conn, q.measurement, p.start_ns, p.end_ns)])
    inner, params = [], []
    for piece in pieces:
        sources = [lay.table(lay.TIER_TABLE[piece.tier.width_s], q.measurement)]
        if staged is not None and piece.tier.width_s == 0:
            sources.append(staged)  # the packed minutes' rows: parts merged like any piece's
        for source in sources:
            sql, p = _piece_sql(q, piece, need, tags, source)
            inner.append(sql)
            params.extend(p)
    keys = ["b", *(f"g{i}" for i in range(len(q.group_by)))]
    index = {f: i for i, f in enumerate(need)}
    select = [*keys]
    names: list[str] = []
    for agg, f in q.aggregates:
        if agg == "last":
            continue
        names.append(column(agg, f))
        i = index.get(f)
        if i is None:
            select.append("0.0" if agg == "count" else "NULL")
        elif agg == "count":
            select.append(f"TOTAL(n{i})")
        elif agg == "sum":
            select.append(f"CASE WHEN SUM(n{i}) > 0 THEN TOTAL(s{i}) END")
        elif agg == "mean":
            select.append(f"CASE WHEN SUM(n{i}) > 0 THEN TOTAL(s{i}) / SUM(n{i}) END")
        else:  # text has no extremes; integers come back as floats, as tiers.merge gives them
            ext = f"{'MIN' if agg == 'min' else 'MAX'}({'lo' if agg == 'min' else 'hi'}{i})"
            select.append(f"CASE WHEN typeof({ext}) IN ('integer', 'real') THEN {ext} * 1.0 END")
    any_value = " + ".join(f"TOTAL(n{i})" for i in range(len(need)))
    sql = (f"SELECT {', '.join(select)} FROM ({' UNION ALL '.join(inner)}) "
           f"GROUP BY {', '.join(keys)} HAVING {any_value} > 0 "
           f"ORDER BY {', '.join(keys)}")  # b is NULL in every row or in none
    group_by = q.group_by
    n = len(keys)
    return [Row(r[0], dict(zip(group_by, r[1:n], strict=True)), dict(zip(names, r[n:], strict=True)))
            for r in conn.execute(sql, params)]


def _where(q: AggregateQuery, start: int, end: int) -> tuple[str, list[object]]:
    clauses = ["d.time_ns >= ?", "d.time_ns < ?"]
    params: list[object] = [start, end]
    for tag, want in sorted(q.where.items()):
        values = (want,) if isinstance(want, str) else tuple(want)
        clauses.append(f"s.{lay.tag_col(tag)} IN ({','.join('?' * len(values))})")
        params.extend(values)
    return " AND ".join(clauses), params


def _group(q: AggregateQuery, tags: set[str]) -> tuple[list[str], list[str]]:
    """SELECT expressions for the bucket and the group tags, and the GROUP BY terms."""
    if q.bucket_s is not None:
        width = int(q.bucket_s) * NS
        select = [f"(d.time_ns / {width}) * {width}"]
        group = ["1"]
    else:
        select, group = ["NULL"], []
    for i, tag in enumerate(q.group_by):
        select.append(f"COALESCE(s.{lay.tag_col(tag)}, '')" if tag in tags else "''")
        group.append(str(i + 2))
    return select, group


def _piece_sql(q: AggregateQuery, piece: tiers.Piece, need: list[str],
               tags: set[str], source: str) -> tuple[str, list[object]]:
    """One piece of the plan as a GROUP BY in its tier: bucket, group tags, then per field its
    sum, count, min and max (columns b, g0.., s0, n0, lo0, hi0, ..)."""
    tier = lay.TIER_TABLE[piece.tier.width_s]
    select, group = _group(q, tags)
    # A tier as wide as the bucket holds one row per series and bucket: nothing to group here.
    whole = tier != "raw" and piece.tier.width_s == q.bucket_s
    if whole:
        select[0], group = "d.time_ns", []
    select = [f"{select[0]} AS b", *(f"{e} AS g{i}" for i, e in enumerate(select[1:]))]
    for i, f in enumerate(need):
        if tier == "raw":
            c = f"d.{lay.field_col(f)}"
            v = lay.value_expr(c)
            exprs = [f"SUM({v})", f"COUNT({c})", f"MIN({v})", f"MAX({v})"]
        else:
            s, n, lo, hi = (f"d.{lay.part_col(p, f)}" for p in lay.PARTS)
            exprs = ([s, n, lo, hi] if whole else
                     [f"SUM({s})", f"SUM({n})", f"MIN({lo})", f"MAX({hi})"])
        select += [f"{e} AS {name}{i}" for e, name in zip(exprs, ("s", "n", "lo", "hi"), strict=True)]
    where, params = _where(q, piece.start_ns, piece.end_ns)
    join = (f" JOIN {lay.series_table(q.measurement)} s ON s.id = d.sid"
            if q.group_by or q.where else "")
    sql = f"SELECT {', '.join(select)} FROM {source} d{join} WHERE {where}"
    if group:
        sql += f" GROUP BY {', '.join(group)}"
    return sql, params


def _fill_lasts(conn: sqlite3.Connection, q: AggregateQuery, out: list[Row],
                lasts: list[str], tags: set[str]) -> list[Row]:
    """LAST(field) per group from raw rows: the value at the latest time where the field is set."""
    index = {(r.time_ns, *(r.tags[t] for t in q.group_by)): r for r in out}
    select, _ = _group(q, tags)
    where, params = _where(q, q.start_ns, q.end_ns)
    part = ", ".join(select)
    n_tags = len(q.group_by)
    for f in lasts:
        c = f"d.{lay.field_col(f)}"
        source = lay.table("raw", q.measurement)
        staged = sqlite_pack.stage(conn, q.measurement, sqlite_pack.last_rows(
            conn, q.measurement, f, q.start_ns, q.end_ns, q.bucket_s))
        if staged is not None:
            source = f"(SELECT * FROM {source} UNION ALL SELECT * FROM {staged})"
        sql = (f"SELECT * FROM (SELECT {part}, {c}, ROW_NUMBER() OVER (PARTITION BY {part} "
               f"ORDER BY d.time_ns DESC) AS rn FROM {source} d "
               f"JOIN {lay.series_table(q.measurement)} s ON s.id = d.sid "
               f"WHERE {where} AND {c} IS NOT NULL) WHERE rn = 1")
        for r in conn.execute(sql, params):
            key = (r[0], *r[1:1 + n_tags])
            row = index.get(key)
            if row is None:
                row = Row(r[0], dict(zip(q.group_by, r[1:1 + n_tags], strict=True)),
                          {column(a, fn): (0.0 if a == "count" else None)
                           for a, fn in q.aggregates})
                index[key] = row
            row.values[column("last", f)] = _num(lay.decode(r[1 + n_tags]))  # type: ignore[index]
    rows = list(index.values())
    for r in rows:
        for agg, f in q.aggregates:
            r.values.setdefault(column(agg, f), None)  # type: ignore[attr-defined]
    if all(a == "last" for a, _ in q.aggregates):
        rows = [r for r in rows if any(v is not None for v in r.values.values())]
    rows.sort(key=lambda r: (r.time_ns or 0, *(r.tags[t] for t in q.group_by)))
    return rows


def tag_values(conn: sqlite3.Connection, measurement: str, tag: str, start_ns: int,
               end_ns: int) -> list[str]:
    """Distinct values of one tag among the series with data in the window (coarsest tiers first)."""
    with read_snapshot(conn):
        return _tag_values(conn, measurement, tag, start_ns, end_ns)


def _tag_values(conn: sqlite3.Connection, measurement: str, tag: str, start_ns: int,
                end_ns: int) -> list[str]:
    probe = AggregateQuery(measurement, (("count", "_"),), start_ns, end_ns)
    sids: set[int] = set()
    for piece in tiers.plan(probe, _tiers(conn, measurement)):
        t = lay.table(lay.TIER_TABLE[piece.tier.width_s], measurement)
        sids.update(r[0] for r in conn.execute(
            f"SELECT DISTINCT sid FROM {t} WHERE time_ns >= ? AND time_ns < ?",
            (piece.start_ns, piece.end_ns)))
        if piece.tier.width_s == 0:
            sids |= sqlite_pack.sids(conn, measurement, piece.start_ns, piece.end_ns)
    if not sids:
        return []
    col = lay.tag_col(tag)
    found: set[str] = set()
    ids = sorted(sids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        found.update(r[0] for r in conn.execute(
            f"SELECT DISTINCT {col} FROM {lay.series_table(measurement)} "
            f"WHERE id IN ({','.join('?' * len(chunk))}) AND {col} IS NOT NULL", chunk))
    return sorted(found)


def _num(value: object) -> float | None:
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None
