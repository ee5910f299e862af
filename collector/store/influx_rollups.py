"""InfluxDB rollups: 1m, 5m and 1h tiers that keep sum, count, min and max per field, and reading them.

On InfluxDB 1.x the tiers are retention policies (``rollup_1m``, ``rollup_5m``,
``rollup_1h``) filled by continuous queries. InfluxDB 2.x and 3.x have neither, so
:func:`downsample` (``wattlens store downsample``) computes the same rows with
InfluxQL and writes them back as measurements ``NAME_1m``, ``NAME_5m`` and ``NAME_1h`` in
the bucket. Either way, each field ``F`` of a rollup row is stored as
``F_sum``, ``F_count``, ``F_min``, ``F_max``, so every composable aggregate
over a window is exact (:mod:`collector.store.tiers`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from collector import schema
from collector.errors import ConfigError
from collector.store import influxql, tiers
from collector.store.base import AggregateQuery, Row

if TYPE_CHECKING:
    from collector.store.influx_v1 import InfluxStore

NS = 1_000_000_000
RAW_RP = "raw"
ROLLUP_1M_RP = "rollup_1m"
ROLLUP_5M_RP = "rollup_5m"
ROLLUP_1H_RP = "rollup_1h"
# Tier width (s) -> suffix of its retention policy (rollup_1m) or measurement (gpu_1m).
SUFFIXES = {60: "1m", 300: "5m", 3600: "1h"}
ROLLUP_MEASUREMENTS = ("gpu", "cpu", "job", "facility")
# Rollups without a per-device dimension: name -> (measurement, the tags kept). A query that
# groups and filters only by kept tags reads them: the dashboard's power chart by node reads
# 125 series instead of 1,000 (docs/benchmarks.md). Same parts, so every composable aggregate
# stays exact; the 1m one sums the measurement's 1m rollup, the 5m and 1h ones its own 1m.
NODE_ROLLUPS: dict[str, tuple[str, tuple[str, ...]]] = {"gpu_node": ("gpu", ("host", "model",
                                                                            "method"))}
# How far behind now each tier is complete: the continuous queries run at each
# interval's end (RESAMPLE recomputes the recent ones), and the 5m and 1h ones read the 1m.
LAG_S = {60: 300, 300: 900, 3600: 2 * 3600}
_DURATION = re.compile(r"^(INF|(\d+(ns|u|µ|ms|s|m|h|d|w))+)$")
_UNITS_S = {"ns": 1e-9, "u": 1e-6, "µ": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
            "d": 86400, "w": 604800}
_SUFFIX = ("_sum", "_count", "_min", "_max")


def check_duration(flag: str, value: str) -> None:
    if not _DURATION.match(value):
        raise ConfigError(f"{flag}: {value!r} is not an InfluxDB duration; use e.g. 30d, 12w, "
                          f"720h or INF")


def duration_s(text: str) -> int:
    """Seconds in an InfluxDB duration such as ``30d`` or ``1h30m``."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ns|u|µ|ms|s|m|h|d|w)", text):
        total += int(number) * _UNITS_S[unit]
    return int(total)


def rollup_select(measurement: str, from_raw: bool) -> str:
    """Per field: sum, count, min and max, from raw points or from a finer rollup's parts."""
    q = influxql.quote_ident
    out: list[str] = []
    for f in schema.MEASUREMENTS[measurement][1]:
        if from_raw:
            src = [f"sum({q(f)})", f"count({q(f)})", f"min({q(f)})", f"max({q(f)})"]
        else:
            src = [f"sum({q(f + '_sum')})", f"sum({q(f + '_count')})", f"min({q(f + '_min')})",
                   f"max({q(f + '_max')})"]
        out += [f"{s} AS {q(f + suffix)}" for s, suffix in zip(src, _SUFFIX, strict=True)]
    return ", ".join(out)


