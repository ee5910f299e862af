"""Counter deltas with wrap-around and reset, trapezoid integration of power, and energy cross-checks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from collector.atomicfile import replace_text
from collector.schema import Point, point

# Measurement of the data-quality points every real sensor emits (docs/sensors.md).
QUALITY_MEASUREMENT = "quality"


@dataclass
class CounterStats:
    """What happened to a counter so far; exported as data-quality signals.

    ``gaps`` counts intervals dropped because they were longer than the counter
    can cover without wrapping more than once (see ``CounterTracker.max_rate_per_s``).
    """

    wraps: int = 0
    resets: int = 0
    gaps: int = 0


@dataclass
class CounterTracker:
    """Turns successive readings of a monotonically increasing hardware counter into increments.

    ``max_value`` is the value at which the counter wraps to 0 (RAPL's
    ``max_energy_range_uj``); ``None`` means it never wraps (NVML's 64-bit mJ
    counter). A reading below the previous one is a wrap when ``max_value`` is
    known and the wrapped delta is plausible, otherwise a reset (driver reload):
    then the increment is unknown and ``update`` returns ``None`` rather than a
    negative or double-counted value.

    ``max_rate_per_s`` (e.g. the highest plausible power in counter units per
    second) lets ``update`` refuse an interval so long that the counter may have
    wrapped more than once: AMD's RAPL counter wraps in minutes.
    """

    max_value: float | None = None
    # A wrapped delta larger than this fraction of the range is treated as a
    # reset instead: a real wrap between two samples leaves a small delta.
    plausible_wrap_fraction: float = 0.5
    max_rate_per_s: float | None = None
    last: float | None = None
    stats: CounterStats = field(default_factory=CounterStats)

    def safe_interval_s(self) -> float | None:
        """Longest interval between readings whose increment can be trusted, or None if unbounded."""
        if self.max_value is None or not self.max_rate_per_s or self.max_rate_per_s <= 0:
            return None
        return self.plausible_wrap_fraction * self.max_value / self.max_rate_per_s

    def update(self, reading: float, elapsed_s: float | None = None) -> float | None:
        """Feed one reading; return the increment since the previous one, or None.

        ``elapsed_s`` is the time since the previous reading; when it exceeds
        :meth:`safe_interval_s` the increment is ambiguous and is dropped (counted in ``gaps``).
        """
        if not math.isfinite(reading) or reading < 0:
            return None
        previous, self.last = self.last, reading
        if previous is None:
            return None
        safe_s = self.safe_interval_s()
        if elapsed_s is not None and safe_s is not None and elapsed_s > safe_s:
            self.stats.gaps += 1
            return None
        if reading >= previous:
            delta = reading - previous
            return delta if math.isfinite(delta) else None
        if self.max_value is not None:
            wrapped = self.max_value - previous + reading
            if math.isfinite(wrapped) and 0 <= wrapped <= self.max_value * self.plausible_wrap_fraction:
                self.stats.wraps += 1
                return wrapped
        self.stats.resets += 1
        return None

    def forget(self) -> None:
        """Drop the last reading (the device vanished): the next reading starts afresh, never a wrap."""
        self.last = None


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
        energy_j = (prev_p + power_w) / 2.0 * (time_s - prev_t)
        return energy_j if math.isfinite(energy_j) else None

    def forget(self) -> None:
        """Drop the last sample, so a gap (lost device) is not integrated across."""
        self.last_time_s = None
        self.last_power_w = None


def relative_difference(measured: float, reference: float) -> float | None:
    """``(measured - reference) / reference``, or None when the reference is not positive."""
    if not (math.isfinite(measured) and math.isfinite(reference)) or reference <= 0:
        return None
    return (measured - reference) / reference


@dataclass(frozen=True, slots=True)
class QualityWindow:
    """One closed data-quality window of a device: see docs/sensors.md, measurement ``quality``."""

    window_s: float
    counter_j: float | None
    integrated_j: float | None
    energy_check_rel_diff: float | None
    counter_wraps: int
    counter_resets: int
    counter_gaps: int
    device_lost: int
    device_available: bool

    def fields(self) -> dict[str, float | None]:
        """The fields of a ``quality`` point; None (not measured) is left out by ``point()``."""
        return {
            "window_s": self.window_s,
            "check_counter_j": self.counter_j,
            "check_integrated_j": self.integrated_j,
            "energy_check_rel_diff": self.energy_check_rel_diff,
            "counter_wraps": float(self.counter_wraps),
            "counter_resets": float(self.counter_resets),
            "counter_gaps": float(self.counter_gaps),
            "device_lost": float(self.device_lost),
            "device_available": 1.0 if self.device_available else 0.0,
        }


@dataclass
class QualityTracker:
    """Accumulates one device's data-quality signals and closes a window every ``interval_s``.

    The energy cross-check compares counter energy with integrated power over
    the intervals where both exist, so an interval missing one of them does
    not bias the ratio: ``energy_check_rel_diff = (integrated - counter) / counter``.
    Event counts (wraps, resets, gaps, lost) are increments within the window.
    """

    interval_s: float = 60.0
    started_s: float | None = None
    counter_j: float = 0.0
    integrated_j: float = 0.0
    paired_intervals: int = 0
    device_lost: int = 0
    _seen: CounterStats = field(default_factory=CounterStats)

    def add_energy(self, counter_j: float | None, integrated_j: float | None) -> None:
        """Record one interval's energy by both methods; only pairs count toward the check."""
        if counter_j is None or integrated_j is None:
            return
        if not (math.isfinite(counter_j) and math.isfinite(integrated_j)):
            return
        self.counter_j += counter_j
        self.integrated_j += integrated_j
        self.paired_intervals += 1

    def lost(self) -> None:
        """Record that the device was lost (or vanished) once."""
        self.device_lost += 1

    def poll(self, now_s: float, stats: CounterStats | None, available: bool) -> QualityWindow | None:
        """Start the window on the first call; return the closed window once ``interval_s`` passed."""
        if self.started_s is None:
            self.started_s = now_s
            if stats is not None:
                self._seen = CounterStats(stats.wraps, stats.resets, stats.gaps)
            return None
        elapsed_s = now_s - self.started_s
        if elapsed_s < self.interval_s:
            return None
        current = stats if stats is not None else CounterStats()
        paired = self.paired_intervals > 0
        window = QualityWindow(
            window_s=elapsed_s,
            counter_j=self.counter_j if paired else None,
            integrated_j=self.integrated_j if paired else None,
            energy_check_rel_diff=(
                relative_difference(self.integrated_j, self.counter_j) if paired else None
            ),
            counter_wraps=max(0, current.wraps - self._seen.wraps),
            counter_resets=max(0, current.resets - self._seen.resets),
            counter_gaps=max(0, current.gaps - self._seen.gaps),
            device_lost=self.device_lost,
            device_available=available,
        )
        self.started_s = now_s
        self.counter_j = self.integrated_j = 0.0
        self.paired_intervals = 0
        self.device_lost = 0
        self._seen = CounterStats(current.wraps, current.resets, current.gaps)
        return window


