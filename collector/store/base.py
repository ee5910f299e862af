"""The store contract: write points, and answer aggregate queries pushed down to the backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from collector.schema import Point

Aggregate = Literal["sum", "mean", "max", "min", "count", "last"]
AGGREGATES: tuple[str, ...] = ("sum", "mean", "max", "min", "count", "last")


@dataclass(frozen=True)
class AggregateQuery:
    """A windowed aggregate over one measurement, grouped by tags and optionally by time buckets.

    Every backend runs it inside the store (SQL ``GROUP BY`` on SQLite,
    InfluxQL ``GROUP BY time(..)`` on InfluxDB): the read side never pulls raw
    points for a fleet-wide view. The window is ``[start_ns, end_ns)``. Time
    buckets are aligned to multiples of ``bucket_s`` since the Unix epoch (as
    InfluxDB does), and empty buckets are left out.
    """

    measurement: str
    # (aggregate, field) pairs; each result column is named f"{agg}_{field}".
    aggregates: tuple[tuple[Aggregate, str], ...]
    start_ns: int
    end_ns: int
    group_by: tuple[str, ...] = ()
    bucket_s: int | None = None
    # Equality filters on tags: {"host": "node-1"}; a tuple value means "any of".
    where: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise ValueError(
                f"end_ns: must be after start_ns, got start={self.start_ns} end={self.end_ns}"
            )
        if not self.aggregates:
            raise ValueError("aggregates: at least one (aggregate, field) pair is needed")
        for agg, _ in self.aggregates:
            if agg not in AGGREGATES:
                raise ValueError(f"aggregate: unknown {agg!r}; choose one of {AGGREGATES}")
        if self.bucket_s is not None and self.bucket_s <= 0:
            raise ValueError(f"bucket_s: must be positive, got {self.bucket_s!r}")


@dataclass(frozen=True, slots=True)
class Row:
    """One result row: bucket start (None without time buckets), group tags, aggregate values.

    A value is None where the group had no value for that field.
    """

    time_ns: int | None
    tags: Mapping[str, str]
    values: Mapping[str, float | None]


def column(agg: str, field_name: str) -> str:
    return f"{agg}_{field_name}"


@runtime_checkable
class Sink(Protocol):
    """Where points go. ``write`` raises StoreUnavailable (retry later) or StoreRejected (drop)."""

    def write(self, points: Sequence[Point]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Store(Sink, Protocol):
    """A sink that can also be read: what analytics talks to, through analytics.queries only."""

    url: str

    def query(self, q: AggregateQuery) -> list[Row]: ...

    def tag_values(
        self, measurement: str, tag: str, start_ns: int, end_ns: int
    ) -> list[str]:
        """Distinct values of one tag in a window, sorted."""
        ...

    def time_range(self, measurement: str) -> tuple[int, int] | None:
        """(first, last) point time of a measurement, or None when it holds no point."""
        ...
