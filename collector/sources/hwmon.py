"""hwmon power and energy sensors: amdgpu boards as `gpu`, CPU sockets, Jetson INA3221 rails and BMC meters as `cpu`."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from collector.counters import CounterTracker, PowerIntegrator, QualityTracker, quality_point
from collector.errors import SourceUnavailable
from collector.logutil import LogOnce
from collector.schema import FieldValue, Point, point
from collector.sources.base import Probe, Tick

log = logging.getLogger("wattlens.sources.hwmon")

DEFAULT_ROOT = "/sys/class/hwmon"

ReadText = Callable[[Path], str]

# Drivers that expose AMD's RAPL counters again: duplicates of the rapl source.
RAPL_DUPLICATE_DRIVERS = frozenset({"amd_energy", "zenergy"})
# Drivers whose inN_input (mV) and currN_input (mA) of the same N are one rail:
# power is their product (mV x mA = µW). INA3221 on Jetson has no power files.
VI_RAIL_DRIVERS = frozenset({"ina3221"})
# A per-socket energy channel of these drivers is the RAPL package, named as such.
_SOCKET_LABEL_RE = re.compile(r"^E?socket\s*(\d+)$", re.IGNORECASE)
_CORE_LABEL_RE = re.compile(r"^E?core\s*\d+$", re.IGNORECASE)
_CHANNEL_RE = re.compile(r"^(power|energy|in|curr)(\d+)_(input|average)$")


def read_sysfs(path: Path) -> str:
    """Read one small sysfs attribute (the default ``read_text`` at the hardware boundary)."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


@dataclass
class _Channel:
    """One power or energy series from a hwmon device."""

    kind: str  # "energy" (µJ counter), "power" (µW), or "vi" (mV x mA)
    paths: tuple[Path, ...]
    measurement: str
    tags: dict[str, str]
    device: str  # quality tag
    tracker: CounterTracker = field(default_factory=CounterTracker)
    integrator: PowerIntegrator = field(default_factory=PowerIntegrator)
    quality: QualityTracker = field(default_factory=QualityTracker)
    last_mono_s: float | None = None
    missing: bool = False
    extras: dict[str, tuple[Path, float]] = field(default_factory=dict)  # field -> (path, scale)


