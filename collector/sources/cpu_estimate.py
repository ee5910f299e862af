"""CPU power estimate for hosts without a sensor: TDP x utilisation from /proc/stat above an idle floor."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from collector.errors import ConfigError, SourceUnavailable
from collector.logutil import LogOnce
from collector.schema import Point, point
from collector.sources.base import Probe, Tick

log = logging.getLogger("wattlens.sources.cpu_estimate")

DEFAULT_PROC = "/proc"
# Per package, for a CPU model not in the table: a mid-range server part.
DEFAULT_TDP_W = 150.0
# Idle power as a fraction of TDP. Cloud Carbon Footprint's per-vCPU
# coefficients (0.74 W idle, 3.5 W at full load) give about 0.21.
DEFAULT_IDLE_FRACTION = 0.2

# (pattern on /proc/cpuinfo "model name", TDP in W per package), first match wins.
# Vendor datasheet TDPs (default TDP where a configurable range exists).
TDP_TABLE_W: tuple[tuple[str, float], ...] = (
    (r"EPYC 9754\b", 360.0),
    (r"EPYC 9654\b", 360.0),
    (r"EPYC 9554\b", 360.0),
    (r"EPYC 9454\b", 290.0),
    (r"EPYC 9334\b", 210.0),
    (r"EPYC 7763\b", 280.0),
    (r"EPYC 7742\b", 225.0),
    (r"EPYC 7713\b", 225.0),
    (r"EPYC 7543\b", 225.0),
    (r"Xeon.*\b8592", 350.0),
    (r"Xeon.*\b8480", 350.0),
    (r"Xeon.*\b8470\b", 350.0),
    (r"Xeon.*\b8468\b", 350.0),
    (r"Xeon.*\b8462Y", 300.0),
    (r"Xeon.*\b8380\b", 270.0),
    (r"Xeon.*\b8360Y\b", 250.0),
    (r"Xeon.*\b8358\b", 250.0),
    (r"Xeon.*\b6338\b", 205.0),
    (r"Xeon.*\b8280\b", 205.0),
    (r"Xeon.*\b8260\b", 165.0),
    (r"Xeon.*\b6248R\b", 205.0),
    (r"Xeon.*\b6248\b", 150.0),
    (r"Xeon.*\b6148\b", 150.0),
)

ReadText = Callable[[Path], str]


def read_proc(path: Path) -> str:
    """Read a /proc file (the default ``read_text`` at the boundary)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def lookup_tdp_w(model: str) -> float | None:
    """TDP per package for a /proc/cpuinfo model name, or None when the table does not know it."""
    for pattern, tdp_w in TDP_TABLE_W:
        if re.search(pattern, model):
            return tdp_w
    return None


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says: model name, logical CPU -> package, and whether we run in a VM."""

    model: str
    package_of: dict[int, int]
    virtual: bool


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse /proc/cpuinfo; CPUs without ``physical id`` (ARM, some VMs) go to package 0."""
    model = ""
    package_of: dict[int, int] = {}
    virtual = False
    for block in re.split(r"\n\s*\n", text):
        info: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        if "processor" not in info or not info["processor"].isdigit():
            continue
        cpu = int(info["processor"])
        package = info.get("physical id", "0")
        package_of[cpu] = int(package) if package.isdigit() else 0
        model = model or info.get("model name", "")
        virtual = virtual or "hypervisor" in info.get("flags", "").split()
    return CpuInfo(model=model or "unknown", package_of=package_of, virtual=virtual)