def quality_point(host: str, source: str, device: str, window: QualityWindow, time_ns: int) -> Point:
    """A ``quality`` point (tags host, source, device) for one closed window."""
    return point(QUALITY_MEASUREMENT, {"host": host, "source": source, "device": device},
                 window.fields(), time_ns)


def boot_id(proc_root: str | Path = "/proc") -> str:
    """This boot's id: hardware counters restart at boot, so saved readings from another boot are void."""
    try:
        return (Path(proc_root) / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class CounterState:
    """The last reading of each hardware counter, saved across agent restarts.

    After a crash or SIGKILL, the first reading of a counter is compared with
    the saved one instead of merely priming it, so the energy used while the
    agent was down is counted once, in the first point after the restart, and
    never lost. Readings from another boot are ignored (counters restart at
    boot); a reading below the saved one is a reset as usual, and a gap longer
    than a wrapping counter covers is dropped as usual.

    Sources :meth:`remember` each reading; the agent takes a :meth:`snapshot`
    after each round and :meth:`save`s it only once that round's points are
    stored, so a restart never counts again energy that is already stored, nor
    skips energy whose points were lost with the process. Written atomically.
    """

    def __init__(self, path: str | Path | None, *, boot: str | None = None) -> None:
        self.path = Path(path) if path else None
        self.boot = boot_id() if boot is None else boot
        self._readings: dict[str, tuple[float, float]] = {}
        self._dirty = False
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict) and data.get("boot_id") == self.boot:
                for key, value in (data.get("readings") or {}).items():
                    if (isinstance(value, list) and len(value) == 2
                            and all(isinstance(v, (int, float)) for v in value)):
                        self._readings[str(key)] = (float(value[0]), float(value[1]))

    def restore(self, key: str) -> tuple[float, float] | None:
        """(reading, wall time s) saved for ``key`` by an earlier run of this boot, once."""
        return self._readings.pop(key, None) if self.path is not None else None

    def remember(self, key: str, reading: float, wall_s: float) -> None:
        if self.path is None:
            return
        self._readings[key] = (reading, wall_s)
        self._dirty = True

    def snapshot(self) -> dict[str, tuple[float, float]] | None:
        """The readings as of now, or None when nothing changed since the last snapshot."""
        if self.path is None or not self._dirty:
            return None
        self._dirty = False
        return dict(self._readings)

    def save(self, snapshot: dict[str, tuple[float, float]]) -> None:
        """Persist a snapshot (temp file + rename, so a crash leaves the old or the new file)."""
        if self.path is None:
            return
        replace_text(self.path, json.dumps({"boot_id": self.boot, "readings": {
            k: [r, t] for k, (r, t) in sorted(snapshot.items())}}), durable=False)
