"""The source contract: a cheap availability probe and one method that returns points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from collector.schema import Point


@dataclass(frozen=True, slots=True)
class Tick:
    """The instant of one sampling round: UTC wall time for the points, monotonic time for deltas."""

    wall_ns: int
    mono_s: float


@dataclass(frozen=True, slots=True)
class Probe:
    """Result of :meth:`Source.probe`: whether the source can run here, and what it found or why not."""

    ok: bool
    detail: str

    @classmethod
    def found(cls, detail: str) -> Probe:
        return cls(True, detail)

    @classmethod
    def skipped(cls, reason: str) -> Probe:
        return cls(False, reason)


@runtime_checkable
class Source(Protocol):
    """A sensor family. ``sample`` must not raise for one bad device: it marks it and goes on."""

    name: str

    def probe(self) -> Probe:
        """Say cheaply whether this source works here, and why not if it does not."""
        ...

    def sample(self, tick: Tick) -> list[Point]:
        """Read every device once and return its points, time-stamped ``tick.wall_ns``."""
        ...

    def close(self) -> None:
        """Release handles (NVML shutdown, open files)."""
        ...
