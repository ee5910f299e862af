"""PromQL for the store contract: AggregateQuery -> expressions, and their answers -> Rows.

Every aggregate is computed by the engine over each bucket's range: a counter
field's SUM is ``increase()`` (reset-aware), a gauge's MEAN is
``sum_over_time / count_over_time`` over every sample (so it equals SQL's AVG),
MAX/MIN are ``max_over_time``/``min_over_time``. Rows coming from different
metrics (GPU energy from dcgm-exporter, tokens from vLLM) are joined on the
measurement's key tags (prommap.KEYS), then rolled up to the requested groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import compress

from collector.store.base import AggregateQuery, Row, column
from collector.store.prommap import KEYS, MeasurementMap, Source

NS = 1_000_000_000
# Component kinds: how partial results of one column combine (mean keeps a sum and a count).
Op = str  # "sum" | "max" | "min" | "mean" (divided in the engine: never combined)


@dataclass(frozen=True)
class Expr:
    """One PromQL expression to evaluate per bucket; ``part`` names the column component it feeds."""

    text: str  # with RANGE standing for the bucket's range, e.g. "[3600000ms]"
    source: Source
    part: str  # column, or column + "#s"/"#c" for a mean's sum and count
    op: Op


RANGE = "{{RANGE}}"


def quote(value: str) -> str:
    """A PromQL double-quoted string literal (backslash and quote escaped, newlines too)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(src: Source, where: Mapping[str, str | tuple[str, ...]]) -> str | None:
    """``metric{matchers}`` for ``src`` under ``where``; None when the source cannot match it."""
    matchers: list[str] = [src.matchers] if src.matchers else []
    for tag, want in sorted(where.items()):
        values = (want,) if isinstance(want, str) else tuple(want)
        if not values:
            return None
        if tag in src.labels:
            label = src.labels[tag]
            if len(values) == 1:
                matchers.append(f"{label}={quote(values[0])}")
            else:
                matchers.append(f"{label}=~{quote('|'.join(re.escape(v) for v in values))}")
        elif tag in src.constants:
            if src.constants[tag] not in values:
                return None
        else:
            return None  # the metric has no such label: it cannot answer a filter on it
    matchers.insert(0, f"__name__={quote(src.metric)}")
    return "{" + ",".join(matchers) + "}"


def _by(labels: Iterable[str]) -> str:
    names = sorted(set(labels))
    return f" by ({','.join(names)})" if names else ""


def _scaled(text: str, scale: float) -> str:
    return text if scale == 1.0 else f"({text}) * {scale!r}"


def field_exprs(agg: str, field_name: str, src: Source, sel: str, labels: tuple[str, ...],
                alone: bool = False) -> list[Expr]:
    """The expressions computing ``agg(field)`` from one source, grouped by ``labels``.

    ``alone``: this source is the field's only one and its groups are the rows' own, so a
    mean is divided in the engine (one answer) instead of summing sums and counts here.
    """
    col = column(agg, field_name)
    by = _by(labels)
    rng = f"{sel}[{RANGE}]"
    if src.kind == "series":
        inner = f"count{_by((*labels, *src.distinct))} (count_over_time({rng}))"
        return [Expr(f"count{by} ({inner})", src, col, "sum")]
    if agg == "count":
        return [Expr(f"sum{by} (count_over_time({rng}))", src, col, "sum")]
    if src.kind == "counter":
        if agg != "sum":
            return []  # max/mean of an increment has no meaning here; the column stays None
        inner = f"increase({rng})"
        if src.share_by:
            share = ",".join(src.share_by)
            inner = (f"({inner} / on({share}) group_left() "
                     f"count by ({share}) (count_over_time({rng})))")
        return [Expr(_scaled(f"sum{by} ({inner})", src.scale), src, col, "sum")]
    if agg == "mean":
        total = _scaled(f"sum{by} (sum_over_time({rng}))", src.scale)
        count = f"sum{by} (count_over_time({rng}))"
        if alone:
            return [Expr(f"({total}) / ({count})", src, col, "mean")]
        return [Expr(total, src, col + "#s", "sum"), Expr(count, src, col + "#c", "sum")]
    if agg == "sum":
        return [Expr(_scaled(f"sum{by} (sum_over_time({rng}))", src.scale), src, col, "sum")]
    if agg in ("max", "min"):
        return [Expr(_scaled(f"{agg}{by} ({agg}_over_time({rng}))", src.scale), src, col, agg)]
    # last: the newest value in the bucket (of the group's largest, when several series)
    return [Expr(_scaled(f"max{by} (last_over_time({rng}))", src.scale), src, col, "max")]


