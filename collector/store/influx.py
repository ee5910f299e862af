"""InfluxDB stores: v1 /write (influxdb://) and the v2 batching WriteApi (influxdb2://), read with InfluxQL."""

from __future__ import annotations

import base64
import collections
import gzip
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from collector import schema
from collector.errors import ConfigError, StoreError, StoreRejected, StoreUnavailable
from collector.logutil import LogOnce
from collector.schema import Point
from collector.store import influxql
from collector.store.base import AggregateQuery, Row

log = logging.getLogger("wattlens.store.influx")

TOKEN_ENV = "WATTLENS_INFLUX_TOKEN"  # noqa: S105 - the variable's name, not a secret
_NS: Any = "ns"  # influxdb_client.WritePrecision.NS, without importing it for v1
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_ERROR_TEXT_MAX = 400


# --- URLs --------------------------------------------------------------------


@dataclass(frozen=True)
class InfluxURL:
    """A parsed store URL; ``display`` is safe to log (no password)."""

    scheme: str
    base_url: str  # http(s)://host:port
    host: str
    database: str
    display: str
    username: str | None
    password: str | None
    params: Mapping[str, str]

    def param(self, name: str, default: str) -> str:
        return self.params.get(name, default)

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.params.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value > minimum:
            raise ConfigError(f"--store: URL parameter {name}={raw!r} in {self.display!r} must "
                              f"be a number above {minimum:g}")
        return value

    def flag(self, name: str, default: str) -> str:
        value = self.params.get(name, default).lower()
        if value not in ("on", "off", "auto", "true", "false", "1", "0"):
            raise ConfigError(f"--store: URL parameter {name}={value!r} in {self.display!r} "
                              f"must be on, off or auto")
        return {"true": "on", "1": "on", "false": "off", "0": "off"}.get(value, value)


_V1_PARAMS = ("rp", "timeout_s", "batch_size", "max_inflight", "gzip", "tls")
_V2_PARAMS = ("org", "rp", "timeout_s", "batch_size", "flush_interval_ms", "gzip", "tls")


def parse_url(url: str, known: Sequence[str]) -> InfluxURL:
    """Split ``influxdb[2]://[user:pass@]host:port/NAME?k=v`` and check every part."""
    from collector.store import redact_url

    display = redact_url(url)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--store: bad port in {display!r}; use {parts.scheme}://host:8086/NAME") \
            from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"--store: {display!r} names no host; use {parts.scheme}://host:8086/NAME")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        what = "database" if parts.scheme == "influxdb" else "bucket"
        raise ConfigError(f"--store: {display!r} must name one {what}, got {database!r}; use "
                          f"{parts.scheme}://{host}:{port or 8086}/NAME")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"--store: unknown URL parameter {unknown[0]!r} in {display!r}; "
                          f"known: {', '.join(known)}")
    tls = params.get("tls", "off").lower() in ("on", "true", "1")
    netloc = f"[{host}]" if ":" in host else host
    base = f"{'https' if tls else 'http'}://{netloc}:{port or 8086}"
    return InfluxURL(
        scheme=parts.scheme, base_url=base, host=host, database=database, display=display,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        params=params,
    )


# --- HTTP ----------------------------------------------------------------------


