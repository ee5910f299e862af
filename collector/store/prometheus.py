"""Read-only store over a PromQL engine: Prometheus, VictoriaMetrics, Thanos or Mimir.

``prometheus://HOST:PORT[/path][?mapping=NAME[,NAME]&tls=1]``; a bearer token,
when the engine needs one, comes from ``WATTLENS_PROMETHEUS_TOKEN`` (never the
URL). Aggregates run in the engine (see collector/store/promql.py); buckets
are aligned to multiples of the bucket width since the epoch, like the other
stores, and a window edge that cuts a bucket is asked for with its own range,
so a total over ``[start, end)`` covers exactly that span.
"""

from __future__ import annotations

import gc
import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

import orjson

from collector.errors import ConfigError, StoreRejected, StoreUnavailable
from collector.schema import Point
from collector.store.base import AggregateQuery, Row
from collector.store.prommap import combine
from collector.store.promql import RANGE, Expr, Merger, Plan, plan

NS = 1_000_000_000
TOKEN_ENV = "WATTLENS_PROMETHEUS_TOKEN"  # noqa: S105 (a variable name, not a secret)
# Prometheus refuses a range query of more than 11,000 points per series; stay under it.
MAX_POINTS = 10_000
LOOKBACK_S = 35 * 86400  # how far back time_range looks for a measurement's first point
PARALLEL = 8


