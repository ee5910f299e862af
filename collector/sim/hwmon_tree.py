"""The simulated fleet's AMD GPUs as the amdgpu driver exposes them in sysfs, for the real hwmon source.

``write_amdgpu_tree(root, fleet, host, wall_ns)`` renders one host's AMD boards (the MI300X in the
``mixed`` scenario) at one instant: ``root/class/hwmonN/{name, power1_average, power1_cap,
power1_cap_min, power1_cap_max, temp1_input, freq1_input}`` and its ``device`` link to
``root/devices/PCI/{product_name, unique_id, gpu_busy_percent, mem_busy_percent}``, in the units the
kernel uses (µW, m°C, Hz). ``HwmonSource(host, root / "class")`` then reads it as it reads a real
node: the simulator reaches AMD GPUs through the same code path as hardware does.
"""

from __future__ import annotations

from pathlib import Path

from collector.sim.models import GPU_SPECS
from collector.sources.simulated import NS, SIM_TICK_S, SimulatedFleet


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


def write_amdgpu_tree(root: Path, fleet: SimulatedFleet, host: str, wall_ns: int) -> int:
    """Write (or refresh) the host's AMD GPUs at ``wall_ns``; returns how many boards."""
    tick = wall_ns // (SIM_TICK_S * NS)
    n = 0
    for grp in fleet.groups:
        spec = GPU_SPECS[grp.model]
        if grp.host != host or spec.vendor != "amd":
            continue
        for gpu in grp.gpu_indices:
            st = fleet.gpu_state(grp, gpu, tick)
            dev = root / "devices" / f"0000:{0x10 + gpu:02x}:00.0"  # PCI order = GPU index
            hw = root / "class" / f"hwmon{gpu}"
            dev.mkdir(parents=True, exist_ok=True)
            hw.mkdir(parents=True, exist_ok=True)
            if not (hw / "device").exists():
                (hw / "device").symlink_to(dev.resolve())
            _write(hw / "name", "amdgpu")
            _write(hw / "power1_average", round(st.power_w * 1e6))
            _write(hw / "power1_cap", round(grp.cap_w * 1e6))
            _write(hw / "power1_cap_min", round(spec.min_cap_w * 1e6))
            _write(hw / "power1_cap_max", round(spec.tdp_w * 1e6))
            _write(hw / "temp1_input", round(1000 * (30 + 45 * st.power_w / spec.tdp_w)))
            _write(hw / "freq1_input", round(st.sm_clock_mhz * 1e6))
            _write(dev / "product_name", spec.model)
            _write(dev / "unique_id", fleet.uuid(grp.host, gpu).removeprefix("GPU-").replace("-", "")[:16])
            _write(dev / "gpu_busy_percent", round(st.util_pct))
            _write(dev / "mem_busy_percent", round(st.mem_util_pct))
            n += 1
    return n
