"""Auto-detection over fake NVML and tmp sysfs trees, and the one-round table."""

from __future__ import annotations

from pathlib import Path

from collector.schema import point
from collector.sources import AUTO_ORDER, REGISTRY
from collector.sources.autodetect import autodetect, format_once
from tests.collector.sources import fake_pynvml
from tests.collector.sources.fake_pynvml import FakeGpu, FakeNvml
from tests.collector.sources.trees import amdgpu, hwmon, proc, tick, two_socket_server


def test_everything_present(tmp_path: Path) -> None:
    two_socket_server(tmp_path / "powercap")
    amdgpu(tmp_path / "hw", 0, "0000:03:00.0", 100_000_000)
    hwmon(tmp_path / "hw", 1, "amd_energy", {"energy1_label": "Esocket0", "energy1_input": 1})
    proc(tmp_path / "proc", "AMD EPYC 7763 64-Core Processor", [0])
    sources, lines = autodetect(
        "h", interval_s=1.0, nvml_module=FakeNvml([FakeGpu(), FakeGpu()]),
        powercap_root=tmp_path / "powercap", hwmon_root=tmp_path / "hw" / "class",
        proc_root=tmp_path / "proc",
    )
    assert [s.name for s in sources] == ["nvml", "rapl", "hwmon"]
    assert lines == [
        "nvml: found 2 GPUs (2x NVIDIA H100 80GB HBM3), driver 550.54.15, energy counter on 2/2",
        "rapl: found 2 package(s): package-0, package-0/core, package-0/dram, package-1, "
        "package-1/dram, shortest wrap 9 min at max power",
        "hwmon: found 1 amdgpu board(s)",  # amd_energy re-exports RAPL: skipped
        "cpu-estimate: skipped: CPU power is measured (rapl)",
    ]
    assert [line.split(":")[0] for line in lines] == list(AUTO_ORDER)


def test_nothing_present_falls_back_to_the_estimate(tmp_path: Path) -> None:
    proc(tmp_path / "proc", "AMD EPYC 7763 64-Core Processor", [0])
    sources, lines = autodetect(
        "h", nvml_module=FakeNvml(init_error=fake_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
        powercap_root=tmp_path / "none", hwmon_root=tmp_path / "none",
        proc_root=tmp_path / "proc", tdp_w=200.0,
    )
    assert [s.name for s in sources] == ["cpu-estimate"]
    assert lines[0] == ("nvml: skipped: NVML library libnvidia-ml.so.1 not found: "
                        "no NVIDIA driver installed here")
    assert lines[1].startswith("rapl: skipped: ") and "not present" in lines[1]
    assert lines[2].startswith("hwmon: skipped: ")
    assert lines[3].startswith("cpu-estimate: estimating 1 package(s) x 200 W TDP")


def test_hwmon_socket_counter_replaces_the_estimate_without_rapl(tmp_path: Path) -> None:
    hwmon(tmp_path / "hw", 0, "amd_energy", {"energy1_label": "Esocket0", "energy1_input": 1})
    proc(tmp_path / "proc", "AMD EPYC 7763 64-Core Processor", [0])
    sources, lines = autodetect(
        "h", nvml_module=FakeNvml([]), powercap_root=tmp_path / "none",
        hwmon_root=tmp_path / "hw" / "class", proc_root=tmp_path / "proc",
    )
    assert [s.name for s in sources] == ["hwmon"]
    assert lines[-1] == "cpu-estimate: skipped: CPU power is measured (hwmon package-0)"


def test_rapl_interval_refusal_is_a_skip_line(tmp_path: Path) -> None:
    two_socket_server(tmp_path / "powercap")
    proc(tmp_path / "proc", "AMD EPYC 7763 64-Core Processor", [0])
    sources, lines = autodetect(
        "h", interval_s=5000.0, nvml_module=FakeNvml([]), powercap_root=tmp_path / "powercap",
        hwmon_root=tmp_path / "none", proc_root=tmp_path / "proc",
    )
    assert lines[1].startswith("rapl: skipped: interval_s: 5000 s is too long")
    assert [s.name for s in sources] == ["cpu-estimate"]


def test_registry_names() -> None:
    for name in ("nvml", "rapl", "hwmon", "cpu-estimate"):
        assert name in REGISTRY
    assert AUTO_ORDER == ("nvml", "rapl", "hwmon", "cpu-estimate")


def test_format_once_aligned_with_units(tmp_path: Path) -> None:
    t = 1_700_000_000_000_000_000
    points = [
        point("gpu", {"host": "h", "gpu": "1", "uuid": "GPU-b", "model": "H100", "method": "counter"},
              {"power_w": 95.25, "energy_j": 95.0, "util_pct": 3.0, "temp_c": 40.0}, t),
        point("gpu", {"host": "h", "gpu": "0", "uuid": "GPU-a", "model": "H100", "method": "counter"},
              {"power_w": 312.4, "energy_j": 312.1, "util_pct": 98.0, "sm_clock_mhz": 1980}, t),
        point("cpu", {"host": "h", "domain": "package-0", "method": "counter"},
              {"power_w": 120.0, "energy_j": 120.0}, t),
        point("quality", {"host": "h", "source": "nvml", "device": "0"},
              {"energy_check_rel_diff": -0.0123, "window_s": 60.0}, t),
    ]
    text = format_once(points)
    assert text == (
        "gpu  model  method   power_w  energy_j  util_pct  sm_clock_mhz  temp_c\n"
        "0    H100   counter  312.4 W   312.1 J      98 %      1980 MHz       -\n"
        "1    H100   counter   95.2 W    95.0 J       3 %             -   40 °C\n"
        "\n"
        "cpu        method   power_w  energy_j\n"
        "package-0  counter  120.0 W   120.0 J\n"
        "\n"
        "quality  device  energy_check_rel_diff  window_s\n"
        "nvml     0                     -1.23 %    60.0 s"
    )


def test_format_once_of_nothing_explains() -> None:
    assert "no points" in format_once([])


def test_format_once_over_real_sources(tmp_path: Path) -> None:
    two_socket_server(tmp_path / "powercap")
    sources, _ = autodetect("h", nvml_module=FakeNvml(), powercap_root=tmp_path / "powercap",
                            hwmon_root=tmp_path / "none", proc_root=tmp_path / "none")
    for s in sources:
        s.sample(tick(0))
    text = format_once([p for s in sources for p in s.sample(tick(1))])
    assert "NVIDIA H100 80GB HBM3" in text and "package-0/dram" in text