class HttpClient:
    """A small keep-alive HTTP client, one connection per thread, mapping failures to store errors.

    Connection refused, timeouts, 5xx and 429 raise StoreUnavailable (retry
    later); other 4xx raise StoreRejected with InfluxDB's own message. 401/403
    and "database not found" are configuration, not bad data, so they are
    StoreUnavailable too: points wait in the spool until the operator fixes it
    instead of being dropped. Credentials travel in a header and never appear
    in a message.
    """

    def __init__(self, base_url: str, *, display: str, timeout_s: float,
                 headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.display = display
        self.timeout_s = timeout_s
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._headers = dict(headers or {})
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout_s)
        self._local.conn = conn
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _discard(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()
            with self._lock:
                self._open.discard(conn)

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        """Send one request; (status, body, lower-cased headers) for any answer; raises if none came."""
        all_headers = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._discard()
                # A kept-alive connection the server closed while idle: one fresh try.
                # Writes are idempotent in InfluxDB (same series and time overwrite).
                stale = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                         BrokenPipeError, http.client.BadStatusLine))
                if reused and stale and attempt == 0:
                    continue
                raise StoreUnavailable(
                    f"cannot reach InfluxDB at {self.display}: {_reason(exc, self.timeout_s)}"
                ) from None
            if resp.will_close:
                self._discard()
            return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout_s:g} s (raise timeout_s in the store URL if it is slow)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is influxd running, and on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def error_text(data: bytes, headers_error: str | None = None) -> str:
    """InfluxDB's own error message from a response body, shortened for a log line."""
    text = headers_error or ""
    if not text:
        try:
            payload = json.loads(data.decode("utf-8", "replace"))
            text = str(payload.get("error") or payload.get("message") or payload) \
                if isinstance(payload, dict) else str(payload)
        except ValueError:
            text = data.decode("utf-8", "replace").strip()
    if len(text) > _ERROR_TEXT_MAX:
        text = text[:_ERROR_TEXT_MAX] + "…"
    return text or "(no message)"


def raise_for_status(status: int, data: bytes, *, what: str, display: str) -> None:
    """Map an HTTP status to the store errors (see :class:`HttpClient`)."""
    if 200 <= status < 300:
        return
    message = error_text(data)
    if status == 429 or status >= 500:
        raise StoreUnavailable(f"{what}: InfluxDB at {display} answered {status}: {message}")
    if status in (401, 403):
        raise StoreUnavailable(
            f"{what}: InfluxDB at {display} refused the credentials ({status}: {message}); "
            f"check the user and password in the store URL or ${TOKEN_ENV}")
    if status == 404 and "not found" in message:
        raise StoreUnavailable(
            f"{what}: InfluxDB at {display} answered 404: {message}; "
            f"run `wattlens store init --store URL` to create it")
    raise StoreRejected(f"{what}: InfluxDB at {display} rejected it ({status}): {message}")


# --- line protocol, fast ---------------------------------------------------------


