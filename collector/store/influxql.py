"""InfluxQL for the store contract: safe quoting, AggregateQuery -> SELECT, and JSON results -> Rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collector.store.base import AggregateQuery, Row, column

# AggregateQuery aggregate -> InfluxQL function.
FUNCTIONS: dict[str, str] = {
    "sum": "sum", "mean": "mean", "max": "max", "min": "min", "count": "count", "last": "last",
}


def quote_ident(name: str) -> str:
    """A double-quoted InfluxQL identifier; any text is safe inside (backslash and quote escaped)."""
    _check_text("identifier", name)
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """A single-quoted InfluxQL string literal; quotes and backslashes cannot end it early."""
    _check_text("string literal", value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_text(what: str, text: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"InfluxQL {what}: expected a string, got {text!r}")
    # InfluxQL strings cannot carry a raw newline; no stored tag can hold one either.
    if "\n" in text or "\r" in text:
        raise ValueError(f"InfluxQL {what}: newlines are not allowed, got {text!r}")


def source(measurement: str, database: str | None = None, rp: str | None = None) -> str:
    """``"db"."rp"."measurement"``, or shorter when database or retention policy is implied."""
    if rp and database:
        return f"{quote_ident(database)}.{quote_ident(rp)}.{quote_ident(measurement)}"
    if rp:
        return f"{quote_ident(rp)}.{quote_ident(measurement)}"
    return quote_ident(measurement)


def time_window(start_ns: int, end_ns: int) -> str:
    """``[start, end)`` in InfluxQL: bare integers compared with ``time`` are nanoseconds."""
    return f"time >= {int(start_ns)} AND time < {int(end_ns)}"


def tag_filter(where: Mapping[str, str | tuple[str, ...]]) -> str | None:
    """Equality filters on tags, ANDed; a tuple means any of. None if some tuple is empty."""
    clauses: list[str] = []
    for tag, want in sorted(where.items()):
        values = (want,) if isinstance(want, str) else tuple(want)
        if not values:
            return None
        ors = [f"{quote_ident(tag)}::tag = {quote_string(v)}" for v in values]
        clauses.append(ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")")
    return " AND ".join(clauses)


def aggregate(q: AggregateQuery, src: str) -> str | None:
    """The SELECT that answers ``q`` inside InfluxDB; None when ``q`` can match nothing."""
    filters = tag_filter(q.where)
    if filters is None:
        return None
    select = ", ".join(
        f"{FUNCTIONS[agg]}({quote_ident(field)}::field) AS {quote_ident(column(agg, field))}"
        for agg, field in q.aggregates
    )
    where = time_window(q.start_ns, q.end_ns) + (f" AND {filters}" if filters else "")
    groups: list[str] = []
    if q.bucket_s is not None:
        # InfluxDB aligns time() buckets to multiples of the interval since the epoch.
        groups.append(f"time({int(q.bucket_s)}s)")
    groups.extend(quote_ident(t) for t in q.group_by)
    text = f"SELECT {select} FROM {src} WHERE {where}"
    if groups:
        text += " GROUP BY " + ", ".join(groups)
    if q.bucket_s is not None:
        text += " fill(none)"  # empty buckets are left out, as the contract says
    return text


def statement_series(response: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The series of the first statement of a /query response; raises ValueError on its error."""
    results = response.get("results") or []
    if not results:
        error = response.get("error")
        if error:
            raise ValueError(str(error))
        return []
    first = results[0]
    if first.get("error"):
        raise ValueError(str(first["error"]))
    series: list[Mapping[str, Any]] = first.get("series") or []
    return series


def chunked_series(chunks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The series of a chunked /query answer (``chunked=true``), a series cut across chunks
    joined again; raises ValueError on an error in any chunk.

    Reads ask for chunks because a plain answer is cut at the server's ``[http]
    max-row-limit`` (10,000 rows by default in 1.2.0-1.2.1), marked only by ``partial`` on a
    series, which 1.x also sets on complete answers of over 10,000 rows (influxdb#8014): a
    sum over the rows that fit would be silently wrong. Chunks are never cut by that limit.
    """
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        for s in statement_series(chunk):
            last = out[-1] if out else None
            if (last is not None and last.get("partial") and last.get("name") == s.get("name")
                    and last.get("tags") == s.get("tags")
                    and last.get("columns") == s.get("columns")):
                last.setdefault("values", []).extend(s.get("values") or [])
                last["partial"] = s.get("partial", False)
            else:
                out.append(dict(s))
    return out


def rows(q: AggregateQuery, series: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Rows in the store contract's shape and order (bucket, then group tags)."""
    names = [column(agg, field) for agg, field in q.aggregates]
    counts = {column(agg, field) for agg, field in q.aggregates if agg == "count"}
    out: list[Row] = []
    for s in series:
        tags_in = s.get("tags") or {}
        tags = {t: str(tags_in.get(t, "")) for t in q.group_by}
        cols: list[str] = list(s.get("columns") or [])
        index = {c: i for i, c in enumerate(cols)}
        for raw in s.get("values") or []:
            values: dict[str, float | None] = {}
            for name in names:
                i = index.get(name)
                v = raw[i] if i is not None else None
                if v is None and name in counts:
                    v = 0  # InfluxDB answers null where SQL's COUNT answers 0
                values[name] = _num(v)
            time_ns = int(raw[index["time"]]) if q.bucket_s is not None else None
            out.append(Row(time_ns, tags, values))
    out.sort(key=lambda r: (r.time_ns or 0, *(r.tags[t] for t in q.group_by)))
    return out


def _num(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None
