"""A read-through rollup cache over any Store: settled buckets aggregated once, then served from memory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from collector.schema import MEASUREMENTS, Point
from collector.store.base import AggregateQuery, Row, Store, column

log = logging.getLogger("wattlens.store.cache")

NS = 1_000_000_000
# Rollup levels (s), coarsest first; each divides the ones before it and every
# bucket_for() width from 60 s up, so a partial bucket is always made of whole
# finer buckets plus a remainder under a minute.
LEVELS_S: tuple[int, ...] = (3600, 300, 60)
_COMPOSABLE = frozenset({"sum", "count", "max", "min", "mean"})
PROBE_S = 3600  # how far past the last known point time_range's probe looks
# Event logs, not series: few rows, and written back-dated (the demo judges its history while
# the dashboard serves), so a settled bucket of them is never final. Always read from the store.
UNCACHED = frozenset({"alert"})

GroupKey = tuple[str, ...]
Values = tuple[float | None, ...]


@dataclass(frozen=True)
class _Key:
    """What a cached rollup is of: one measurement, expanded aggregates, grouping and filter."""

    measurement: str
    aggs: tuple[tuple[str, str], ...]
    group_by: tuple[str, ...]
    where: tuple[tuple[str, str | tuple[str, ...]], ...]

    def query(self, start: int, end: int, bucket_s: int | None = None) -> AggregateQuery:
        return AggregateQuery(self.measurement, self.aggs, start, end,  # type: ignore[arg-type]
                              group_by=self.group_by, bucket_s=bucket_s, where=dict(self.where))

    def split(self, r: Row) -> tuple[GroupKey, Values]:
        return (tuple(r.tags.get(t, "") for t in self.group_by),
                tuple(r.values.get(column(a, f)) for a, f in self.aggs))


@dataclass
class _Entry:
    """One cache key's buckets: start ns -> (fetched at ns, rows as (group tags, expanded values))."""

    buckets: dict[int, tuple[int, list[tuple[GroupKey, Values]]]] = field(default_factory=dict)
    used_ns: int = 0
    rows: int = 0
    # (lo, hi) -> the buckets in [lo, hi) combined per group: a window that slides by seconds
    # keeps the same whole hours, so its hourly part is combined once, not on every refresh.
    spans: dict[tuple[int, int], dict[GroupKey, list[float | None]]] = field(default_factory=dict)


@dataclass
class CacheStats:
    """Counters for the benchmark and the tests: what was served from memory and what was asked of the store."""

    hits: int = 0  # buckets served from memory
    fetched_buckets: int = 0  # buckets read from the store into the cache
    store_queries: int = 0  # queries sent to the underlying store
    passthrough: int = 0  # queries the cache cannot compose (last, tiny buckets)
    revalidated: int = 0  # expired buckets re-read on a background thread


