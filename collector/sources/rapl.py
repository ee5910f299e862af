"""RAPL CPU energy from Linux powercap sysfs (Intel and AMD): every package and sub-domain, wrap-safe."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from collector.counters import CounterState, CounterTracker, QualityTracker, quality_point
from collector.errors import ConfigError, SourceUnavailable
from collector.logutil import LogOnce
from collector.schema import Point, point
from collector.sources.base import Probe, Tick

log = logging.getLogger("wattlens.sources.rapl")

DEFAULT_ROOT = "/sys/class/powercap"
# Used for the wrap-time estimate when a zone states no power limit (AMD zones
# usually do not). Deliberately high: overestimating power only shortens the
# interval we accept.
DEFAULT_MAX_POWER_W = 500.0

ReadText = Callable[[Path], str]

_ZONE_RE = re.compile(r"^(?P<prefix>[a-z-]+rapl[a-z-]*):(?P<ids>\d+(?::\d+)*)$")
_ADDITIVE_RE = re.compile(r"^package-\d+(/dram)?$|^dram$")


def read_sysfs(path: Path) -> str:
    """Read one small sysfs attribute (the default ``read_text`` at the hardware boundary)."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def is_additive_cpu_domain(domain: str) -> bool:
    """True for the ``cpu`` domains that add up to a host's CPU energy without double counting.

    RAPL sub-domains ``core``, ``uncore`` and ``gpu`` lie inside their package;
    ``psys`` covers the whole platform; ``dram`` is outside the package. The CPU
    estimate uses ``package-N`` too; hwmon rails (``driver/label``) are informative.
    """
    return bool(_ADDITIVE_RE.match(domain))


def permission_hint(path: Path) -> str:
    """The one-line explanation for an unreadable ``energy_uj``."""
    return (
        f"{path} is readable by root only since Linux 5.10 (PLATYPUS, CVE-2020-8694): "
        "run the agent as root, or grant its group read access with a udev rule or a "
        "sysfs.conf entry (`mode class/powercap/intel-rapl:0/energy_uj = 0440`; docs/sensors.md)"
    )


@dataclass
class _Zone:
    """One powercap zone: a package or a sub-domain."""

    zone_id: str  # directory name, e.g. intel-rapl:0:2
    domain: str  # tag value, e.g. package-0/dram
    path: Path
    max_range_uj: float | None
    max_power_w: float
    tracker: CounterTracker
    quality: QualityTracker
    last_mono_s: float | None = None
    peak_power_w: float = 0.0
    missing: bool = False

    def wrap_time_s(self) -> float | None:
        """Seconds the counter takes to wrap at the highest power we expect, or None if it never wraps."""
        if self.max_range_uj is None:
            return None
        power_w = max(self.max_power_w, self.peak_power_w)
        return self.max_range_uj / 1e6 / power_w


