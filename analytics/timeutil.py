"""Windows and durations: parse "24h"/"7d"/ISO times into nanosecond windows."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from collector.errors import ConfigError

NS = 1_000_000_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration_s(text: str, field: str = "duration") -> float:
    """'90s', '15m', '24h', '7d', '2w' -> seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"{field}: expected a duration like 90s, 15m, 24h or 7d, got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value <= 0:
        raise ConfigError(f"{field}: must be positive, got {text!r}")
    return value


def parse_time_ns(text: str, field: str, now_ns: int | None = None) -> int:
    """An ISO-8601 time ('2026-11-28T10:00Z'), 'now', or a duration ago ('24h')."""
    now = time.time_ns() if now_ns is None else now_ns
    text = str(text).strip()
    if text == "now":
        return now
    if _DURATION.match(text):
        return now - int(parse_duration_s(text, field) * NS)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{field}: expected an ISO time (2026-11-28T10:00Z), 'now' or a duration ago "
            f"(24h), got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Exact to the microsecond (a float timestamp × 1e9 is off by up to ~200 ns at today's
    # epoch, enough to move a window's edge past a point stamped on the minute).
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


@dataclass(frozen=True)
class Window:
    """A half-open time window [start_ns, end_ns)."""

    start_ns: int
    end_ns: int

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise ConfigError(f"window: --until must be after --since "
                              f"({fmt_time(self.start_ns)} .. {fmt_time(self.end_ns)})")

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS

    @classmethod
    def last(cls, seconds: float, end_ns: int | None = None) -> Window:
        end = time.time_ns() if end_ns is None else end_ns
        return cls(end - int(seconds * NS), end)


def fmt_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def bucket_for(window: Window, max_points: int) -> int:
    """A round bucket width (s) giving at most ``max_points`` buckets over the window."""
    raw = window.seconds / max(1, max_points)
    for step in (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                 43200, 86400):
        if step >= raw:
            return step
    return int(86400 * (raw // 86400 + 1))