@dataclass(frozen=True)
class Plan:
    """The expressions answering a query, and the tags rows are keyed by before the roll-up."""

    exprs: tuple[Expr, ...]
    group_by: tuple[str, ...]  # the query's groups, plus join keys when sources differ
    rollup: bool


def plan(q: AggregateQuery, mm: MeasurementMap) -> Plan:
    """Expressions for every (aggregate, field) of ``q`` over the mapping's sources."""
    sources = [src for _, f in q.aggregates for src in mm.fields.get(f, ())]
    # Rows need joining only when sources know different tags of the groups: a tag no
    # source knows is "" in every row alike.
    provided = {frozenset(t for t in q.group_by if t in s.labels or t in s.constants)
                for s in sources}
    covered = len(provided) <= 1
    keys = KEYS.get(q.measurement, ())
    group_by = q.group_by if covered else tuple(dict.fromkeys((*q.group_by, *keys)))
    exprs: list[Expr] = []
    for agg, field_name in q.aggregates:
        chosen = [(src, sel) for src in mm.fields.get(field_name, ())
                  if (sel := selector(src, q.where)) is not None]
        for src, sel in chosen:
            labels = tuple(src.labels[t] for t in group_by if t in src.labels)
            exprs.extend(field_exprs(agg, field_name, src, sel, labels,
                                     alone=covered and len(chosen) == 1))
    return Plan(tuple(exprs), group_by, not covered)


Tags = tuple[str | None, ...]
Key = tuple[int | None, Tags]
Column = list[float | None]