def _expand(aggs: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The composable aggregates needed to rebuild ``aggs`` from parts: mean becomes sum and count."""
    out: list[tuple[str, str]] = []
    for agg, f in aggs:
        need = (("sum", f), ("count", f)) if agg == "mean" else ((agg, f),)
        for pair in need:
            if pair not in out:
                out.append(pair)
    return tuple(sorted(out))


def _combine(agg: str, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    if agg in ("sum", "count"):
        return a + b
    if agg == "max":
        return max(a, b)
    return min(a, b)


class CachedStore:
    """Serves aggregate queries from per-bucket rollups kept in memory; writes and other reads go through.

    A window is cut into whole epoch-aligned buckets of the rollup levels
    (1 h, 5 min, 1 min) and a remainder under a minute at each end. Whole
    buckets that ended more than ``settle_s`` ago are read from the store once
    (one aggregate query per run of missing buckets) and kept; the remainder
    and the still-filling newest buckets are asked of the store every time, as
    small indexed range queries. Sums, counts, maxima and minima of parts add
    up exactly; a mean is rebuilt as sum / count. ``last`` and sub-minute
    buckets are passed straight to the store.

    Buckets that were younger than ``final_s`` when read are re-read after
    ``ttl_s``, so data written late (a spool replaying after an outage) shows
    up; older buckets are final. With ``background`` (the default) the re-read
    runs on a thread while the old rows are served, so no refresh waits for it.
    Buckets older than ``keep_s`` and the least recently used keys beyond
    ``max_rows`` are dropped.
    """

    def __init__(self, store: Store, *, settle_s: float = 120.0, ttl_s: float = 600.0,
                 final_s: float = 6 * 3600.0, keep_s: float = 9 * 86400.0,
                 max_rows: int = 1_000_000, range_ttl_s: float = 1.0,
                 exact_every_s: float = 3600.0, background: bool = True,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.url = store.url
        self.settle_ns = int(settle_s * NS)
        self.ttl_ns = int(ttl_s * NS)
        self.final_ns = int(final_s * NS)
        self.keep_ns = int(keep_s * NS)
        self.max_rows = max_rows
        self.clock = clock
        self.stats = CacheStats()
        self._entries: dict[tuple[_Key, int], _Entry] = {}
        self.range_ttl_s = range_ttl_s
        self.exact_every_s = exact_every_s
        self.background = background
        self._inflight: set[tuple[_Key, int]] = set()
        # measurement -> (asked at, last full answer at, (first, last) or None); clock seconds
        self._ranges: dict[str, tuple[float, float, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()
        self._calls = 0

    @property
    def concurrent_reads(self) -> bool:
        """Whether independent reads may run at once (``analytics.queries.gather``): as the store
        behind answers them. The cache itself is read from several threads already (the
        dashboard's callbacks); without this, a cold page through it read one query at a time."""
        return bool(getattr(self.store, "concurrent_reads", False))

    # --- the Store protocol: writes and metadata go straight through -------------------------
    def write(self, points: Sequence[Point]) -> None:
        self.store.write(points)

    def close(self) -> None:
        self.store.close()

    def tag_values(self, measurement: str, tag: str, start_ns: int, end_ns: int) -> list[str]:
        return self.store.tag_values(measurement, tag, start_ns, end_ns)

    def time_range(self, measurement: str) -> tuple[int, int] | None:
        """The store's (first, last) point time, kept for ``range_ttl_s`` (every callback of a
        refresh asks it) and then advanced by a small probe rather than asked again.

        Some stores find the newest point slowly (InfluxDB scans every series for it); the
        probe counts points per second after the last known time, so ``last`` is exact to the
        second, rounded up: an upper bound within one second. The store is asked in full at
        the start, when the measurement was empty, and every ``exact_every_s``.
        """
        now = self.clock() / NS
        with self._lock:
            got = self._ranges.get(measurement)
        if got is not None and 0 <= now - got[0] < self.range_ttl_s:
            return got[2]
        if got is None or got[2] is None or not 0 <= now - got[1] < self.exact_every_s:
            span, exact_at = self.store.time_range(measurement), now
        else:
            span, exact_at = self._advance(measurement, got[2]), got[1]
        with self._lock:
            self._ranges[measurement] = (now, exact_at, span)
        return span

    def _advance(self, measurement: str, span: tuple[int, int]) -> tuple[int, int] | None:
        fields = MEASUREMENTS.get(measurement, ((), ()))[1]
        if not fields:
            return self.store.time_range(measurement)
        first, last = span
        name = column("count", fields[0])
        self._count_query()
        rows = self.store.query(AggregateQuery(measurement, (("count", fields[0]),), last,
                                               last + PROBE_S * NS, bucket_s=1))
        newest = max((r.time_ns for r in rows if r.time_ns is not None and r.values.get(name)),
                     default=None)
        if newest is not None:
            return first, max(last, newest + NS - 1)
        self._count_query()
        later = self.store.query(AggregateQuery(measurement, (("count", fields[0]),),
                                                last + PROBE_S * NS, last + 30 * 86400 * NS))
        if later and later[0].values.get(name):  # a jump of more than PROBE_S: ask in full
            return self.store.time_range(measurement)
        return span

    def settled_ns(self) -> int:
        """Data older than this is read once and kept (the settle horizon)."""
        return self.clock() - self.settle_ns

    def clear(self) -> None:
        """Forget every cached bucket."""
        with self._lock:
            self._entries.clear()

    @property
    def cached_rows(self) -> int:
        with self._lock:
            return sum(e.rows for e in self._entries.values())

    # --- reads ---------------------------------------------------------------------------------
    def query(self, q: AggregateQuery) -> list[Row]:
        """The same rows the store would answer, built from cached buckets where they are settled."""
        if q.measurement in UNCACHED or any(agg not in _COMPOSABLE for agg, _ in q.aggregates) or (
                q.bucket_s is not None and (q.bucket_s < 60 or q.bucket_s % 60)):
            self._count_query(passthrough=True)
            return self.store.query(q)
        now = self.clock()
        horizon = now - self.settle_ns
        aggs = _expand(q.aggregates)
        where_key = tuple(sorted((k, v if isinstance(v, str) else tuple(v))
                                 for k, v in q.where.items()))
        base = _Key(q.measurement, aggs, tuple(q.group_by), where_key)
        parts: dict[tuple[int | None, GroupKey], list[float | None]] = {}

        def add(label: int | None, group: GroupKey, values: Values | list[float | None]) -> None:
            key = (label, group)
            acc = parts.get(key)
            if acc is None:
                parts[key] = list(values)
            else:
                for i, (agg, _f) in enumerate(aggs):
                    acc[i] = _combine(agg, acc[i], values[i])

        if q.bucket_s is None:
            self._total(base, q.start_ns, q.end_ns, LEVELS_S, horizon, now,
                        lambda g, v: add(None, g, v))
        else:
            self._bucketed(base, q.start_ns, q.end_ns, int(q.bucket_s), horizon, now, add)
        return self._finish(q, aggs, parts)

    def _bucketed(self, base: _Key, start: int, end: int, bucket_s: int, horizon: int, now: int,
                  add: Callable[[int | None, GroupKey, Values], None]) -> None:
        """Buckets of ``bucket_s`` over [start, end), labelled as the store labels them.

        A partial first bucket and the bucket holding the settle horizon are built from finer
        levels; whole settled buckets come from the cache; buckets wholly after the horizon
        (the live edge, or forecast hours) are one bucketed query to the store.
        """
        width = bucket_s * NS
        finer = tuple(level for level in LEVELS_S if level < bucket_s and bucket_s % level == 0)
        first = -(-start // width) * width  # the first whole bucket
        head_end = min(first, end)
        if start < head_end:
            label = start // width * width
            self._total(base, start, head_end, finer, horizon, now,
                        lambda g, v: add(label, g, v))
        mid_hi = max(first, min(end // width * width, horizon // width * width))
        if mid_hi - first >= width:
            for t0, group, values in self._cached(base, bucket_s, first, mid_hi, now):
                add(t0, group, values)
        t = max(mid_hi, head_end)
        if t < end and t < horizon:  # the bucket the horizon falls in: partly settled
            hi = min(end, t + width)
            self._total(base, t, hi, finer, horizon, now, lambda g, v, label=t: add(label, g, v))  # type: ignore[misc]
            t = hi
        if t < end:
            for r in self._ask(base.query(t, end, bucket_s)):
                group, values = base.split(r)
                add(r.time_ns, group, values)

    def _finish(self, q: AggregateQuery, aggs: tuple[tuple[str, str], ...],
                parts: dict[tuple[int | None, GroupKey], list[float | None]]) -> list[Row]:
        index = {pair: i for i, pair in enumerate(aggs)}
        spec = [(column(agg, f), index[("sum", f)], index[("count", f)]) if agg == "mean"
                else (column(agg, f), index[(agg, f)], -1) for agg, f in q.aggregates]
        group_by = q.group_by
        out: list[Row] = []
        for (label, group), acc in sorted(parts.items(), key=itemgetter(0)):
            values: dict[str, float | None] = {}
            for name, i, j in spec:
                if j < 0:
                    values[name] = acc[i]
                else:
                    total, n = acc[i], acc[j]
                    values[name] = total / n if total is not None and n else None
            out.append(Row(label, dict(zip(group_by, group, strict=True)), values))
        return out

    def _total(self, base: _Key, start: int, end: int, levels: tuple[int, ...],
               horizon: int, now: int, emit: Callable[[GroupKey, Values], None]) -> None:
        """Emit partial aggregates covering [start, end): whole settled buckets, then the rest."""
        for plan in self._plan(start, end, levels, horizon):
            level, lo, hi = plan
            if level is None:
                self._direct(base, lo, hi, emit)
            else:
                for group, values in self._span(base, level, lo, hi, now).items():
                    emit(group, values)  # type: ignore[arg-type]

    def _span(self, base: _Key, level: int, lo: int, hi: int,
              now: int) -> dict[GroupKey, list[float | None]]:
        """The whole buckets of ``level`` in [lo, hi) combined per group, remembered while fresh."""
        width = level * NS
        key = (base, level)
        with self._lock:
            entry = self._entries.get(key)
            memo = entry.spans.get((lo, hi)) if entry is not None else None
            stale: list[int] = []
            if entry is not None and memo is not None:
                for t in range(lo, hi, width):
                    got = entry.buckets.get(t)
                    if got is None:
                        memo = None
                        break
                    if not self._fresh(got, t, width, now):
                        stale.append(t)
            if memo is not None and (not stale or self.background):
                assert entry is not None
                entry.used_ns = now
                self.stats.hits += (hi - lo) // width
        if memo is not None and (not stale or self.background):
            if stale:
                self._revalidate(base, level, stale)
            return memo
        combined: dict[GroupKey, list[float | None]] = {}
        aggs = base.aggs
        for _start, group, values in self._cached(base, level, lo, hi, now):
            acc = combined.get(group)
            if acc is None:
                combined[group] = list(values)
            else:
                for i, (agg, _f) in enumerate(aggs):
                    acc[i] = _combine(agg, acc[i], values[i])
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.spans[(lo, hi)] = combined
                while len(entry.spans) > 64:
                    entry.spans.pop(next(iter(entry.spans)))
        return combined

    @staticmethod
    def _plan(start: int, end: int, levels: tuple[int, ...],
              horizon: int) -> Iterator[tuple[int | None, int, int]]:
        """(level, lo, hi) for cached runs of whole buckets, (None, lo, hi) for direct remainders."""
        for i, level in enumerate(levels):
            width = level * NS
            lo = -(-start // width) * width
            hi = min(end // width * width, horizon // width * width)
            if hi - lo >= width:
                yield from CachedStore._plan(start, lo, levels[i + 1:], horizon)
                yield (level, lo, hi)
                yield from CachedStore._plan(hi, end, levels[i + 1:], horizon)
                return
        if end > start:
            yield (None, start, end)

    def _direct(self, base: _Key, start: int, end: int,
                emit: Callable[[GroupKey, Values], None]) -> None:
        for r in self._ask(base.query(start, end)):
            group, values = base.split(r)
            if not base.group_by and all(
                    v is None or (v == 0 and a == "count")
                    for v, (a, _f) in zip(values, base.aggs, strict=True)):
                continue  # an empty window answers one all-empty row on some stores
            emit(group, values)

    def _ask(self, q: AggregateQuery) -> list[Row]:
        self._count_query()
        return self.store.query(q)

    def _count_query(self, *, passthrough: bool = False) -> None:
        with self._lock:  # reads run on several threads at once (concurrent_reads)
            self.stats.store_queries += 1
            self.stats.passthrough += passthrough

    def _cached(self, base: _Key, level: int, lo: int, hi: int,
                now: int) -> list[tuple[int, GroupKey, Values]]:
        """Rows of the whole buckets of ``level`` in [lo, hi), reading missing runs from the store.

        Buckets past their TTL are re-read too: on a background thread (the old rows are served
        meanwhile) when ``background`` is set, else right here.
        """
        width = level * NS
        key = (base, level)
        starts = range(lo, hi, width)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            entry.used_ns = now
            missing = [t for t in starts if t not in entry.buckets]
            stale = [t for t in starts if t in entry.buckets
                     and not self._fresh(entry.buckets[t], t, width, now)]
        if not self.background:
            missing = sorted(missing + stale)
            stale = []
        fetched = self._fetch(base, level, missing)
        out: list[tuple[int, GroupKey, Values]] = []
        with self._lock:
            self._store_buckets(key, entry, fetched, now)
            for t in starts:
                got = entry.buckets.get(t) or (now, fetched.get(t, []))
                out.extend((t, g, v) for g, v in got[1])
            self.stats.hits += len(starts) - len(fetched)
            self._calls += 1
            if self._calls % 64 == 0 or self._total_rows() > self.max_rows:
                self._prune(now)
        if stale:
            self._revalidate(base, level, stale)
        return out

    def _fetch(self, base: _Key, level: int, starts: list[int]) -> dict[int, list[tuple[GroupKey, Values]]]:
        """Read whole buckets from the store, one bucketed query per contiguous run."""
        width = level * NS
        runs: list[tuple[int, int]] = []
        for t in sorted(starts):
            if runs and runs[-1][1] == t:
                runs[-1] = (runs[-1][0], t + width)
            else:
                runs.append((t, t + width))
        fetched: dict[int, list[tuple[GroupKey, Values]]] = {}
        for run_lo, run_hi in runs:
            rows = self._ask(base.query(run_lo, run_hi, level))
            for t in range(run_lo, run_hi, width):
                fetched[t] = []
            for r in rows:
                if r.time_ns is not None and r.time_ns in fetched:
                    fetched[r.time_ns].append(base.split(r))
        return fetched

    def _store_buckets(self, key: tuple[_Key, int], entry: _Entry,
                       fetched: dict[int, list[tuple[GroupKey, Values]]], now: int) -> None:
        """Keep fetched buckets (under the lock); combined spans over a re-read bucket are dropped."""
        for t, rows_in in fetched.items():
            old = entry.buckets.get(t)
            entry.rows += len(rows_in) - (len(old[1]) if old else 0)
            entry.buckets[t] = (now, rows_in)
            if old is not None:
                for span in [sp for sp in entry.spans if sp[0] <= t < sp[1]]:
                    del entry.spans[span]
        if key not in self._entries:  # evicted meanwhile: keep serving this call
            self._entries[key] = entry
        self.stats.fetched_buckets += len(fetched)

    def _revalidate(self, base: _Key, level: int, stale: list[int]) -> None:
        """Re-read expired buckets on a background thread, once per key at a time."""
        key = (base, level)
        with self._lock:
            if key in self._inflight:
                return
            self._inflight.add(key)

        def run() -> None:
            try:
                fetched = self._fetch(base, level, stale)
                with self._lock:
                    entry = self._entries.get(key)
                    if entry is not None:
                        self._store_buckets(key, entry, fetched, self.clock())
            except Exception as exc:  # the next refresh tries again; the old rows stay meanwhile
                log.warning("rollup cache: re-reading %s buckets failed: %s", base.measurement, exc)
            finally:
                with self._lock:
                    self._inflight.discard(key)
                    self.stats.revalidated += len(stale)

        threading.Thread(target=run, name="wattlens-cache-revalidate", daemon=True).start()

    def _fresh(self, got: tuple[int, list[tuple[GroupKey, Values]]] | None, start: int,
               width: int, now: int) -> bool:
        if got is None:
            return False
        fetched_at = got[0]
        if fetched_at - (start + width) >= self.final_ns:
            return True  # it was old already when read: final
        return now - fetched_at < self.ttl_ns

    def _total_rows(self) -> int:
        return sum(e.rows for e in self._entries.values())

    def _prune(self, now: int) -> None:
        """Drop buckets older than keep_s, then least recently used keys while over max_rows."""
        oldest = now - self.keep_ns
        for entry in self._entries.values():
            for s in [s for s in entry.buckets if s < oldest]:
                entry.rows -= len(entry.buckets.pop(s)[1])
        total = self._total_rows()
        for key, entry in sorted(self._entries.items(), key=lambda kv: kv[1].used_ns):
            if total <= self.max_rows:
                break
            total -= entry.rows
            del self._entries[key]
