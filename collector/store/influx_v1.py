"""InfluxDB through the v1 HTTP API: ``/write`` for points, InfluxQL on ``/query`` for reads."""

from __future__ import annotations

import base64
import gzip
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson

from collector import schema
from collector.errors import StoreError, StoreRejected, StoreUnavailable
from collector.lineprotocol import LineEncoder
from collector.logutil import LogOnce
from collector.schema import Point
from collector.store import influxql
from collector.store.base import AggregateQuery, Row
from collector.store.influx_http import HttpClient, error_text, raise_for_status
from collector.store.influx_url import _V1_PARAMS, parse_url
from collector.store.memo import Memo

log = logging.getLogger("wattlens.store.influx")

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_READERS = 4  # statements of one read on the wire at once (a tiered read has 3-7 pieces)
_T = TypeVar("_T")
_R = TypeVar("_R")


# --- the v1 store ------------------------------------------------------------------


class InfluxStore:
    """InfluxDB through the v1 HTTP API: ``/write`` for points, InfluxQL on ``/query`` for reads.

    Writes are split into POSTs of at most ``batch_size`` lines; up to
    ``max_inflight`` of them are on the wire while the next are serialized, so
    the agent's write path keeps up with what the server can take. Each
    ``write`` returns only once every POST was answered, and raises
    StoreUnavailable (spool it) or StoreRejected (bad data) as the Sink
    contract says. A point that line protocol cannot carry (see
    :func:`collector.schema.escape_key`) is dropped, logged once, and counted in
    ``points_rejected``; the rest of the batch is written.
    """

    kind = "InfluxDB v1"
    # The spool may serialize a batch (lines) while the previous one is on the
    # wire (write_lines): write_lines is this store's own synchronous write.
    pipelined_lines = True
    # Reads may be asked from several threads at once (analytics.queries.gather): influxd
    # answers them on its own cores.
    concurrent_reads = True

    def __init__(self, url: str, *, known_params: Sequence[str] = _V1_PARAMS) -> None:
        self.parsed = parse_url(url, known_params)
        self.url = self.parsed.display  # never holds a password
        self.database = self.parsed.database
        self.rp: str | None = self.parsed.params.get("rp") or None
        self.timeout_s = self.parsed.number("timeout_s", 10.0)
        self.batch_size = int(self.parsed.number("batch_size", 5000.0, minimum=0.5))
        self.max_inflight = int(self.parsed.number("max_inflight", 2.0, minimum=0.5))
        # Rows per chunk of a read's answer (influxql.chunked_series): one chunk for most.
        self.chunk_size = int(self.parsed.number("chunk_size", 100_000.0, minimum=0.5))
        gzip_mode = self.parsed.flag("gzip", "auto")
        # Compression costs CPU and saves nothing on loopback; elsewhere it pays.
        self.gzip = gzip_mode == "on" or (gzip_mode == "auto" and self.parsed.host not in _LOOPBACK)
        self.gzip_min_bytes = 4096
        self.points_rejected = 0
        self.last_good_write_wall_s = 0.0
        self._encoder = LineEncoder()
        self._warn = LogOnce(log)
        self._http = HttpClient(self.parsed.base_url, display=self.url, timeout_s=self.timeout_s,
                                headers=self._auth_headers())
        self._pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._in_reader = threading.local()  # set on this store's reader threads (map_reads)
        # Facts each read needs, each a cursor per series to influxd, asked once between threads:
        # where each rollup tier begins, and the first and newest point of a measurement.
        self._tier_starts: Memo[str, dict[int, int]] = Memo(60.0)
        self._first: Memo[str, int | None] = Memo(60.0)
        # The newest point: one page load asks it from several callbacks within a second or two.
        self._newest: Memo[str, int | None] = Memo(2.0)

    def _auth_headers(self) -> dict[str, str]:
        if self.parsed.username is None:
            return {}
        raw = f"{self.parsed.username}:{self.parsed.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # --- writing -------------------------------------------------------------
    def encode(self, points: Sequence[Point], lines_per_body: int | None = None
               ) -> Iterator[tuple[bytes, int]]:
        """Line protocol bodies of at most ``lines_per_body`` (``batch_size``) lines, with counts."""
        limit = lines_per_body or self.batch_size
        for i in range(0, len(points), limit):
            lines = self.lines(points[i:i + limit])
            if lines:
                yield "\n".join(lines).encode(), len(lines)

    def lines(self, points: Sequence[Point]) -> list[str]:
        """One line per point; a point line protocol cannot carry is dropped, logged and counted."""
        out: list[str] = []
        line = self._encoder.line
        for p in points:
            try:
                out.append(line(p))
            except ValueError as exc:
                self.points_rejected += 1
                self._warn.warning("encode", f"dropped a {p.measurement} point InfluxDB cannot "
                                             f"store: {exc}")
        return out

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        n = len(points)
        if self.max_inflight <= 1 or n <= self.batch_size:
            errors: list[StoreError] = []
            for body, _ in self.encode(points):
                try:
                    self.write_lines(body)
                except StoreUnavailable:
                    raise  # the rest would fail the same way; the caller retries it all
                except StoreRejected as exc:
                    errors.append(exc)  # bad data in this body: still write the others
            self._raise_first(errors, n)
            return
        # A batch of several bodies: up to max_inflight POSTs at once, the next
        # body serialized while earlier ones are on the wire.
        pool = self._executor()
        futures: list[Future[None]] = [pool.submit(self.write_lines, body)
                                       for body, _ in self.encode(points)]
        failures = [e for e in (f.exception() for f in futures) if e is not None]
        unexpected = [e for e in failures if not isinstance(e, StoreError)]
        if unexpected:
            raise unexpected[0]
        self._raise_first([e for e in failures if isinstance(e, StoreError)], n)

    @staticmethod
    def _raise_first(errors: list[StoreError], n: int) -> None:
        if not errors:
            return
        # Any transient failure makes the whole batch worth retrying: rewriting
        # the parts that did arrive is harmless (same series and time overwrite).
        for exc in errors:
            if isinstance(exc, StoreUnavailable):
                raise exc
        raise errors[0]

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_inflight, thread_name_prefix="influx-write")
            return self._pool

    def write_lines(self, body: bytes) -> None:
        """POST one body of line protocol (ns precision) to ``/write``."""
        self.forget_bounds()  # a point older than the first, or newer than the newest, may be in it
        params = {"db": self.database, "precision": "ns"}
        if self.rp:
            params["rp"] = self.rp
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip and len(body) >= self.gzip_min_bytes:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        status, data, _ = self._http.request("POST", "/write?" + urlencode(params), body=body,
                                             headers=headers)
        raise_for_status(status, data, what=f"write to {self.database!r}", display=self.url)
        self.last_good_write_wall_s = time.time()

    def close(self) -> None:
        with self._pool_lock:
            pools = (self._pool, self._read_pool)
            self._pool = self._read_pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)
        self._http.close()

    def map_reads(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        """``fn`` over ``items`` (each a read), up to ``_READERS`` at once; results in order."""
        todo = list(items)
        if len(todo) <= 1 or getattr(self._in_reader, "yes", False):
            return [fn(x) for x in todo]  # one read, or asked from our reader: no pool to wait on
        with self._pool_lock:
            if self._read_pool is None:
                self._read_pool = ThreadPoolExecutor(
                    _READERS, thread_name_prefix="influx-read",
                    initializer=lambda: setattr(self._in_reader, "yes", True))
            pool = self._read_pool
        return list(pool.map(fn, todo))

    # --- reading -------------------------------------------------------------
    def influxql(self, statement: str, *, database: str | None = None) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; its series, or StoreRejected with InfluxDB's message."""
        params = {"q": statement, "epoch": "ns", "chunked": "true",
                  "chunk_size": str(self.chunk_size)}
        db = self.database if database is None else database
        if db:
            params["db"] = db
        status, data, _ = self._http.request(
            "POST", "/query", body=urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        raise_for_status(status, data, what="query", display=self.url)
        try:
            return influxql.chunked_series([orjson.loads(line) for line in data.splitlines()
                                            if line.strip()])
        except ValueError as exc:
            message = str(exc)
            if "database not found" in message:
                raise StoreUnavailable(
                    f"query: InfluxDB at {self.url}: {message}; run `wattlens store init "
                    f"--store URL` to create it") from None
            raise StoreRejected(f"query: InfluxDB at {self.url} refused {statement[:200]!r}: "
                                f"{error_text(message.encode())}") from None

    def _source(self, measurement: str) -> str:
        return influxql.source(measurement, self.database, self.rp)

    def source_of(self, measurement: str) -> str:
        """The InfluxQL source of a measurement in the store's database and retention policy."""
        return self._source(measurement)

    # --- tiers -------------------------------------------------------------------
    rollup_layout = "rp"  # rollups in retention policies (1.x); "measurement": NAME_1m in place

    def tier_source(self, measurement: str, width_s: int) -> str:
        """Where the tier of ``width_s`` (0 raw, 60, 300, 3600) of a measurement is read from."""
        from collector.store.influx_rollups import SUFFIXES

        if width_s == 0:
            return self._source(measurement)
        suffix = SUFFIXES[width_s]
        if self.rollup_layout == "rp":
            return influxql.source(measurement, self.database, f"rollup_{suffix}")
        return self._source(f"{measurement}_{suffix}")

    def tier_starts(self, measurement: str) -> dict[int, int]:
        """Width -> time of the first rollup row, for the tiers this database has (kept 60 s).

        ``measurement`` may name a node rollup (``gpu_node``); a database created before it
        has none, and its reads use the per-GPU rollups."""
        return self._tier_starts.get(measurement, lambda: self._ask_tier_starts(measurement))

    def _ask_tier_starts(self, measurement: str) -> dict[int, int]:
        starts: dict[int, int] = {}
        from collector.store.influx_rollups import NODE_ROLLUPS

        base = NODE_ROLLUPS.get(measurement, (measurement, ()))[0]
        first_field = schema.MEASUREMENTS.get(base, ((), ()))[1][:1]
        if not first_field:
            return starts

        def first_row(width_s: int) -> list[dict[str, Any]]:
            try:
                return self.influxql(
                    f"SELECT first({influxql.quote_ident(first_field[0] + '_count')}) "
                    f"FROM {self.tier_source(measurement, width_s)}")
            except StoreRejected:
                return []  # no such retention policy (no rollups, or no 5m one before 2026-11-30)

        widths = (60, 300, 3600)
        for width_s, series in zip(widths, self.map_reads(first_row, widths), strict=True):
            if series and series[0].get("values"):
                starts[width_s] = int(series[0]["values"][0][0])
        if base != measurement and not starts and self.tier_starts(base):
            how = ("`wattlens store init --store URL --backfill-hours N` adds and fills it"
                   if self.rollup_layout == "rp" else
                   "`wattlens store downsample --store URL --hours N` writes it")
            self._warn.warning("node-rollup", (
                f"InfluxDB at {self.url} has {base} rollups but no {measurement} rollup: reads by "
                f"node use the per-GPU rollups (2-3x slower for 1,000 GPUs); {how} "
                f"(docs/influxdb.md)"))
        return starts

    def forget_tiers(self) -> None:
        self._tier_starts.forget()
        self.forget_bounds()

    def forget_bounds(self) -> None:
        """Forget the first and newest points (this store wrote, or was told data changed)."""
        self._first.forget()
        self._newest.forget()

    def flush_writes(self) -> None:
        """Writes are synchronous here; the v2 store flushes its batching writer."""

    def query(self, q: AggregateQuery) -> list[Row]:
        """Composable aggregates from the rollup tiers where they are complete, the rest from raw."""
        from collector.store.influx_rollups import tier_query

        return tier_query(self, q)

    def raw_query(self, q: AggregateQuery) -> list[Row]:
        """``q`` over raw points only, in one InfluxQL statement."""
        statement = influxql.aggregate(q, self._source(q.measurement))
        if statement is None:
            return []
        return influxql.rows(q, self.influxql(statement))

    def tag_values(self, measurement: str, tag: str, start_ns: int, end_ns: int) -> list[str]:
        # SHOW TAG VALUES ignores time on InfluxDB 1.x, so group a cheap count by the tag.
        fields = schema.MEASUREMENTS.get(measurement, ((), ()))[1]
        target = f"{influxql.quote_ident(fields[0])}::field" if fields else "*"
        series = self.influxql(
            f"SELECT count({target}) FROM {self._source(measurement)} "
            f"WHERE {influxql.time_window(start_ns, end_ns)} GROUP BY {influxql.quote_ident(tag)}")
        values = {str((s.get("tags") or {}).get(tag, "")) for s in series}
        values.discard("")
        return sorted(values)

    def time_range(self, measurement: str) -> tuple[int, int] | None:
        """First and last point times, each asked of one field, then checked over every field
        (:meth:`_bound`: 0.02-0.03 s each for 1,000 GPUs). The first is kept 60 s: it moves
        only when retention drops a shard or older history is written. The newest is kept 2 s:
        one page load asks it from several callbacks. Both are forgotten when this store
        writes."""
        last, first = self._newest.peek(measurement), self._first.peek(measurement)
        if last is None or first is None:  # ask both at once: each costs influxd alike
            last, first = self.map_reads(lambda ask: ask(), (
                lambda: self._newest.get(measurement, lambda: self._bound(measurement, "DESC")),
                lambda: self.first_point(measurement)))
        if last is None:
            self._first.forget(measurement)
            return None
        if first is None or first > last:  # written meanwhile by another process
            self._first.forget(measurement)
            first = self.first_point(measurement)
        return None if first is None else (first, last)

    def first_point(self, measurement: str, *, ask: bool = True) -> int | None:
        """The time of the oldest raw point of ``measurement`` (kept 60 s), None when empty;
        with ``ask=False`` only what is held (None when not known)."""
        if not ask:
            return self._first.peek(measurement)
        return self._first.get(measurement, lambda: self._bound(measurement, "ASC"))

    def _bound(self, measurement: str, order: str) -> int | None:
        """The newest (``DESC``) or oldest (``ASC``) point time over every field, exactly.

        ``SELECT *`` opens a cursor per series and field (0.045 s newest, 0.07 s oldest for
        1,000 GPUs on InfluxDB 1.6, and 0.2 s when a page asks four at once). So one field is
        asked first (the measurement's first in :data:`schema.MEASUREMENTS`, 0.01 s), then
        whether any point of any field lies beyond it: an empty span read from the probe's
        side costs influxd 0.005-0.01 s. Only when one does is every field asked.
        """
        src = self._source(measurement)
        fields = schema.MEASUREMENTS.get(measurement, ((), ()))[1]
        probe = fields and self._first_time(
            f"SELECT {influxql.quote_ident(fields[0])} FROM {src} ORDER BY time {order} LIMIT 1")
        if not probe:
            return self._first_time(f"SELECT * FROM {src} ORDER BY time {order} LIMIT 1")
        beyond, inward = (f"time > {probe}", "ASC") if order == "DESC" else (f"time < {probe}",
                                                                             "DESC")
        # read from the probe outward (inward order): the other way costs as much as SELECT *
        if self._first_time(f"SELECT * FROM {src} WHERE {beyond} ORDER BY time {inward} LIMIT 1"
                            ) is None:
            return probe
        return self._first_time(f"SELECT * FROM {src} WHERE {beyond} ORDER BY time {order} LIMIT 1")

    def _first_time(self, statement: str) -> int | None:
        series = self.influxql(statement)
        if not series or not series[0].get("values"):
            return None
        return int(series[0]["values"][0][0])

    def ping(self) -> str:
        """The server's version as it reports it, or StoreUnavailable."""
        status, data, headers = self._http.request("GET", "/ping")
        raise_for_status(status, data, what="ping", display=self.url)
        return headers.get("x-influxdb-version", "unknown")

    # --- set-up ------------------------------------------------------------------
    def init(self, *, raw_retention: str = "30d", rollup_1m_retention: str = "90d",
             rollup_1h_retention: str = "INF", rollups: bool = True) -> list[str]:
        """Create the database, the raw retention policy and the 1m/5m/1h rollups; idempotent."""
        from collector.store.influx_rollups import init_v1

        return init_v1(self, raw_retention=raw_retention, rollup_1m_retention=rollup_1m_retention,
                       rollup_1h_retention=rollup_1h_retention, rollups=rollups)

    def backfill_rollups(self, start_ns: int, end_ns: int) -> list[str]:
        """Recompute the 1m, 5m and 1h rollups over a window (widened to whole hours), now."""
        from collector.store.influx_rollups import backfill

        return backfill(self, start_ns, end_ns)