def parse_stat(text: str) -> dict[int, tuple[float, float]]:
    """Per logical CPU: (busy, total) jiffies from /proc/stat.

    busy = user + nice + system + irq + softirq (guest time is inside user);
    total adds idle, iowait and steal: time the hypervisor gave to others is not our load.
    """
    out: dict[int, tuple[float, float]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        parts = line.split()
        name = parts[0][3:]
        if not name.isdigit() or len(parts) < 5:
            continue
        values = [float(x) for x in parts[1:9]] + [0.0] * (8 - len(parts[1:9]))
        user, nice, system, idle, iowait, irq, softirq, steal = values
        busy = user + nice + system + irq + softirq
        out[int(name)] = (busy, busy + idle + iowait + steal)
    return out


@dataclass
class CpuEstimateSource:
    """Estimates ``cpu`` power per package as TDP x (idle_fraction + (1 - idle_fraction) x util).

    Utilisation is the busy share of jiffies in /proc/stat since the previous
    sample, per package (CPUs mapped through ``physical id``); energy_j is that
    power times the interval. Every point has method=estimated.
    """

    host: str
    proc_root: Path = field(default_factory=lambda: Path(DEFAULT_PROC))
    tdp_w: float | None = None
    idle_fraction: float = DEFAULT_IDLE_FRACTION
    read_text: ReadText = read_proc
    name: str = "cpu-estimate"

    def __post_init__(self) -> None:
        self.proc_root = Path(self.proc_root)
        if self.tdp_w is not None and not (math.isfinite(self.tdp_w) and self.tdp_w > 0):
            raise ConfigError(f"tdp_w: must be a positive number of watts, got {self.tdp_w!r}")
        if not 0 <= self.idle_fraction <= 1:
            raise ConfigError(f"idle_fraction: must be between 0 and 1, got {self.idle_fraction!r}")
        self._info: CpuInfo | None = None
        self._package_tdp_w = self.tdp_w or DEFAULT_TDP_W
        self._tdp_from = "tdp_w option" if self.tdp_w else "default"
        self._last: tuple[float, dict[int, tuple[float, float]]] | None = None
        self._warn = LogOnce(log)

    def _ensure(self) -> CpuInfo:
        if self._info is None:
            stat_path = self.proc_root / "stat"
            try:
                parse_stat(self.read_text(stat_path))
            except OSError as exc:
                raise SourceUnavailable(f"{stat_path} not readable ({exc}): no CPU utilisation "
                                        "to estimate from") from exc
            try:
                info = parse_cpuinfo(self.read_text(self.proc_root / "cpuinfo"))
            except OSError:
                info = CpuInfo(model="unknown", package_of={}, virtual=False)
            if self.tdp_w is None:
                table_w = lookup_tdp_w(info.model)
                if table_w is not None:
                    self._package_tdp_w, self._tdp_from = table_w, "table"
            self._info = info
        return self._info

    @property
    def package_tdp_w(self) -> float:
        """TDP per package in use (after a probe or the first sample)."""
        return self._package_tdp_w

    def probe(self) -> Probe:
        try:
            info = self._ensure()
        except SourceUnavailable as exc:
            return Probe.skipped(str(exc))
        packages = len(set(info.package_of.values())) or 1
        hint = "" if self._tdp_from != "default" else "; unknown model: pass --tdp-w for a better one"
        if info.virtual:
            hint += "; virtual machine: this counts whole packages, pass --tdp-w for your share"
        return Probe.found(
            f"estimating {packages} package(s) x {self._package_tdp_w:g} W TDP "
            f"({info.model}, from {self._tdp_from}), idle floor {self.idle_fraction:.0%}{hint}"
        )

    def sample(self, tick: Tick) -> list[Point]:
        info = self._ensure()
        stat_path = self.proc_root / "stat"
        try:
            now = parse_stat(self.read_text(stat_path))
        except (OSError, ValueError) as exc:
            self._warn.warning("stat", f"cpu-estimate: {stat_path} unreadable: {exc}")
            self._last = None
            return []
        self._warn.clear("stat", f"cpu-estimate: {stat_path} readable again")
        last, self._last = self._last, (tick.mono_s, now)
        if last is None:
            return []
        last_mono_s, before = last
        elapsed_s = tick.mono_s - last_mono_s
        if elapsed_s <= 0:
            return []
        busy: dict[int, float] = {}
        total: dict[int, float] = {}
        for cpu, (b1, t1) in now.items():
            if cpu not in before:
                continue  # came online since the last sample
            b0, t0 = before[cpu]
            package = info.package_of.get(cpu, 0)
            busy[package] = busy.get(package, 0.0) + max(0.0, b1 - b0)
            total[package] = total.get(package, 0.0) + max(0.0, t1 - t0)
        points: list[Point] = []
        for package in sorted(total):
            if total[package] <= 0:
                continue
            util = min(1.0, busy[package] / total[package])
            power_w = self._package_tdp_w * (self.idle_fraction + (1 - self.idle_fraction) * util)
            points.append(point(
                "cpu",
                {"host": self.host, "domain": f"package-{package}", "method": "estimated"},
                {"power_w": power_w, "energy_j": power_w * elapsed_s, "util_pct": util * 100},
                tick.wall_ns,
            ))
        return points

    def close(self) -> None:
        self._last = None


def from_options(
    host: str,
    proc_root: str = DEFAULT_PROC,
    tdp_w: float | None = None,
    idle_fraction: float = DEFAULT_IDLE_FRACTION,
    interval_s: float | None = None,
) -> CpuEstimateSource:
    """Registry factory: ``tdp_w`` (per package) overrides the model table; ``interval_s`` is unused."""
    del interval_s
    return CpuEstimateSource(host=host, proc_root=Path(proc_root),
                             tdp_w=None if tdp_w is None else float(tdp_w),
                             idle_fraction=float(idle_fraction))