def rollup_queries(database: str, raw_rp: str = RAW_RP
                   ) -> list[tuple[str, str, str, str, str]]:
    """(name, every, resample span, SELECT ... INTO ... FROM ..., GROUP BY tags) per rollup.

    The 1m rollup reads the raw policy, the 5m and 1h rollups read the 1m one; a node
    rollup (:data:`NODE_ROLLUPS`) reads its measurement's 1m rollup at 1m, its own 1m above.
    Ordered so that each reads only rollups listed before it. The SELECT has no WHERE and no
    GROUP BY, which the caller adds: ``time(every)`` and the tags (``*`` or a list).
    """
    q = influxql.quote_ident
    out: list[tuple[str, str, str, str, str]] = []
    for every, span, src_rp, dst_rp in (("1m", "30m", raw_rp, ROLLUP_1M_RP),
                                        ("5m", "1h", ROLLUP_1M_RP, ROLLUP_5M_RP),
                                        ("1h", "3h", ROLLUP_1M_RP, ROLLUP_1H_RP)):
        for m in ROLLUP_MEASUREMENTS:
            out.append((f"wattlens_{m}_{every}_v2", every, span,
                        f"SELECT {rollup_select(m, every == '1m')} INTO "
                        f"{q(database)}.{q(dst_rp)}.{q(m)} FROM {q(database)}.{q(src_rp)}.{q(m)}",
                        "*"))
        for node, (m, kept) in NODE_ROLLUPS.items():
            src = m if every == "1m" else node
            out.append((f"wattlens_{node}_{every}_v2", every, span,
                        f"SELECT {rollup_select(m, False)} INTO {q(database)}.{q(dst_rp)}."
                        f"{q(node)} FROM {q(database)}.{q(ROLLUP_1M_RP)}.{q(src)}",
                        ", ".join(q(t) for t in kept)))
    return out


def continuous_queries(database: str, raw_rp: str = RAW_RP) -> list[tuple[str, str]]:
    """(name, CREATE CONTINUOUS QUERY ...) for the 1m rollup of raw data, the 5m and 1h of the 1m.

    RESAMPLE FOR recomputes recent buckets on every run, so points replayed from
    an agent's spool after a short outage still reach the rollups; for longer
    gaps, :func:`backfill` recomputes any window.
    """
    q = influxql.quote_ident
    return [(name, f"CREATE CONTINUOUS QUERY {q(name)} ON {q(database)} "
                   f"RESAMPLE EVERY {every} FOR {span} BEGIN {select} "
                   f"GROUP BY time({every}), {tags} END")
            for name, every, span, select, tags in rollup_queries(database, raw_rp)]


def init_v1(store: InfluxStore, *, raw_retention: str, rollup_1m_retention: str,
            rollup_1h_retention: str, rollups: bool) -> list[str]:
    """Create the database, the raw retention policy and the 1m/5m/1h rollups; idempotent.

    Returns one line per step saying what was done. The 5m rollup is kept as long as the
    1m one (as in the embedded store). The raw policy becomes the
    database's default, so writes without ``?rp=`` land in it. Continuous
    queries of the first layout (mean of gauges only) are replaced.
    """
    done: list[str] = []
    for flag, value in (("--raw-retention", raw_retention),
                        ("--rollup-1m-retention", rollup_1m_retention),
                        ("--rollup-1h-retention", rollup_1h_retention)):
        check_duration(flag, value)
    db = influxql.quote_ident(store.database)
    store.influxql(f"CREATE DATABASE {db}", database="")
    done.append(f"database {store.database!r}: ready")
    raw_rp = store.rp or RAW_RP
    wanted = [(raw_rp, raw_retention, True)]
    if rollups:
        wanted += [(ROLLUP_1M_RP, rollup_1m_retention, False),
                   (ROLLUP_5M_RP, rollup_1m_retention, False),
                   (ROLLUP_1H_RP, rollup_1h_retention, False)]
    existing = {str(v[0]) for s in store.influxql(f"SHOW RETENTION POLICIES ON {db}", database="")
                for v in s.get("values") or []}
    for name, duration, default in wanted:
        verb = "ALTER" if name in existing else "CREATE"
        text = f"{verb} RETENTION POLICY {influxql.quote_ident(name)} ON {db} DURATION {duration}"
        text += " REPLICATION 1" if verb == "CREATE" else ""
        text += " DEFAULT" if default else ""
        store.influxql(text, database="")
        done.append(f"retention policy {name!r}: {duration}{' (default)' if default else ''}"
                    f" {'updated' if verb == 'ALTER' else 'created'}")
    if rollups:
        have = {str(v[0]) for s in store.influxql("SHOW CONTINUOUS QUERIES", database="")
                if s.get("name") == store.database for v in s.get("values") or []}
        for old in sorted(n for n in have if re.fullmatch(r"wattlens_\w+_1[mh]", n)):
            store.influxql(f"DROP CONTINUOUS QUERY {influxql.quote_ident(old)} ON {db}",
                           database="")
            done.append(f"continuous query {old!r}: dropped (first layout, means only)")
        for name, text in continuous_queries(store.database, raw_rp):
            if name in have:
                done.append(f"continuous query {name!r}: exists")
                continue
            store.influxql(text, database="")
            done.append(f"continuous query {name!r}: created")
    store.forget_tiers()
    return done