@dataclass
class RaplSource:
    """Reads ``energy_uj`` of every powercap RAPL zone and emits ``cpu`` points (method=counter).

    Domain tags: a top-level zone is named by its ``name`` file (``package-0``,
    ``psys``); a sub-zone by its parent and its own name (``package-0/dram``,
    ``package-0/core``). ``power_w`` is the energy delta over the monotonic time
    delta; ``energy_j`` is the increment since the previous point, wrap-safe.
    """

    host: str
    root: Path = field(default_factory=lambda: Path(DEFAULT_ROOT))
    interval_s: float | None = None
    quality_interval_s: float = 60.0
    read_text: ReadText = read_sysfs
    name: str = "rapl"
    counter_state: CounterState | None = None  # saved readings: no energy lost across restarts

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.interval_s is not None and not self.interval_s > 0:
            raise ConfigError(f"interval_s: must be positive, got {self.interval_s!r}")
        self._zones: list[_Zone] | None = None
        self._warn = LogOnce(log)

    # --- discovery ------------------------------------------------------------
    def _discover(self) -> list[_Zone]:
        if not self.root.is_dir():
            raise SourceUnavailable(
                f"{self.root} not present (not Linux, a VM without RAPL, or the intel_rapl "
                "powercap driver is not loaded: modprobe intel_rapl_msr)"
            )
        found: list[tuple[str, tuple[int, ...], Path]] = []
        for entry in self.root.iterdir():
            m = _ZONE_RE.match(entry.name)
            if m:
                ids = tuple(int(x) for x in m["ids"].split(":"))
                found.append((m["prefix"], ids, entry))
        if not found:
            raise SourceUnavailable(f"no RAPL zones (intel-rapl:*) in {self.root}")
        # MSR zones first so an MMIO zone that mirrors one (intel-rapl-mmio:0 is
        # package-0 again on recent Intel laptops) is recognised and skipped.
        found.sort(key=lambda f: (f[0] != "intel-rapl", f[0], f[1]))
        names: dict[tuple[str, int], str] = {}
        zones: list[_Zone] = []
        seen: set[str] = set()
        for prefix, ids, path in found:
            try:
                own = self.read_text(path / "name").strip()
            except OSError:
                continue  # a zone without a readable name is not one we can label
            if len(ids) == 1:
                names[(prefix, ids[0])] = own
                domain = own
            else:
                parent = names.get((prefix, ids[0]), f"{prefix}:{ids[0]}")
                domain = f"{parent}/{own}"
            if domain in seen:
                if prefix != "intel-rapl":
                    continue  # MMIO mirror of an MSR zone: counting it would double the energy
                domain = f"{domain}@{path.name}"
            seen.add(domain)
            max_range = self._read_float(path / "max_energy_range_uj")
            tracker = CounterTracker(max_value=max_range)
            zone = _Zone(
                zone_id=path.name, domain=domain, path=path, max_range_uj=max_range,
                max_power_w=self._max_power_w(path), tracker=tracker,
                quality=QualityTracker(interval_s=self.quality_interval_s),
            )
            tracker.max_rate_per_s = zone.max_power_w * 1e6
            zones.append(zone)
        if not zones:
            raise SourceUnavailable(f"no readable RAPL zone names under {self.root}")
        return zones

    def _read_float(self, path: Path) -> float | None:
        try:
            value = float(self.read_text(path).strip())
        except (OSError, ValueError):
            return None
        return value if value > 0 else None

    def _max_power_w(self, path: Path) -> float:
        """Highest power a zone may draw, from its constraints (PL1, PL2, max power), else the default."""
        best_uw = 0.0
        for pattern in ("constraint_*_max_power_uw", "constraint_*_power_limit_uw"):
            for attr in path.glob(pattern):
                best_uw = max(best_uw, self._read_float(attr) or 0.0)
        return best_uw / 1e6 if best_uw > 0 else DEFAULT_MAX_POWER_W

    def _ensure(self) -> list[_Zone]:
        if self._zones is None:
            zones = self._discover()
            self._check_readable(zones)
            self._check_interval(zones)
            self._zones = zones
        return self._zones

    def _check_readable(self, zones: list[_Zone]) -> None:
        denied: Path | None = None
        readable = 0
        for zone in zones:
            try:
                float(self.read_text(zone.path / "energy_uj").strip())
            except PermissionError:
                denied = denied or zone.path / "energy_uj"
            except (OSError, ValueError):
                continue
            else:
                readable += 1
        if readable == 0:
            if denied is not None:
                raise SourceUnavailable(permission_hint(denied))
            raise SourceUnavailable(f"no readable energy_uj under {self.root}")

    def _check_interval(self, zones: list[_Zone]) -> None:
        """Refuse an interval so long that a counter could wrap twice between samples (AMD: minutes)."""
        if self.interval_s is None:
            return
        for zone in zones:
            safe_s = zone.tracker.safe_interval_s()
            if safe_s is not None and self.interval_s > safe_s:
                wrap_s = zone.wrap_time_s() or 0.0
                raise ConfigError(
                    f"interval_s: {self.interval_s:g} s is too long for RAPL zone {zone.domain}, "
                    f"whose counter wraps every {wrap_s:.0f} s at {zone.max_power_w:.0f} W: "
                    f"use an interval of at most {safe_s:.0f} s"
                )

    # --- Source protocol --------------------------------------------------------
    def probe(self) -> Probe:
        try:
            zones = self._ensure()
        except (SourceUnavailable, ConfigError) as exc:
            return Probe.skipped(str(exc))
        packages = sum(1 for z in zones if "/" not in z.domain and z.domain.startswith("package"))
        wraps = [w for w in (z.wrap_time_s() for z in zones) if w is not None]
        wrap = f", shortest wrap {min(wraps) / 60:.0f} min at max power" if wraps else ""
        domains = ", ".join(z.domain for z in zones)
        return Probe.found(f"found {packages} package(s): {domains}{wrap}")

    def sample(self, tick: Tick) -> list[Point]:
        zones = self._ensure()
        points: list[Point] = []
        for zone in zones:
            p = self._sample_zone(zone, tick)
            if p is not None:
                points.append(p)
            window = zone.quality.poll(tick.mono_s, zone.tracker.stats, not zone.missing)
            if window is not None:
                points.append(quality_point(self.host, self.name, zone.domain, window, tick.wall_ns))
        return points

    def _sample_zone(self, zone: _Zone, tick: Tick) -> Point | None:
        energy_path = zone.path / "energy_uj"
        try:
            reading = float(self.read_text(energy_path).strip())
        except PermissionError:
            self._warn.warning(zone.domain, f"rapl: {permission_hint(energy_path)}")
            return None
        except (OSError, ValueError) as exc:
            # The zone vanished (driver unloaded, CPU offlined) or returned junk:
            # forget the last reading so its return is never mistaken for a wrap.
            if not zone.missing:
                zone.quality.lost()
            zone.missing = True
            zone.tracker.forget()
            zone.last_mono_s = None
            self._warn.warning(zone.domain, f"rapl: {energy_path} unreadable: {exc}")
            return None
        if zone.missing:
            zone.missing = False
            self._warn.clear(zone.domain, f"rapl: {energy_path} readable again")
        key = f"rapl:{zone.zone_id}"
        if zone.tracker.last is None and self.counter_state is not None:
            saved = self.counter_state.restore(key)
            if saved is not None and tick.wall_ns / 1e9 > saved[1]:
                # The agent restarted: count the energy used while it was down.
                zone.tracker.last = saved[0]
                zone.last_mono_s = tick.mono_s - (tick.wall_ns / 1e9 - saved[1])
        if self.counter_state is not None:
            self.counter_state.remember(key, reading, tick.wall_ns / 1e9)
        elapsed_s = None if zone.last_mono_s is None else tick.mono_s - zone.last_mono_s
        zone.last_mono_s = tick.mono_s
        gaps_before = zone.tracker.stats.gaps
        delta_uj = zone.tracker.update(reading, elapsed_s)
        if zone.tracker.stats.gaps != gaps_before:
            self._warn.warning(
                f"{zone.domain} gap",
                f"rapl: {zone.domain}: {elapsed_s:.0f} s between samples is longer than the "
                f"counter covers safely ({zone.tracker.safe_interval_s() or 0:.0f} s); "
                "that interval's energy is dropped: sample more often",
            )
        if delta_uj is None or elapsed_s is None or elapsed_s <= 0:
            return None
        energy_j = delta_uj / 1e6
        power_w = energy_j / elapsed_s
        zone.peak_power_w = max(zone.peak_power_w, power_w)
        if zone.max_range_uj is not None:
            zone.tracker.max_rate_per_s = max(zone.max_power_w, zone.peak_power_w) * 1e6
        return point(
            "cpu",
            {"host": self.host, "domain": zone.domain, "method": "counter"},
            {"power_w": power_w, "energy_j": energy_j},
            tick.wall_ns,
        )

    def domains(self) -> list[str]:
        """Domain tags found (after a successful probe)."""
        return [z.domain for z in self._zones or []]

    def close(self) -> None:
        self._zones = None


def from_options(
    host: str,
    root: str = DEFAULT_ROOT,
    interval_s: float | None = None,
    quality_interval_s: float = 60.0,
    counter_state: CounterState | None = None,
) -> RaplSource:
    """Registry factory: ``root`` is the powercap directory; ``interval_s`` the agent's interval."""
    return RaplSource(host=host, root=Path(root), interval_s=interval_s,
                      quality_interval_s=quality_interval_s, counter_state=counter_state)