class LineEncoder:
    """Line protocol identical to :func:`collector.schema.to_line`, with the escaped series key cached.

    A fleet repeats the same few thousand series every round, so the escaped
    ``measurement,tags`` head is computed once per series; this halves the cost
    of serializing a batch.
    """

    def __init__(self, max_series: int = 200_000) -> None:
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._keys: dict[str, str] = {}
        self._max_series = max_series

    def line(self, p: Point) -> str:
        key = (p.measurement, p.tags)
        head = self._heads.get(key)
        if head is None:
            head = schema.escape_measurement(p.measurement)
            if p.tags:
                head += "," + ",".join(
                    f"{schema.escape_key(k)}={schema.escape_key(v)}" for k, v in p.tags)
            if len(self._heads) >= self._max_series:
                self._heads.clear()
            self._heads[key] = head
        parts: list[str] = []
        keys = self._keys
        for k, v in p.fields:
            ek = keys.get(k)
            if ek is None:
                ek = keys[k] = schema.escape_key(k) + "="
            parts.append(ek + (repr(v) if type(v) is float else schema.format_field_value(v)))
        return f"{head} {','.join(parts)} {p.time_ns}"


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

    def __init__(self, url: str, *, known_params: Sequence[str] = _V1_PARAMS) -> None:
        self.parsed = parse_url(url, known_params)
        self.url = self.parsed.display  # never holds a password
        self.database = self.parsed.database
        self.rp: str | None = self.parsed.params.get("rp") or None
        self.timeout_s = self.parsed.number("timeout_s", 10.0)
        self.batch_size = int(self.parsed.number("batch_size", 5000.0, minimum=0.5))
        self.max_inflight = int(self.parsed.number("max_inflight", 2.0, minimum=0.5))
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
        self._pool_lock = threading.Lock()

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
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._http.close()

    # --- reading -------------------------------------------------------------
    def influxql(self, statement: str, *, database: str | None = None) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; its series, or StoreRejected with InfluxDB's message."""
        params = {"q": statement, "epoch": "ns"}
        db = self.database if database is None else database
        if db:
            params["db"] = db
        status, data, _ = self._http.request(
            "POST", "/query", body=urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        raise_for_status(status, data, what="query", display=self.url)
        try:
            payload = json.loads(data.decode("utf-8"))
            return [dict(s) for s in influxql.statement_series(payload)]
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

    def query(self, q: AggregateQuery) -> list[Row]:
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
        bounds: list[int] = []
        for order in ("ASC", "DESC"):
            series = self.influxql(
                f"SELECT * FROM {self._source(measurement)} ORDER BY time {order} LIMIT 1")
            if not series or not series[0].get("values"):
                return None
            bounds.append(int(series[0]["values"][0][0]))
        return bounds[0], bounds[1]

    def ping(self) -> str:
        """The server's version as it reports it, or StoreUnavailable."""
        status, data, headers = self._http.request("GET", "/ping")
        raise_for_status(status, data, what="ping", display=self.url)
        return headers.get("x-influxdb-version", "unknown")

    # --- set-up ------------------------------------------------------------------
    def init(self, *, raw_retention: str = "30d", rollup_1m_retention: str = "90d",
             rollup_1h_retention: str = "INF", rollups: bool = True) -> list[str]:
        """Create the database, the raw retention policy and the 1m/1h rollups; idempotent.

        Returns one line per step saying what was done. The raw policy becomes
        the database's default, so writes without ``?rp=`` land in it.
        """
        done: list[str] = []
        for flag, value in (("--raw-retention", raw_retention),
                            ("--rollup-1m-retention", rollup_1m_retention),
                            ("--rollup-1h-retention", rollup_1h_retention)):
            check_duration(flag, value)
        db = influxql.quote_ident(self.database)
        self.influxql(f"CREATE DATABASE {db}", database="")
        done.append(f"database {self.database!r}: ready")
        raw_rp = self.rp or RAW_RP
        wanted = [(raw_rp, raw_retention, True)]
        if rollups:
            wanted += [(ROLLUP_1M_RP, rollup_1m_retention, False),
                       (ROLLUP_1H_RP, rollup_1h_retention, False)]
        existing = {str(v[0]): v for s in self.influxql(f"SHOW RETENTION POLICIES ON {db}",
                                                        database="")
                    for v in s.get("values") or []}
        for name, duration, default in wanted:
            rp = influxql.quote_ident(name)
            verb = "ALTER" if name in existing else "CREATE"
            text = f"{verb} RETENTION POLICY {rp} ON {db} DURATION {duration}"
            text += " REPLICATION 1" if verb == "CREATE" else ""
            text += " DEFAULT" if default else ""
            self.influxql(text, database="")
            done.append(f"retention policy {name!r}: {duration}{' (default)' if default else ''}"
                        f" {'updated' if verb == 'ALTER' else 'created'}")
        if rollups:
            have = {str(v[0]) for s in self.influxql("SHOW CONTINUOUS QUERIES", database="")
                    if s.get("name") == self.database for v in s.get("values") or []}
            for name, text in continuous_queries(self.database, raw_rp):
                if name in have:
                    done.append(f"continuous query {name!r}: exists")
                    continue
                self.influxql(text, database="")
                done.append(f"continuous query {name!r}: created")
        return done


    def backfill_rollups(self, start_ns: int, end_ns: int) -> list[str]:
        """Recompute the 1m and 1h rollups over a window (widened to whole hours), now.

        For history written before ``init``, or spool replays older than the
        continuous queries' RESAMPLE window.
        """
        hour = 3600 * 1_000_000_000
        start, end = start_ns // hour * hour, -(-end_ns // hour) * hour
        done: list[str] = []
        for name, every, _, select in rollup_queries(self.database, self.rp or RAW_RP):
            series = self.influxql(f"{select} WHERE {influxql.time_window(start, end)} "
                                   f"GROUP BY time({every}), *", database="")
            written = sum(int(v[1]) for s in series for v in s.get("values") or [])
            done.append(f"{name}: {written} points")
        return done


RAW_RP = "raw"
ROLLUP_1M_RP = "rollup_1m"
ROLLUP_1H_RP = "rollup_1h"
ROLLUP_MEASUREMENTS = ("gpu", "cpu", "job", "facility")
_DURATION = re.compile(r"^(INF|(\d+(ns|u|µ|ms|s|m|h|d|w))+)$")


def check_duration(flag: str, value: str) -> None:
    if not _DURATION.match(value):
        raise ConfigError(f"{flag}: {value!r} is not an InfluxDB duration; use e.g. 30d, 12w, "
                          f"720h or INF")


def rollup_select(measurement: str) -> str:
    """Per field: SUM for increments (so a window's total stays exact), MEAN for gauges."""
    fields = schema.MEASUREMENTS[measurement][1]
    return ", ".join(
        f"{'sum' if f in schema.INCREMENT_FIELDS else 'mean'}({influxql.quote_ident(f)}) "
        f"AS {influxql.quote_ident(f)}" for f in fields)


def rollup_queries(database: str, raw_rp: str = RAW_RP) -> list[tuple[str, str, str, str]]:
    """(name, every, resample span, SELECT ... INTO ... FROM ...) for each rollup, 1m before 1h.

    The 1m rollup reads the raw policy, the 1h rollup reads the 1m one; the
    SELECT has no WHERE and no GROUP BY, which the caller adds.
    """
    q = influxql.quote_ident
    out: list[tuple[str, str, str, str]] = []
    for every, span, src_rp, dst_rp in (("1m", "30m", raw_rp, ROLLUP_1M_RP),
                                        ("1h", "3h", ROLLUP_1M_RP, ROLLUP_1H_RP)):
        for m in ROLLUP_MEASUREMENTS:
            out.append((f"wattlens_{m}_{every}", every, span,
                        f"SELECT {rollup_select(m)} INTO {q(database)}.{q(dst_rp)}.{q(m)} "
                        f"FROM {q(database)}.{q(src_rp)}.{q(m)}"))
    return out


def continuous_queries(database: str, raw_rp: str = RAW_RP) -> list[tuple[str, str]]:
    """(name, CREATE CONTINUOUS QUERY ...) for the 1m rollup of raw data and the 1h of the 1m.

    RESAMPLE FOR recomputes recent buckets on every run, so points replayed from
    an agent's spool after a short outage still reach the rollups; for longer
    gaps, :meth:`InfluxStore.backfill_rollups` recomputes any window.
    """
    q = influxql.quote_ident
    return [(name, f"CREATE CONTINUOUS QUERY {q(name)} ON {q(database)} "
                   f"RESAMPLE EVERY {every} FOR {span} BEGIN {select} "
                   f"GROUP BY time({every}), * END")
            for name, every, span, select in rollup_queries(database, raw_rp)]


# --- the v2 store ------------------------------------------------------------------


def _import_influxdb_client() -> None:
    """Import influxdb-client once, muting urllib3's import-time notice about its old
    ``[secure]`` extra (emitted when ``urllib3_secure_extra`` is installed; not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*urllib3\\[secure\\]",
                                category=DeprecationWarning)
        import influxdb_client  # noqa: F401


class Influx2Store(InfluxStore):
    """InfluxDB 2.x/3.x/Cloud: writes through influxdb-client's batching WriteApi, reads with InfluxQL.

    The WriteApi batches on its own thread (``batch_size`` points or
    ``flush_interval_ms``, gzip on), so ``write`` returns at once and a failure
    is only known later: a batch that failed for a transient reason is kept
    (bounded) and handed to the spool by :meth:`take_failed`; a rejected batch
    is logged and counted. The client's own retries are off: retrying is the
    spool's job, with backoff and a bound. :meth:`write_lines` writes
    synchronously, for the spool's replay. Reads use the v1-compatible
    ``/query`` with the token, which 2.x (DBRP mapping) and 3.x serve.
    """

    kind = "InfluxDB v2"
    pipelined_lines = False  # writes go through the batching WriteApi; write_lines is for replay
    failed_max_bytes = 64 * 1024 * 1024

    def __init__(self, url: str) -> None:
        super().__init__(url, known_params=_V2_PARAMS)
        _import_influxdb_client()
        from influxdb_client import InfluxDBClient, WriteOptions
        from influxdb_client.client.write_api import SYNCHRONOUS
        from reactivex.scheduler import ThreadPoolScheduler

        org = self.parsed.params.get("org") or None
        if org is None:
            raise ConfigError(f"--store: {self.url!r} needs ?org=ORG (the InfluxDB organization)")
        self.org: str = org
        self.bucket = self.database
        self.flush_interval_ms = int(self.parsed.number("flush_interval_ms", 1000.0))
        self.gzip = self.parsed.flag("gzip", "on") != "off"
        self._token = os.environ.get(TOKEN_ENV) or ""
        if not self._token:
            log.warning("%s is not set: writing to %s without a token", TOKEN_ENV, self.url)
        self._http = HttpClient(self.parsed.base_url, display=self.url, timeout_s=self.timeout_s,
                                headers={"Authorization": f"Token {self._token}"}
                                if self._token else {})
        self._client = InfluxDBClient(url=self.parsed.base_url, token=self._token, org=self.org,
                                      timeout=int(self.timeout_s * 1000), enable_gzip=self.gzip)
        options = WriteOptions(
            batch_size=self.batch_size, flush_interval=self.flush_interval_ms, max_retries=0,
            max_close_wait=int(max(self.timeout_s * 2, 5.0) * 1000),
            write_scheduler=ThreadPoolScheduler(max_workers=1))
        self._failed: collections.deque[bytes] = collections.deque()
        self._failed_bytes = 0
        self._failed_lock = threading.Lock()
        self.points_failed_dropped = 0
        self._batch = self._client.write_api(
            write_options=options, success_callback=self._on_success,
            error_callback=self._on_error)
        self._sync = self._client.write_api(write_options=SYNCHRONOUS)

    def _auth_headers(self) -> dict[str, str]:
        return {}

    def write(self, points: Sequence[Point]) -> None:
        lines = self.lines(points)
        if lines:
            # One record per line, so the WriteApi's batch_size counts points.
            self._batch.write(self.bucket, self.org, record=lines, write_precision=_NS)

    def write_lines(self, body: bytes) -> None:
        try:
            self._sync.write(self.bucket, self.org, record=body, write_precision=_NS)
        except Exception as exc:
            raise self._translate(exc) from None
        self.last_good_write_wall_s = time.time()

    def _translate(self, exc: BaseException) -> StoreError:
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status > 0:
            body = getattr(exc, "body", None) or b""
            message = getattr(exc, "message", None) or error_text(
                body if isinstance(body, bytes) else str(body).encode())
            try:
                raise_for_status(status, str(message).encode(), what=f"write to {self.bucket!r}",
                                 display=self.url)
            except StoreError as mapped:
                return mapped
        return StoreUnavailable(f"write to {self.bucket!r}: cannot reach InfluxDB at {self.url}: "
                                f"{_reason(exc, self.timeout_s)}")

    def _on_success(self, _conf: tuple[str, str, str], _data: Any) -> None:
        self.last_good_write_wall_s = time.time()

    def _on_error(self, _conf: tuple[str, str, str], data: Any, exc: Exception) -> None:
        body = data if isinstance(data, bytes) else str(data).encode()
        error = self._translate(exc)
        if isinstance(error, StoreRejected):
            n = body.count(b"\n") + 1
            self.points_rejected += n
            self._warn.warning("batch", f"{error}; {n} points dropped")
            return
        self._warn.warning("batch", f"{error}; the batch is kept for the spool")
        with self._failed_lock:
            self._failed.append(body)
            self._failed_bytes += len(body)
            while self._failed_bytes > self.failed_max_bytes and self._failed:
                old = self._failed.popleft()
                self._failed_bytes -= len(old)
                self.points_failed_dropped += old.count(b"\n") + 1

    def take_failed(self) -> list[bytes]:
        """Bodies of line protocol whose batch failed transiently since the last call (oldest first)."""
        with self._failed_lock:
            out, self._failed = list(self._failed), collections.deque()
            self._failed_bytes = 0
        return out

    def flush(self) -> None:
        """Write what the WriteApi holds now (closes and reopens its batching pipeline)."""
        from influxdb_client import WriteOptions
        from reactivex.scheduler import ThreadPoolScheduler

        old = self._batch
        options = WriteOptions(
            batch_size=self.batch_size, flush_interval=self.flush_interval_ms, max_retries=0,
            max_close_wait=int(max(self.timeout_s * 2, 5.0) * 1000),
            write_scheduler=ThreadPoolScheduler(max_workers=1))
        self._batch = self._client.write_api(
            write_options=options, success_callback=self._on_success,
            error_callback=self._on_error)
        old.close()

    def close(self) -> None:
        self._batch.close()  # flushes what is batched, bounded by max_close_wait
        self._sync.close()
        self._client.close()
        super().close()

    def init(self, *, raw_retention: str = "30d", rollup_1m_retention: str = "90d",
             rollup_1h_retention: str = "INF", rollups: bool = True) -> list[str]:
        """Create the bucket if the server has the v2 bucket API; rollups are documented, not made.

        InfluxDB 2.x downsamples with tasks (Flux) and 3.x with its processing
        engine; see docs/influxdb.md for both.
        """
        check_duration("--raw-retention", raw_retention)
        done: list[str] = []
        try:
            from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules

            buckets = self._client.buckets_api()
            if buckets.find_bucket_by_name(self.bucket) is not None:
                done.append(f"bucket {self.bucket!r}: exists")
            else:
                seconds = 0 if raw_retention == "INF" else duration_s(raw_retention)
                rules = BucketRetentionRules(type="expire", every_seconds=seconds)
                buckets.create_bucket(bucket_name=self.bucket, org=self.org,
                                      retention_rules=rules)
                done.append(f"bucket {self.bucket!r}: created, retention {raw_retention}")
        except Exception as exc:
            error = self._translate(exc)
            if "404" in str(error) or "405" in str(error) or "400" in str(error):
                done.append(f"bucket {self.bucket!r}: this server has no v2 bucket API; "
                            f"create the bucket with its own tools")
            else:
                raise error from None
        if rollups:
            done.append("rollups: on InfluxDB 2.x/3.x set them up as in docs/influxdb.md")
        return done


_UNITS_S = {"ns": 1e-9, "u": 1e-6, "µ": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
            "d": 86400, "w": 604800}


def duration_s(text: str) -> int:
    """Seconds in an InfluxDB duration such as ``30d`` or ``1h30m``."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ns|u|µ|ms|s|m|h|d|w)", text):
        total += int(number) * _UNITS_S[unit]
    return int(total)


# --- entry points --------------------------------------------------------------------


def init_store(store: object, **options: Any) -> list[str]:
    """Prepare a store for writing (database, retention, rollups); a no-op for stores that need none."""
    init: Callable[..., list[str]] | None = getattr(store, "init", None)
    if init is None:
        return [f"{getattr(store, 'url', store)}: nothing to set up"]
    return init(**options)


def from_url(url: str) -> InfluxStore:
    """``influxdb://[user:pass@]host:8086/DB[?rp=&batch_size=&max_inflight=&timeout_s=&gzip=&tls=]``."""
    return InfluxStore(url)


def from_url_v2(url: str) -> Influx2Store:
    """``influxdb2://host:8086/BUCKET?org=ORG[&batch_size=&flush_interval_ms=&timeout_s=&gzip=&tls=]``."""
    return Influx2Store(url)