def backfill(store: InfluxStore, start_ns: int, end_ns: int) -> list[str]:
    """Recompute the 1m, 5m and 1h rollups over a window (widened to whole hours), now.

    For history written before ``init``, or spool replays older than the
    continuous queries' RESAMPLE window.
    """
    hour = 3600 * NS
    start, end = start_ns // hour * hour, -(-end_ns // hour) * hour
    done: list[str] = []
    for name, every, _, select, tags in rollup_queries(store.database, store.rp or RAW_RP):
        series = store.influxql(f"{select} WHERE {influxql.time_window(start, end)} "
                                f"GROUP BY time({every}), {tags}", database="")
        written = sum(int(v[1]) for s in series for v in s.get("values") or [])
        done.append(f"{name}: {written} points")
    store.forget_tiers()
    return done


def downsample(store: InfluxStore, start_ns: int, end_ns: int) -> list[str]:
    """The portable rollup step for InfluxDB 2.x/3.x: compute 1m, then 5m and 1h rows, write them back.

    Reads with InfluxQL (which 1.x, 2.x and 3.x serve) and writes ``NAME_1m`` and
    ``NAME_1h`` measurements through the store's own write path; idempotent
    (same series and time overwrite). Only whole hours are computed.
    """
    from collector.schema import point

    hour = 3600 * NS
    start, end = start_ns // hour * hour, end_ns // hour * hour
    done: list[str] = []
    if end <= start:
        return ["downsample: the window holds no whole hour yet"]
    for every, suffix in (("1m", "_1m"), ("5m", "_5m"), ("1h", "_1h")):
        jobs = [(m, m if every == "1m" else m + "_1m", rollup_select(m, every == "1m"), "*")
                for m in ROLLUP_MEASUREMENTS]
        jobs += [(node, (m if every == "1m" else node) + "_1m", rollup_select(m, False),
                  ", ".join(influxql.quote_ident(t) for t in kept))
                 for node, (m, kept) in NODE_ROLLUPS.items()]
        for m, src, select, group in jobs:
            series = store.influxql(
                f"SELECT {select} FROM {store.source_of(src)} WHERE "
                f"{influxql.time_window(start, end)} GROUP BY time({every}), {group} fill(none)")
            pts = []
            for s in series:
                cols = list(s.get("columns") or [])
                tags = {k: str(v) for k, v in (s.get("tags") or {}).items() if v}
                for raw in s.get("values") or []:
                    fields = {c: float(v) for c, v in zip(cols[1:], raw[1:], strict=True)
                              if v is not None}
                    if fields:
                        pts.append(point(m + suffix, tags, fields, int(raw[0])))
            for i in range(0, len(pts), 5000):
                store.write(pts[i:i + 5000])
            done.append(f"{m}{suffix}: {len(pts)} rows")
    store.flush_writes()
    store.forget_tiers()
    return done


