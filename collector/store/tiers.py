"""Tiered reads: split a query's window over the raw, 1-minute, 5-minute and 1-hour tiers, and recombine exactly.

A tier row holds, per field, the SUM, COUNT, MIN and MAX of the raw values in
its bucket. From those, every composable aggregate of a wider span is exact:
sums and counts add, minima and maxima take the extreme, and a mean is the
total sum over the total count. So a query reads whole hours from the 1-hour
tier, the whole minutes at either end from the 1-minute tier, and only the
sub-minute edges from raw points (:func:`plan`). ``last`` is not composable
from these parts and is always read from raw points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from collector.store.base import AggregateQuery, Row, column

NS = 1_000_000_000
PARTS = ("sum", "count", "min", "max")


@dataclass(frozen=True)
class Tier:
    """One resolution of the store: ``width_s`` 0 is raw points; it is complete in [since, ready)."""

    name: str
    width_s: int
    ready_ns: int | None = None  # None: complete up to now (rollups written with the points)
    since_ns: int | None = None  # None: complete from the first point on


RAW = Tier("raw", 0)
MINUTE = Tier("1m", 60)
FIVE_MINUTES = Tier("5m", 300)
HOUR = Tier("1h", 3600)
TIERS: tuple[Tier, ...] = (RAW, MINUTE, FIVE_MINUTES, HOUR)


@dataclass(frozen=True)
class Piece:
    """Read ``[start_ns, end_ns)`` of the query from ``tier``."""

    tier: Tier
    start_ns: int
    end_ns: int


def composable(q: AggregateQuery) -> bool:
    """True when every aggregate of ``q`` can be rebuilt from tier parts (all but ``last``)."""
    return all(agg != "last" for agg, _ in q.aggregates)


def plan(q: AggregateQuery, tiers: Sequence[Tier] = TIERS) -> list[Piece]:
    """The pieces that answer ``q`` exactly, coarsest tier first for the middle of the window.

    A tier can serve a span when its width divides the query's bucket (so each
    tier row falls in one result bucket), the span is aligned to its width,
    and the tier is complete there (``ready_ns``).
    """
    usable = [t for t in tiers if t.width_s == 0 or (
        composable(q) and (q.bucket_s is None or q.bucket_s % t.width_s == 0))]
    usable.sort(key=lambda t: t.width_s)
    return _split(q.start_ns, q.end_ns, usable)


def _split(start: int, end: int, tiers: list[Tier]) -> list[Piece]:
    if start >= end:
        return []
    tier = tiers[-1]
    if tier.width_s == 0:
        return [Piece(tier, start, end)]
    width = tier.width_s * NS
    lo = -(-start // width) * width
    hi = end // width * width
    if tier.ready_ns is not None:
        hi = min(hi, tier.ready_ns // width * width)
    if tier.since_ns is not None:
        lo = max(lo, -(-tier.since_ns // width) * width)
    finer = tiers[:-1]
    if lo >= hi or lo >= end or hi <= start:
        return _split(start, end, finer)
    return [Piece(tier, lo, hi), *_split(start, lo, finer), *_split(hi, end, finer)]


def expand(q: AggregateQuery) -> tuple[str, ...]:
    """The fields whose parts (sum, count, min, max) a tiered read of ``q`` needs."""
    return tuple(sorted({f for _, f in q.aggregates}))


# The parts (indices into PARTS) each aggregate is finished from.
_PARTS_OF = {"sum": (0,), "mean": (0, 1), "count": (1,), "min": (2,), "max": (3,)}


def needed_parts(q: AggregateQuery) -> dict[str, tuple[int, ...]]:
    """Per field (sorted), the parts its aggregates need: a sum or mean needs the sum and the
    count, a count the count, a min or max only that extreme. A store that pays per part read
    (InfluxDB 1.x: per aggregate call) asks for these only; the others stay None."""
    want: dict[str, set[int]] = {}
    for agg, f in q.aggregates:
        want.setdefault(f, set()).update(_PARTS_OF.get(agg, ()))
    return {f: tuple(sorted(want[f])) for f in sorted(want)}


# A piece's row of parts: (bucket, group tags, parts), the parts flat: (sum, count, min, max)
# of each field of needed_parts(q) in its order, four slots a field.
PartRow = tuple[int | None, tuple[str, ...], list[float | None]]


def merge(q: AggregateQuery, parts: Iterable[PartRow]) -> list[Row]:
    """Combine rows of parts (see :data:`PartRow`) into ``q``'s rows. The parts lists are
    merge's to change: the first row of a bucket and group takes the others in."""
    at = {f: 4 * k for k, f in enumerate(needed_parts(q))}
    width = 4 * len(at)
    acc: dict[tuple[int | None, tuple[str, ...]], list[float | None]] = {}
    for bucket, group, flat in parts:
        key = (bucket, group)
        have = acc.get(key)
        if have is None:
            acc[key] = flat
            continue
        for i in range(0, width, 4):
            have[i] = _add(have[i], flat[i])
            have[i + 1] = _add(have[i + 1], flat[i + 1])
            have[i + 2] = _pick(min, have[i + 2], flat[i + 2])
            have[i + 3] = _pick(max, have[i + 3], flat[i + 3])
    names = [(column(agg, f), _FINISH[agg], at[f]) for agg, f in q.aggregates]
    group_by = q.group_by
    out: list[Row] = []
    for (bucket, group), flat in sorted(acc.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
        if not any(_present(flat, i) for i in range(0, width, 4)):
            continue  # no raw value behind this group: the contract leaves it out
        out.append(Row(bucket, dict(zip(group_by, group, strict=True)),
                       {name: fin(flat, i) for name, fin, i in names}))
    return out


Parts = Sequence[float | None]


def _present(p: Parts, i: int = 0) -> bool:
    """Whether a value stands behind the parts at ``i``: a count above 0, or an extreme (when
    only the extremes were read)."""
    return p[i] is not None or bool(p[i + 1]) or p[i + 2] is not None or p[i + 3] is not None


def _add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else a + b


def _pick(fn: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else fn(a, b)


def _finish_sum(p: Parts, i: int) -> float | None:
    s, n = p[i], p[i + 1]
    if s is None or isinstance(s, str) or (n is not None and not n):
        return None
    return float(s)


def _finish_mean(p: Parts, i: int) -> float | None:
    s, n = p[i], p[i + 1]
    if not n or s is None:
        return None
    return s / n


def _finish_count(p: Parts, i: int) -> float | None:
    return float(p[i + 1] or 0)


def _finish_min(p: Parts, i: int) -> float | None:
    v = p[i + 2]
    return None if v is None or isinstance(v, str) else float(v)


def _finish_max(p: Parts, i: int) -> float | None:
    v = p[i + 3]
    return None if v is None or isinstance(v, str) else float(v)


# One aggregate from a field's combined parts (the parts, the offset of its four slots); None
# where the field had no value. A sum or mean needs a count above 0; an extreme stands for
# itself (its count may not have been read); text has no sum or extremes. Looked up once a query.
_FINISH: dict[str, Callable[[Parts, int], float | None]] = {
    "sum": _finish_sum, "mean": _finish_mean, "count": _finish_count, "min": _finish_min,
    "max": _finish_max}


def bucket_of(time_ns: int, bucket_s: int | None) -> int | None:
    """The start of the epoch-aligned bucket holding ``time_ns`` (None without buckets)."""
    if bucket_s is None:
        return None
    width = bucket_s * NS
    return time_ns // width * width
