"""Builders of sysfs and /proc trees (powercap, hwmon, /proc/stat) for the source tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

from collector.sources.base import Tick

INTEL_RANGE_UJ = 262_143_328_850
AMD_RANGE_UJ = 65_712_999_613


def tick(t_s: float) -> Tick:
    """A tick at monotonic ``t_s`` with a matching wall time."""
    return Tick(wall_ns=1_700_000_000_000_000_000 + int(t_s * 1e9), mono_s=t_s)


# --- powercap -------------------------------------------------------------------------


def zone(root: Path, zone_id: str, name: str, energy_uj: int, *,
         max_range_uj: int = INTEL_RANGE_UJ, limit_uw: int | None = None) -> Path:
    """One powercap zone directory like /sys/class/powercap/intel-rapl:0."""
    path = root / zone_id
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    if limit_uw is not None:
        (path / "constraint_0_power_limit_uw").write_text(f"{limit_uw}\n")
        (path / "constraint_0_name").write_text("long_term\n")
    return path


def set_energy(root: Path, zone_id: str, energy_uj: int) -> None:
    (root / zone_id / "energy_uj").write_text(f"{energy_uj}\n")


def two_socket_server(root: Path) -> Path:
    """Two Intel packages with core and dram sub-zones, PL1 250 W."""
    (root / "intel-rapl").mkdir(parents=True)  # the control-type directory, not a zone
    zone(root, "intel-rapl:0", "package-0", 1_000_000, limit_uw=250_000_000)
    zone(root, "intel-rapl:0:0", "core", 500_000)
    zone(root, "intel-rapl:0:1", "dram", 200_000)
    zone(root, "intel-rapl:1", "package-1", 3_000_000, limit_uw=250_000_000)
    zone(root, "intel-rapl:1:0", "dram", 100_000)
    return root


# --- hwmon -----------------------------------------------------------------------------


def hwmon(root: Path, n: int, driver: str, files: dict[str, str | int],
          device: Path | None = None) -> Path:
    """``root/class/hwmonN`` with a ``name`` file, attribute files and an optional device link."""
    path = root / "class" / f"hwmon{n}"
    path.mkdir(parents=True)
    (path / "name").write_text(driver + "\n")
    for name, value in files.items():
        (path / name).write_text(f"{value}\n")
    if device is not None:
        device.mkdir(parents=True, exist_ok=True)
        (path / "device").symlink_to(device)
    return path


def amdgpu(root: Path, n: int, bus: str, power_uw: int, **extra: str | int) -> Path:
    """An amdgpu hwmon device whose ``device`` link points at a PCI device directory."""
    device = root / "devices" / bus
    device.mkdir(parents=True)
    (device / "gpu_busy_percent").write_text("87\n")
    (device / "mem_busy_percent").write_text("33\n")
    (device / "product_name").write_text("AMD Instinct MI210\n")
    files: dict[str, str | int] = {
        "power1_average": power_uw, "power1_cap": 300_000_000, "temp1_input": 51_000,
        "freq1_input": 1_700_000_000, "freq2_input": 1_600_000_000, **extra,
    }
    return hwmon(root, n, "amdgpu", files, device)


# --- /proc ------------------------------------------------------------------------------


def cpuinfo(model: str, packages: list[int], flags: str = "fpu sse") -> str:
    blocks = [f"processor\t: {cpu}\nmodel name\t: {model}\nphysical id\t: {pkg}\nflags\t\t: {flags}"
              for cpu, pkg in enumerate(packages)]
    return "\n\n".join(blocks) + "\n"


def stat(rows: list[tuple[int, int, int, int]]) -> str:
    """/proc/stat text; rows: per CPU (user, system, idle, steal) jiffies."""
    total = [sum(r[i] for r in rows) for i in range(4)]
    lines = [f"cpu  {total[0]} 0 {total[1]} {total[2]} 0 0 0 {total[3]} 0 0"]
    lines += [f"cpu{n} {u} 0 {s} {i} 0 0 0 {st} 0 0" for n, (u, s, i, st) in enumerate(rows)]
    return "\n".join([*lines, "intr 1 2 3", "ctxt 99"]) + "\n"


def proc(root: Path, model: str, packages: list[int]) -> Path:
    """A /proc with cpuinfo (one CPU per entry of ``packages``) and an all-zero stat."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpuinfo").write_text(cpuinfo(model, packages))
    (root / "stat").write_text(stat([(0, 0, 0, 0)] * len(packages)))
    return root