def tier_query(store: InfluxStore, q: AggregateQuery) -> list[Row]:
    """Answer ``q`` from the raw points and the rollups, each read where it is exact and complete.

    The pieces of the plan are asked for at once (influxd answers them on its own threads).
    """
    if not tiers.composable(q) or q.measurement not in ROLLUP_MEASUREMENTS:
        return store.raw_query(q)
    now = time.time_ns()
    avail = [tiers.RAW]
    # Per width, the node rollup (when q needs no per-device tag) after the measurement's own:
    # the plan reads the later of two equally wide tiers first, the other where it is missing.
    for name in (q.measurement, *node_rollups_for(q)):
        for width_s, since in store.tier_starts(name).items():
            avail.append(tiers.Tier(name, width_s, ready_ns=now - LAG_S[width_s] * NS,
                                    since_ns=since))
    wanted = tiers.needed_parts(q)
    pieces = _skip_before_first(store, q.measurement, tiers.plan(q, avail))
    parts: list[tiers.PartRow] = []
    for rows in store.map_reads(lambda piece: _piece_rows(store, q, piece, wanted), pieces):
        parts.extend(rows)
    return tiers.merge(q, parts)


# A raw span at least this long is worth asking the measurement's first point for (the ask costs
# influxd about what a short raw span costs it: a cursor per series and field).
ASK_FIRST_FOR_NS = 3600 * NS


def _skip_before_first(store: InfluxStore, measurement: str,
                       pieces: list[tiers.Piece]) -> list[tiers.Piece]:
    """The pieces less those of raw points that end at or before the measurement's first point.

    influxd pays a cursor per series even for a span with no points (0.1-0.15 s for 1,000 GPUs
    over a day), e.g. the prior window of a store younger than it, read from raw points because
    no rollup reaches back there. The first point is asked for such a long span (and kept 60 s);
    for the short raw edges of a window it is used only when already known (`time_range`, on
    every page load, has most often just asked it).
    """
    raw = [p for p in pieces if p.tier.width_s == 0]
    if not raw:
        return pieces
    ask = any(p.end_ns - p.start_ns >= ASK_FIRST_FOR_NS for p in raw)
    first = store.first_point(measurement, ask=ask)
    if first is None:
        return pieces  # not known (or no point at all: the raw reads then find none)
    return [p for p in pieces if p.tier.width_s or p.end_ns > first]


def node_rollups_for(q: AggregateQuery) -> list[str]:
    """The node rollups (:data:`NODE_ROLLUPS`) that answer ``q``: of its measurement, keeping
    every tag it groups or filters by."""
    used = set(q.group_by) | set(q.where)
    return [node for node, (m, kept) in NODE_ROLLUPS.items()
            if m == q.measurement and used <= set(kept)]


def read_rows_plain(width_s: int, span_ns: int, bucket_s: int | None) -> bool:
    """Whether a piece is cheaper read as its stored rows (folded here) than grouped by influxd.

    Measured on InfluxDB 1.6 with 1,000 GPUs (docs/benchmarks.md): an aggregate with
    ``GROUP BY time()`` costs far more than reading the rows it reduces (the hourly tier's
    23 rows a GPU, 11 parts: 3.4 s grouped, 0.22 s read plain; the 5-minute tier over a day
    by host: 2.5 s grouped, 1.2 s plain), and even an empty minute of raw points costs 0.7 s
    grouped, 0.13 s plain. Without time buckets influxd's reduce is cheap (0.11 s for the
    hourly tier), so only short pieces are read plain. Raw points are assumed at most 1 Hz.
    """
    rows_per_series = span_ns / (max(width_s, 1) * NS)
    return rows_per_series <= (60 if bucket_s is None else 300)


def _piece_rows(store: InfluxStore, q: AggregateQuery, piece: tiers.Piece,
                wanted: dict[str, tuple[int, ...]]) -> list[tiers.PartRow]:
    qi = influxql.quote_ident
    width = piece.tier.width_s
    src = store.tier_source(q.measurement if width == 0 else piece.tier.name, width)
    filters = influxql.tag_filter(q.where)
    if filters is None:
        return []
    where = influxql.time_window(piece.start_ns, piece.end_ns) + (f" AND {filters}"
                                                                  if filters else "")
    tag_groups = [qi(t) for t in q.group_by]
    if read_rows_plain(width, piece.end_ns - piece.start_ns, q.bucket_s):
        cols = (list(wanted) if width == 0 else
                [f + _SUFFIX[j] for f, js in wanted.items() for j in js])
        # The group's tags as columns, not GROUP BY: influxd then merges the series into one
        # instead of answering each apart, 1.3-2.4x less of its time per piece (1,000 GPUs,
        # docs/benchmarks.md); the group is read from the row.
        selected = [f"{qi(c)}::field" for c in cols] + [f"{t}::tag" for t in tag_groups]
        text = f"SELECT {', '.join(selected)} FROM {src} WHERE {where}"
        return _fold(q, store.influxql(text), wanted, width == 0)
    fns = ("sum", "count", "min", "max") if width == 0 else ("sum", "sum", "min", "max")
    select = [f"{fns[j]}({qi(f if width == 0 else f + _SUFFIX[j])}::field)"
              for f, js in wanted.items() for j in js]
    groups = ([f"time({int(q.bucket_s)}s)"] if q.bucket_s is not None else []) + tag_groups
    text = f"SELECT {', '.join(select)} FROM {src} WHERE {where}"
    if groups:
        text += " GROUP BY " + ", ".join(groups)
    if q.bucket_s is not None:
        text += " fill(none)"
    return _grouped(q, store.influxql(text), wanted)