class PrometheusStore:
    """The Store protocol over the HTTP API (``/api/v1/query``, ``/api/v1/query_range``)."""

    read_only = True

    def __init__(self, base_url: str, mapping: str = "wattlens", token: str | None = None,
                 timeout_s: float = 60.0, url: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.url = url or base_url
        self.mapping_name = mapping
        self.mapping = combine(mapping)
        self._token = token
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="promql")

    # --- writes are refused ------------------------------------------------------------
    def write(self, points: Sequence[Point]) -> None:
        if points:
            raise StoreRejected(
                f"{self.url} is read-only: a prometheus:// store reads what Prometheus scrapes. "
                "Write to sqlite:// or influxdb://, and let Prometheus scrape the agent's "
                "/metrics (wattlens collect --prometheus-port)")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # --- HTTP --------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, method="GET")  # noqa: S310 (http/https built by from_url)
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout_s) as resp:  # noqa: S310
                body = orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code in (400, 422):
                raise ValueError(f"{self.url}: the engine refused the query: {detail}") from exc
            if exc.code in (401, 403):
                raise StoreUnavailable(f"{self.url}: HTTP {exc.code}; set {TOKEN_ENV} to a "
                                       "token the engine accepts") from exc
            raise StoreUnavailable(f"{self.url}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StoreUnavailable(f"{self.url}: cannot reach the engine: {exc}") from exc
        if body.get("status") != "success":
            raise StoreUnavailable(f"{self.url}: {body.get('error', body)}")
        return body["data"]

    def _instant(self, text: str, at_ns: int) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", {"query": text, "time": _seconds(at_ns)})
        result: list[dict[str, Any]] = data.get("result") or []
        return result

    def _range(self, text: str, first_ns: int, last_ns: int, step_ns: int
               ) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query_range", {
            "query": text, "start": _seconds(first_ns), "end": _seconds(last_ns),
            "step": _seconds(step_ns)})
        result: list[dict[str, Any]] = data.get("result") or []
        return result

    # --- the Store protocol ------------------------------------------------------------
    def query(self, q: AggregateQuery) -> list[Row]:
        mm = self.mapping.get(q.measurement)
        if mm is None:
            return []
        p = plan(q, mm)
        if not p.exprs:
            return []
        with _no_cycle_collection():
            return self._query(q, p)

    def _query(self, q: AggregateQuery, p: Plan) -> list[Row]:
        merger = Merger(q, p)
        same: dict[str, list[Expr]] = {}  # one question asked once, whatever columns it feeds
        for e in p.exprs:
            same.setdefault(e.text, []).append(e)
        jobs = [(text, span) for text in same for span in spans(q)]
        for (text, _span), answer in zip(jobs, self._pool.map(lambda j: self._answer(*j), jobs),
                                        strict=True):
            for expr in same[text]:
                for metric, first, run, points in answer:
                    if run is not None:
                        merger.add_run(expr, metric, first, run)
                    else:
                        merger.add_series(expr, metric, points)
        return merger.result()

    def _answer(self, text: str, span: Span) -> list[Answer]:
        """The engine's answer to one expression over one span, its values already floats."""
        text = text.replace(RANGE, f"{span.range_ns // 1_000_000}ms")
        if span.count == 1 and span.step_ns == 0:
            result = self._instant(text, span.first_end_ns)
        else:
            result = self._range(text, span.first_end_ns,
                                 span.first_end_ns + (span.count - 1) * span.step_ns, span.step_ns)
        return [span.answer(series) for series in result]

    def tag_values(self, measurement: str, tag: str, start_ns: int, end_ns: int) -> list[str]:
        mm = self.mapping.get(measurement)
        if mm is None:
            return []
        values: set[str] = set()
        for sources in mm.fields.values():
            for src in sources:
                if tag in src.constants:
                    values.add(src.constants[tag])
                if tag not in src.labels:
                    continue
                data = self._get(f"/api/v1/label/{urllib.parse.quote(src.labels[tag])}/values", {
                    "match[]": src.metric + ("{" + src.matchers + "}" if src.matchers else ""),
                    "start": _seconds(start_ns), "end": _seconds(end_ns)})
                values.update(v for v in data if v)
        return sorted(values)

    def time_range(self, measurement: str) -> tuple[int, int] | None:
        """(first, last) sample time of the measurement's metrics, to about a minute at the start."""
        mm = self.mapping.get(measurement)
        if mm is None:
            return None
        # Energy first: `a or b` keeps a's answer where both have one.
        fields = sorted(mm.fields, key=lambda f: (f != "energy_j", f))
        metrics = list(dict.fromkeys(s.metric for f in fields for s in mm.fields[f]))

        def each(template: str) -> str:
            return " or ".join(template.format(sel="{__name__=" + json.dumps(m) + "}")
                               for m in metrics)

        now_ns = time.time_ns()
        hour = 3600 * NS
        last_step = -(-now_ns // hour) * hour
        coarse = self._range(each("count(count_over_time({sel}[1h]))"), last_step - LOOKBACK_S * NS,
                             last_step, hour)
        steps = sorted(round(float(t) * 1e3) * 1_000_000 for s in coarse for t, _ in s["values"])
        if not steps:
            return None
        first = self._range(each("min(timestamp({sel}))"), steps[0] - hour, steps[0], 60 * NS)
        last = self._range(each("max(timestamp({sel}))"), steps[-1] - hour, min(steps[-1], now_ns),
                           60 * NS)
        firsts = [float(v) for s in first for _, v in s["values"]]
        lasts = [float(v) for s in last for _, v in s["values"]]
        # The first minute step after the first sample: look again one second apart. Where no
        # minute step has a sample yet (all of them newer than the last step the engine
        # answers: VictoriaMetrics hides the newest 30 s from queries), the last five minutes.
        t = int(min(firsts) * NS) if firsts else now_ns
        back = 60 * NS if firsts else 300 * NS
        exact = self._range(each("min(timestamp({sel}))"), t - back, t, NS)
        firsts += [float(v) for s in exact for _, v in s["values"]]
        # The last sample is less than a minute after max(lasts) (or in the last five minutes,
        # where no minute step had one): look again one second apart. Not one instant query a
        # few minutes on: once a target is gone, the engine marks its series stale and such a
        # query finds nothing, so the newest sample seen was the minute step's (a stopped agent's
        # data ended up to a minute early on the page).
        t = int(max(lasts) * NS) if lasts else now_ns - 300 * NS
        tail = self._range(each("max(timestamp({sel}))"), t, min(t + 300 * NS, now_ns), NS)
        lasts += [float(v) for s in tail for _, v in s["values"]]
        if not firsts or not lasts:
            return None
        return round(min(firsts) * 1e3) * 1_000_000, round(max(lasts) * 1e3) * 1_000_000


class Span:
    """Buckets evaluated together: ``count`` bucket ends from ``first_end_ns``, ``step_ns`` apart."""

    def __init__(self, first_end_ns: int, count: int, step_ns: int, range_ns: int,
                 bucket_start_ns: int | None) -> None:
        self.first_end_ns = first_end_ns
        self.count = count
        self.step_ns = step_ns
        self.range_ns = range_ns
        self.bucket_start_ns = bucket_start_ns  # for a single edge bucket; None: end - step

    def answer(self, series: dict[str, Any]) -> Answer:
        """One answered series: its labels, and either a run of values in consecutive buckets
        from the first one's start (the usual answer) or (bucket start, value) pairs."""
        metric: dict[str, str] = series.get("metric") or {}
        if self.step_ns == 0:
            return metric, None, None, [(self.bucket_start_ns, float(series["value"][1]))]
        step, values = self.step_ns, series["values"]
        # Evaluation times are whole milliseconds here (bucket ends on an epoch grid).
        first = int(values[0][0] * 1000 + 0.5) * 1_000_000 if values else 0
        last = int(values[-1][0] * 1000 + 0.5) * 1_000_000 if values else 0
        if values and last - first == (len(values) - 1) * step:
            run = numbers(list(map(_VALUE, values)))
            if run is not None:
                return metric, first - step, run, []
        return metric, None, None, [(int(t * 1000 + 0.5) * 1_000_000 - step, float(v))
                                    for t, v in values]


_VALUE = itemgetter(1)
# (labels, first bucket start, values in consecutive buckets | None, (bucket start, value) pairs)
Answer = tuple[dict[str, str], int | None, list[float] | None, list[tuple[int | None, float]]]


def numbers(texts: list[str]) -> list[float] | None:
    """The engine's value strings as floats, all parsed in one call; None if any is not plain.

    The JSON API sends each value as a string ("1234.5"). Joined into one JSON array,
    each with an exponent ("1234.5e0", so every one parses as a float), a C parser reads
    them about ten times faster than float() one by one, with the same result. A value
    that is not a plain decimal (NaN, +Inf, 1e-05) makes the array invalid: None, and
    the caller converts one by one.
    """
    try:
        out: list[float] = orjson.loads("[" + "e0,".join(texts) + "e0]")
    except orjson.JSONDecodeError:
        return None
    return out if len(out) == len(texts) else None


def spans(q: AggregateQuery) -> list[Span]:
    """How to evaluate ``q``'s buckets: full ones in range queries, cut edges on their own.

    The number of buckets is the window over the bucket width; each range query
    carries at most MAX_POINTS of them.
    """
    if q.bucket_s is None:
        return [Span(q.end_ns, 1, 0, q.end_ns - q.start_ns, None)]
    b = q.bucket_s * NS
    k0, k1 = q.start_ns // b, (q.end_ns - 1) // b
    edges = sorted({k for k, cut in ((k0, k0 * b < q.start_ns), (k1, (k1 + 1) * b > q.end_ns))
                    if cut})
    out: list[Span] = []
    for k in edges:
        lo, hi = max(q.start_ns, k * b), min(q.end_ns, (k + 1) * b)
        out.append(Span(hi, 1, 0, hi - lo, k * b))
    first_full = k0 + 1 if k0 in edges else k0
    last_full = k1 - 1 if k1 in edges else k1
    k = first_full
    while k <= last_full:
        n = min(MAX_POINTS, last_full - k + 1)
        out.append(Span((k + 1) * b, n, b, b, None))
        k += n
    return out


_gc_lock = threading.Lock()
_gc_readers = 0
_gc_paused = False


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while answers are read (reference counting goes on).

    An answer is hundreds of thousands of small lists and floats, none in a cycle; each
    allocation burst makes the collector walk the whole heap again (a report's heap
    included), which cost more than the parsing itself (3-7 times it, at 256 GPUs). Re-enabled
    when the last concurrent read ends, and left alone where the caller had disabled it.
    """
    global _gc_readers, _gc_paused
    with _gc_lock:
        if _gc_readers == 0:
            _gc_paused = gc.isenabled()
            gc.disable()
        _gc_readers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_readers -= 1
            if _gc_readers == 0 and _gc_paused:
                gc.enable()


def _seconds(ns: int) -> str:
    return f"{ns / NS:.3f}"


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body.get("error") or body)[:300]
    except (ValueError, OSError):
        return exc.reason if isinstance(exc.reason, str) else str(exc.code)


def from_url(url: str) -> PrometheusStore:
    """``prometheus://host:9090[/path][?mapping=dcgm-exporter,vllm&tls=1&timeout=60]``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password or parts.username:
        raise ConfigError(f"--store: put no credentials in a prometheus:// URL; set {TOKEN_ENV}")
    if not parts.hostname:
        raise ConfigError(f"--store: {url!r} names no host; use prometheus://HOST:9090")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--store: bad port in {url!r}: {exc}") from exc
    params = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    known = {"mapping", "tls", "timeout"}
    for key in params:
        if key not in known:
            raise ConfigError(f"--store: unknown parameter {key!r} in {url!r}; "
                              f"use {', '.join(sorted(known))}")
    mapping = params.get("mapping", ["wattlens"])[-1]
    tls = params.get("tls", ["0"])[-1].lower() in ("1", "true", "yes")
    timeout_s = _positive("timeout", params.get("timeout", ["60"])[-1])
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = f"{'https' if tls else 'http'}://{host}:{port or 9090}{parts.path.rstrip('/')}"
    token = os.environ.get(TOKEN_ENV) or None
    return PrometheusStore(base, mapping, token=token, timeout_s=timeout_s, url=url)


def _positive(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"--store: {name} must be a positive number of seconds, got {text!r}")
    return value


__all__ = ["PrometheusStore", "from_url"]