@dataclass
class HwmonSource:
    """Reads ``power*_input``/``power*_average`` (µW) and ``energy*_input`` (µJ) from every hwmon device.

    Mapping: an ``amdgpu`` device becomes a ``gpu`` point (tags gpu = index in
    PCI order, uuid = ``unique_id`` or PCI address, model = ``product_name`` or
    "amdgpu"), with temperature, clocks, power cap and busy percentages.
    Everything else becomes a ``cpu`` point whose domain is ``driver/label``
    (label from ``*_label``, ACPI ``*_oem_info``, or the channel name), except a
    per-socket energy channel of ``amd_energy``/``zenergy``, which is the RAPL
    package and is named ``package-N``. Per-core channels are skipped (they are
    inside the socket). Energy counters give method=counter; power readings are
    integrated (method=integrated). ``_average`` is preferred over ``_input``:
    it is smoother, so 1 Hz integration loses less.
    """

    host: str
    root: Path = field(default_factory=lambda: Path(DEFAULT_ROOT))
    skip_drivers: frozenset[str] = frozenset()
    quality_interval_s: float = 60.0
    read_text: ReadText = read_sysfs
    name: str = "hwmon"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.skip_drivers = frozenset(self.skip_drivers)
        self._channels: list[_Channel] | None = None
        self._warn = LogOnce(log)

    # --- discovery ------------------------------------------------------------
    def _read(self, path: Path) -> str | None:
        try:
            return self.read_text(path).strip()
        except (OSError, UnicodeError):
            return None

    def _read_number(self, path: Path) -> float | None:
        text = self._read(path)
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            return None

    def _discover(self) -> list[_Channel]:
        if not self.root.is_dir():
            raise SourceUnavailable(f"{self.root} not present (not Linux, or a container without /sys/class)")
        devices: list[tuple[str, Path]] = []
        for entry in sorted(self.root.iterdir(), key=lambda p: _natural_key(p.name)):
            driver = self._read(entry / "name")
            if driver is None or driver in self.skip_drivers:
                continue
            devices.append((driver, entry))
        counts: dict[str, int] = {}
        for driver, _ in devices:
            counts[driver] = counts.get(driver, 0) + 1
        channels: list[_Channel] = []
        amdgpus = sorted(
            (p for d, p in devices if d == "amdgpu"), key=lambda p: _device_id(p) or p.name
        )
        for index, path in enumerate(amdgpus):
            channel = self._amdgpu_channel(index, path)
            if channel is not None:
                channels.append(channel)
        for driver, path in devices:
            if driver == "amdgpu":
                continue
            prefix = driver if counts[driver] == 1 else f"{driver}@{_device_id(path) or path.name}"
            channels.extend(self._sensor_channels(driver, prefix, path))
        for channel in channels:
            channel.quality.interval_s = self.quality_interval_s
        if not channels:
            raise SourceUnavailable(f"no power or energy sensors (power*_input, energy*_input) "
                                    f"under {self.root}")
        return channels

    def _amdgpu_channel(self, index: int, path: Path) -> _Channel | None:
        # Newer kernels drop power1_average on some boards, or keep the file and
        # fail the read (EOPNOTSUPP): take the first one that reads.
        power = [path / f for f in ("power1_average", "power1_input")
                 if self._read_number(path / f) is not None]
        if not power:
            return None
        dev = path / "device"
        uuid = self._read(dev / "unique_id") or _device_id(path) or path.name
        model = self._read(dev / "product_name") or "amdgpu"
        channel = _Channel(
            kind="power", paths=(power[0],), measurement="gpu",
            tags={"host": self.host, "gpu": str(index), "uuid": uuid, "model": model,
                  "method": "integrated"},
            device=f"amdgpu/{index}",
        )
        extras = {
            "temp_c": (path / "temp1_input", 1e-3),
            "sm_clock_mhz": (path / "freq1_input", 1e-6),
            "mem_clock_mhz": (path / "freq2_input", 1e-6),
            "power_limit_w": (path / "power1_cap", 1e-6),
            "util_pct": (dev / "gpu_busy_percent", 1.0),
            "mem_util_pct": (dev / "mem_busy_percent", 1.0),
        }
        channel.extras = {k: v for k, v in extras.items() if v[0].exists()}
        return channel

    def _sensor_channels(self, driver: str, prefix: str, path: Path) -> Iterable[_Channel]:
        by_kind: dict[str, dict[int, dict[str, Path]]] = {}
        for attr in path.iterdir():
            m = _CHANNEL_RE.match(attr.name)
            if m:
                by_kind.setdefault(m[1], {}).setdefault(int(m[2]), {})[m[3]] = attr
        labels_taken: set[str] = set()
        out: list[_Channel] = []
        for n, files in sorted(by_kind.get("energy", {}).items()):
            if "input" not in files:
                continue
            label = self._label(path, "energy", n)
            if _CORE_LABEL_RE.match(label):
                continue  # per-core counters sit inside the socket counter
            socket = _SOCKET_LABEL_RE.match(label)
            domain = f"package-{socket[1]}" if socket and driver in RAPL_DUPLICATE_DRIVERS else (
                f"{prefix}/{label}")
            labels_taken.add(label)
            out.append(self._cpu_channel("energy", (files["input"],), domain, "counter"))
        for n, files in sorted(by_kind.get("power", {}).items()):
            chosen = files.get("average") or files.get("input")
            if chosen is None:
                continue
            label = self._label(path, "power", n)
            if label in labels_taken:
                continue  # the same rail has an energy counter: prefer it
            labels_taken.add(label)
            out.append(self._cpu_channel("power", (chosen,), f"{prefix}/{label}", "integrated"))
        if driver in VI_RAIL_DRIVERS:
            currents = by_kind.get("curr", {})
            for n, files in sorted(by_kind.get("in", {}).items()):
                if "input" not in files or "input" not in currents.get(n, {}):
                    continue
                label = self._label(path, "in", n)
                if label in labels_taken:
                    continue
                labels_taken.add(label)
                out.append(self._cpu_channel(
                    "vi", (files["input"], currents[n]["input"]), f"{prefix}/{label}", "integrated"))
        return out

    def _cpu_channel(self, kind: str, paths: tuple[Path, ...], domain: str, method: str) -> _Channel:
        return _Channel(kind=kind, paths=paths, measurement="cpu",
                        tags={"host": self.host, "domain": domain, "method": method},
                        device=domain)

    def _label(self, path: Path, kind: str, n: int) -> str:
        for suffix in ("label", "oem_info"):
            text = self._read(path / f"{kind}{n}_{suffix}")
            if text:
                return text.replace("/", "-")
        return f"{kind}{n}"

    def _ensure(self) -> list[_Channel]:
        if self._channels is None:
            self._channels = self._discover()
        return self._channels

    # --- Source protocol --------------------------------------------------------
    def probe(self) -> Probe:
        try:
            channels = self._ensure()
        except SourceUnavailable as exc:
            return Probe.skipped(str(exc))
        gpus = [c for c in channels if c.measurement == "gpu"]
        cpus = [c.tags["domain"] for c in channels if c.measurement == "cpu"]
        parts = []
        if gpus:
            parts.append(f"{len(gpus)} amdgpu board(s)")
        if cpus:
            parts.append(f"{len(cpus)} sensor(s): {', '.join(cpus)}")
        return Probe.found("found " + "; ".join(parts))

    def cpu_package_domains(self) -> list[str]:
        """``package-N`` domains this source reports: a real CPU sensor, so no estimate is needed."""
        return [c.tags["domain"] for c in self._channels or []
                if c.measurement == "cpu" and c.tags["domain"].startswith("package-")]

    def sample(self, tick: Tick) -> list[Point]:
        points: list[Point] = []
        for channel in self._ensure():
            p = self._sample_channel(channel, tick)
            if p is not None:
                points.append(p)
            window = channel.quality.poll(tick.mono_s, channel.tracker.stats, not channel.missing)
            if window is not None:
                points.append(quality_point(self.host, self.name, channel.device, window,
                                            tick.wall_ns))
        return points

    def _sample_channel(self, channel: _Channel, tick: Tick) -> Point | None:
        try:
            values = [float(self.read_text(p).strip()) for p in channel.paths]
        except (OSError, ValueError) as exc:
            # Unplugged, driver unloaded, or a GPU in reset: skip, and never
            # integrate or count across the gap.
            if not channel.missing:
                channel.quality.lost()
            channel.missing = True
            channel.tracker.forget()
            channel.integrator.forget()
            channel.last_mono_s = None
            self._warn.warning(channel.device, f"hwmon: {channel.device} unreadable: {exc}")
            return None
        if channel.missing:
            channel.missing = False
            self._warn.clear(channel.device, f"hwmon: {channel.device} readable again")
        elapsed_s = None if channel.last_mono_s is None else tick.mono_s - channel.last_mono_s
        channel.last_mono_s = tick.mono_s
        fields: dict[str, FieldValue | None] = {}
        if channel.kind == "energy":
            delta_uj = channel.tracker.update(values[0], elapsed_s)
            if delta_uj is not None and elapsed_s:
                fields["energy_j"] = delta_uj / 1e6
                fields["power_w"] = delta_uj / 1e6 / elapsed_s
        else:
            power_uw = values[0] if channel.kind == "power" else values[0] * values[1]
            power_w = max(0.0, power_uw / 1e6)
            fields["power_w"] = power_w
            fields["energy_j"] = channel.integrator.update(tick.mono_s, power_w)
        for name, (path, scale) in channel.extras.items():
            value = self._read_number(path)
            fields[name] = None if value is None else value * scale
        if all(v is None for v in fields.values()):
            return None
        return point(channel.measurement, channel.tags, fields, tick.wall_ns)

    def close(self) -> None:
        self._channels = None


def _natural_key(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*?)(\d+)$", name)
    return (m[1], int(m[2])) if m else (name, -1)


def _device_id(hwmon_dir: Path) -> str | None:
    """The bus id behind a hwmon device (PCI address, I2C address), stable across boots."""
    link = hwmon_dir / "device"
    if not link.exists():
        return None
    return os.path.basename(os.path.realpath(link))


def from_options(
    host: str,
    root: str = DEFAULT_ROOT,
    skip_drivers: Iterable[str] = (),
    quality_interval_s: float = 60.0,
    interval_s: float | None = None,
) -> HwmonSource:
    """Registry factory. ``interval_s`` is accepted for a uniform agent call and not needed here."""
    del interval_s
    return HwmonSource(host=host, root=Path(root), skip_drivers=frozenset(skip_drivers),
                       quality_interval_s=quality_interval_s)
