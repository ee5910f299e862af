"""Counter deltas with wrap-around and reset, and trapezoid integration of power: shared by every source."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class CounterStats:
    """What happened to a counter so far; exported as data-quality signals."""

    wraps: int = 0
    resets: int = 0


@dataclass
class CounterTracker:
    """Turns successive readings of a monotonically increasing hardware counter into increments.

    ``max_value`` is the value at which the counter wraps to 0 (RAPL's
    ``max_energy_range_uj``); ``None`` means it never wraps (NVML's 64-bit mJ
    counter). A reading below the previous one is a wrap when ``max_value`` is
    known and the wrapped delta is plausible, otherwise a reset (driver reload):
    then the increment is unknown and ``update`` returns ``None`` rather than a
    negative or double-counted value.
    """

    max_value: float | None = None
    # A wrapped delta larger than this fraction of the range is treated as a
    # reset instead: a real wrap between two samples leaves a small delta.
    plausible_wrap_fraction: float = 0.5
    last: float | None = None
    stats: CounterStats = field(default_factory=CounterStats)

    def update(self, reading: float) -> float | None:
        """Feed one reading; return the increment since the previous one, or None."""
        if not math.isfinite(reading) or reading < 0:
            return None
        previous, self.last = self.last, reading
        if previous is None:
            return None
        if reading >= previous:
            return reading - previous
        if self.max_value is not None:
            wrapped = self.max_value - previous + reading
            if 0 <= wrapped <= self.max_value * self.plausible_wrap_fraction:
                self.stats.wraps += 1
                return wrapped
        self.stats.resets += 1
        return None


@dataclass
class PowerIntegrator:
    """Trapezoid integration of power samples into energy increments (the fallback method)."""

    last_time_s: float | None = None
    last_power_w: float | None = None

    def update(self, time_s: float, power_w: float) -> float | None:
        """Feed a power sample at a monotonic time; return joules since the previous one, or None."""
        if not math.isfinite(power_w) or power_w < 0 or not math.isfinite(time_s):
            return None
        prev_t, prev_p = self.last_time_s, self.last_power_w
        self.last_time_s, self.last_power_w = time_s, power_w
        if prev_t is None or prev_p is None or time_s <= prev_t:
            return None
        return (prev_p + power_w) / 2.0 * (time_s - prev_t)