def _grouped(q: AggregateQuery, series: Sequence[dict[str, Any]],
             wanted: dict[str, tuple[int, ...]]) -> list[tiers.PartRow]:
    """Rows influxd aggregated (one column per part read, in ``wanted``'s order) as parts."""
    n_parts = 4 * len(wanted)
    slots = [4 * k + j for k, js in enumerate(wanted.values()) for j in js]
    out: list[tiers.PartRow] = []
    for s in series:
        tags_in = s.get("tags") or {}
        group = tuple(str(tags_in.get(t, "")) for t in q.group_by)
        for raw in s.get("values") or []:
            flat: list[float | None] = [None] * n_parts
            for i, at in enumerate(slots, 1):
                flat[at] = _num(raw[i])
            bucket = int(raw[0]) if q.bucket_s is not None else None
            out.append((bucket, group, flat))
    return out


def _fold(q: AggregateQuery, series: Sequence[dict[str, Any]],
          wanted: dict[str, tuple[int, ...]], raw: bool) -> list[tiers.PartRow]:
    """Stored rows (raw points, or rollup rows' parts) folded into parts per bucket and group.

    Columns come in ``wanted``'s order: a raw field once (its value feeds sum, count, min and
    max), a rollup field once per part read; then one per tag of ``q.group_by``. The parts are
    flat, four slots a field (:data:`tiers.PartRow`).
    """
    acc: dict[tuple[int | None, tuple[str, ...]], list[float | None]] = {}
    width = None if q.bucket_s is None else int(q.bucket_s) * NS
    n_parts = 4 * len(wanted)
    cols: list[tuple[int, int, int]] = []  # (column, slot, part; -1: a raw value)
    for k, js in enumerate(wanted.values()):
        cols.extend([(len(cols) + 1, 4 * k, -1)] if raw else [(len(cols) + 1 + n, 4 * k, j)
                                                              for n, j in enumerate(js)])
    first_tag = len(cols) + 1
    for s in series:
        for row in s.get("values") or []:
            group = tuple(row[first_tag:])  # tags come as text, or null where a point has none
            if None in group:
                group = tuple("" if t is None else t for t in group)
            key = (None if width is None else row[0] // width * width, group)
            have = acc.get(key)
            if have is None:
                have = acc[key] = [None] * n_parts
            for i, at, j in cols:
                v = row[i]
                if v is None:
                    continue
                if j < 0:  # a raw value: counted whatever its type, summed if a number
                    have[at + 1] = (have[at + 1] or 0) + 1
                    if type(v) not in _NUMBERS:
                        continue
                    old = have[at]
                    have[at] = v if old is None else old + v
                    old = have[at + 2]
                    if old is None or v < old:
                        have[at + 2] = v
                    old = have[at + 3]
                    if old is None or v > old:
                        have[at + 3] = v
                    continue
                if type(v) not in _NUMBERS:
                    continue
                at += j
                old = have[at]
                if old is None:
                    have[at] = v
                elif j < 2:
                    have[at] = old + v
                elif (v < old) if j == 2 else (v > old):
                    have[at] = v
    return [(bucket, group, flat) for (bucket, group), flat in acc.items()]


_NUMBERS = (int, float)  # not bool: a boolean field has no sum or extremes


def _num(value: object) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