class Merger:
    """Collects engine answers into rows.

    Answers land in columns: per group (its tags) and column component, one value
    per bucket of the query's grid (None where the engine answered nothing), so a
    series answered for consecutive buckets is placed in one slice. Rows are made
    at the end, bucket by bucket, groups in tag order.
    """

    def __init__(self, q: AggregateQuery, p: Plan) -> None:
        self.q = q
        self.plan = p
        self.width = (q.bucket_s or 0) * NS
        self.k0 = q.start_ns // self.width if self.width else 0
        self.size = (q.end_ns - 1) // self.width - self.k0 + 1 if self.width else 1
        self.groups: dict[Tags, dict[str, Column]] = {}

    def _column(self, expr: Expr, metric: Mapping[str, str]) -> Column:
        src = expr.source
        tags = tuple(metric.get(src.labels[t], "") if t in src.labels else src.constants.get(t)
                     for t in self.plan.group_by)
        parts = self.groups.setdefault(tags, {})
        col = parts.get(expr.part)
        if col is None:
            col = parts[expr.part] = [None] * self.size
        return col

    def _index(self, bucket_ns: int | None) -> int:
        i = bucket_ns // self.width - self.k0 if self.width and bucket_ns is not None else 0
        if not 0 <= i < self.size:
            raise ValueError(f"bucket {bucket_ns}: outside the query's window")
        return i

    def add(self, expr: Expr, bucket_ns: int | None, metric: Mapping[str, str], value: float
            ) -> None:
        self.add_series(expr, metric, [(bucket_ns, value)])

    def add_series(self, expr: Expr, metric: Mapping[str, str],
                   points: Iterable[tuple[int | None, float]]) -> None:
        """One answered series as (bucket start, value) pairs; NaN (no samples behind it) is skipped."""
        col, op = self._column(expr, metric), expr.op
        for bucket_ns, value in points:
            if value != value:
                continue
            i = self._index(bucket_ns)
            old = col[i]
            col[i] = value if old is None else _merged(op, old, value)

    def add_run(self, expr: Expr, metric: Mapping[str, str], first_bucket_ns: int | None,
                values: list[float]) -> None:
        """One answered series with a value in each bucket from ``first_bucket_ns`` on."""
        col, op = self._column(expr, metric), expr.op
        i, n = self._index(first_bucket_ns), len(values)
        if i + n > self.size:
            raise ValueError(f"{n} buckets from {first_bucket_ns}: past the query's window")
        if col[i:i + n].count(None) == n:  # nothing there yet: the common case, one slice
            col[i:i + n] = values
            return
        for j, value in enumerate(values, i):
            old = col[j]
            col[j] = value if old is None else _merged(op, old, value)

    def result(self) -> list[Row]:
        if self.plan.rollup:
            return self._rolled_up()
        q = self.q
        cols = [(column(agg, f), agg) for agg, f in q.aggregates]
        names = [c for c, _ in cols]
        counts = {c for c, agg in cols if agg == "count"}
        starts: list[int | None] = ([(self.k0 + k) * self.width for k in range(self.size)]
                                    if self.width else [None])
        by_bucket: list[list[Row]] = [[] for _ in range(self.size)]
        empty: Column = [None] * self.size
        order = sorted((tuple(t if t is not None else "" for t in tags), tags) for tags in self.groups)
        for named_tags, tags in order:
            parts = self.groups[tags]
            final = [self._final(parts, c, agg, empty) for c, agg in cols]
            holes = [c for c, col in zip(names, final, strict=True) if c in counts and None in col]
            named = dict(zip(q.group_by, named_tags, strict=True))  # shared by the group's rows
            cells: Iterable[tuple[int, tuple[float | None, ...]]] = enumerate(zip(*final, strict=True))
            if all(None in col for col in parts.values()):  # else every bucket has a row
                nothing = (None,) * len(parts)
                cells = compress(cells, [vs != nothing for vs in zip(*parts.values(), strict=True)])
            for k, vals in cells:
                values = dict(zip(names, vals, strict=True))
                for c in holes:
                    if values[c] is None:
                        values[c] = 0.0
                by_bucket[k].append(Row(starts[k], named, values))
        return [r for rows in by_bucket for r in rows]

    @staticmethod
    def _final(parts: dict[str, Column], col: str, agg: str, empty: Column) -> Column:
        if agg == "mean" and col not in parts:
            s, c = parts.get(col + "#s"), parts.get(col + "#c")
            if s is None or c is None:
                return empty
            return [a / b if a is not None and b else None for a, b in zip(s, c, strict=True)]
        return parts.get(col, empty)

    def _rolled_up(self) -> list[Row]:
        """Rows joined on the measurement's keys, then rolled up to the groups asked for."""
        cells: dict[Key, dict[str, float]] = {}
        starts = [(self.k0 + k) * self.width if self.width else None for k in range(self.size)]
        for tags, parts in self.groups.items():
            for part, col in parts.items():
                for k, value in enumerate(col):
                    if value is not None:
                        cells.setdefault((starts[k], tags), {})[part] = value
        rows = self._joined(cells)
        final: dict[Key, dict[str, float]] = {}
        index = [self.plan.group_by.index(t) for t in self.q.group_by]
        ops = {e.part: e.op for e in self.plan.exprs}
        for (bucket, tags), comps in rows.items():
            key = (bucket, tuple(tags[i] for i in index))
            target = final.setdefault(key, {})
            for part, value in comps.items():
                _combine(target, part, ops[part], value)
        cols: list[tuple[str, str]] = [(column(agg, f), agg) for agg, f in self.q.aggregates]
        out = [self._row(bucket, tags, comps, cols) for (bucket, tags), comps in final.items()]
        out.sort(key=lambda r: (r.time_ns or 0, *(r.tags[t] for t in self.q.group_by)))
        return out

    def _joined(self, cells: dict[Key, dict[str, float]]) -> dict[Key, dict[str, float]]:
        """Rows joined on the measurement's keys; other tags taken from whichever row has them."""
        keys = KEYS.get(self.q.measurement, ())
        key_at = [i for i, t in enumerate(self.plan.group_by) if t in keys]
        joined: dict[tuple[int | None, tuple[str | None, ...]], tuple[list[str | None],
                                                                      dict[str, float]]] = {}
        ops = {e.part: e.op for e in self.plan.exprs}
        for (bucket, tags), comps in cells.items():
            jkey = (bucket, tuple(tags[i] for i in key_at))
            have = joined.get(jkey)
            if have is None:
                joined[jkey] = (list(tags), dict(comps))
                continue
            merged_tags, merged = have
            for i, v in enumerate(tags):
                if merged_tags[i] is None and v is not None:
                    merged_tags[i] = v
            for part, value in comps.items():
                _combine(merged, part, ops[part], value)
        return {(b, tuple(t)): c for (b, _), (t, c) in joined.items()}

    def _row(self, bucket: int | None, tags: tuple[str | None, ...], comps: dict[str, float],
             cols: list[tuple[str, str]]) -> Row:
        values: dict[str, float | None] = {}
        for col, agg in cols:
            if agg == "mean":
                s, c = comps.get(col + "#s"), comps.get(col + "#c")
                values[col] = s / c if s is not None and c else None
            else:
                values[col] = comps.get(col, 0.0 if agg == "count" else None)
        named = {t: (v if v is not None else "") for t, v in zip(self.q.group_by, tags,
                                                                 strict=True)}
        return Row(bucket, named, values)


def _combine(comps: dict[str, float], part: str, op: Op, value: float) -> None:
    old = comps.get(part)
    comps[part] = value if old is None else _merged(op, old, value)


def _merged(op: Op, old: float, value: float) -> float:
    if op == "sum":
        return old + value
    if op == "max":
        return max(old, value)
    if op == "min":
        return min(old, value)
    # A mean divided in the engine is one group's only answer (plan's ``alone``).
    raise ValueError(f"{op}: two answers for one group and bucket cannot be combined")
