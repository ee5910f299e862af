"""hwmon source against sysfs trees in tmp_path: amdgpu, INA3221 rails, BMC meter, amd_energy, vanishing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from collector.schema import Point
from collector.sources.hwmon import RAPL_DUPLICATE_DRIVERS, HwmonSource
from tests.collector.sources.trees import amdgpu, hwmon, tick


def by(points: list[Point], tag: str, measurement: str) -> dict[str, Point]:
    return {p.tag(tag) or "": p for p in points if p.measurement == measurement}


def test_amdgpu_becomes_gpu_points_in_pci_order(tmp_path: Path) -> None:
    amdgpu(tmp_path, 0, "0000:c3:00.0", 200_000_000)
    amdgpu(tmp_path, 1, "0000:03:00.0", 100_000_000)
    source = HwmonSource(host="h", root=tmp_path / "class")
    assert source.probe().detail == "found 2 amdgpu board(s)"
    source.sample(tick(0))
    gpus = by(source.sample(tick(2)), "gpu", "gpu")
    assert gpus["0"].tag_map == {"host": "h", "gpu": "0", "uuid": "0000:03:00.0",
                                 "model": "AMD Instinct MI210", "method": "integrated"}
    assert gpus["0"].field_map == {
        "power_w": 100.0, "energy_j": 200.0, "temp_c": 51.0, "sm_clock_mhz": 1700.0,
        "mem_clock_mhz": 1600.0, "power_limit_w": 300.0, "util_pct": 87.0, "mem_util_pct": 33.0,
    }
    assert gpus["1"].tag("uuid") == "0000:c3:00.0" and gpus["1"].field("power_w") == 200.0
    assert source.cpu_package_domains() == []


def test_amdgpu_without_average_uses_instant_power(tmp_path: Path) -> None:
    path = amdgpu(tmp_path, 0, "0000:03:00.0", 1)
    (path / "power1_average").unlink()
    (path / "power1_input").write_text("123000000\n")
    source = HwmonSource(host="h", root=tmp_path / "class")
    assert by(source.sample(tick(0)), "gpu", "gpu")["0"].field("power_w") == 123.0


def test_ina3221_rails_are_voltage_times_current(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "ina3221", {
        "in1_label": "VDD_IN", "in1_input": 5000, "curr1_input": 1200,
        "in2_label": "VDD_CPU_GPU_CV", "in2_input": 5000, "curr2_input": 400,
        "in3_input": 5000,  # a channel without current is not a rail we can measure
    })
    source = HwmonSource(host="jetson", root=tmp_path / "class")
    source.sample(tick(0))
    rails = by(source.sample(tick(1)), "domain", "cpu")
    assert set(rails) == {"ina3221/VDD_IN", "ina3221/VDD_CPU_GPU_CV"}
    assert rails["ina3221/VDD_IN"].field_map == {"power_w": 6.0, "energy_j": 6.0}
    assert rails["ina3221/VDD_IN"].tag("method") == "integrated"


def test_bmc_power_meter_label_from_oem_info(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "power_meter", {"power1_average": 450_000_000,
                                       "power1_oem_info": "Node Power"})
    source = HwmonSource(host="h", root=tmp_path / "class")
    assert source.probe().detail == "found 1 sensor(s): power_meter/Node Power"
    assert by(source.sample(tick(0)), "domain", "cpu")["power_meter/Node Power"].field(
        "power_w") == 450.0


def test_amd_energy_socket_is_a_package_and_cores_are_skipped(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "amd_energy", {
        "energy1_label": "Ecore000", "energy1_input": 10,
        "energy2_label": "Esocket0", "energy2_input": 1_000_000,
    })
    source = HwmonSource(host="h", root=tmp_path / "class")
    assert source.probe().ok
    assert source.cpu_package_domains() == ["package-0"]
    source.sample(tick(0))
    (tmp_path / "class/hwmon0/energy2_input").write_text("151000000\n")
    p = by(source.sample(tick(1)), "domain", "cpu")["package-0"]
    assert p.tag("method") == "counter"
    assert p.field_map == {"energy_j": 150.0, "power_w": 150.0}
    skipped = HwmonSource(host="h", root=tmp_path / "class", skip_drivers=RAPL_DUPLICATE_DRIVERS)
    assert not skipped.probe().ok


def test_energy_counter_preferred_over_power_of_the_same_rail(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "acme", {"energy1_label": "SoC", "energy1_input": 0,
                                "power1_label": "SoC", "power1_input": 5_000_000,
                                "power2_input": 1_000_000})
    source = HwmonSource(host="h", root=tmp_path / "class")
    source.probe()
    channels = by(source.sample(tick(0)), "domain", "cpu")
    assert set(channels) == {"acme/power2"}  # acme/SoC is a counter: no value until 2 reads
    (tmp_path / "class/hwmon0/energy1_input").write_text("2000000\n")
    channels = by(source.sample(tick(1)), "domain", "cpu")
    assert channels["acme/SoC"].tag("method") == "counter"
    assert channels["acme/power2"].tag("method") == "integrated"


def test_same_driver_twice_is_told_apart_by_bus_id(tmp_path: Path) -> None:
    for n, addr in enumerate(("1-0040", "1-0041")):
        hwmon(tmp_path, n, "ina3221", {"in1_label": "VDD_IN", "in1_input": 5000,
                                       "curr1_input": 100}, tmp_path / "i2c" / addr)
    source = HwmonSource(host="h", root=tmp_path / "class")
    domains = set(by(source.sample(tick(0)), "domain", "cpu"))
    assert domains == {"ina3221@1-0040/VDD_IN", "ina3221@1-0041/VDD_IN"}


def test_sensor_vanishing_mid_run_is_skipped_and_counted(tmp_path: Path) -> None:
    amdgpu(tmp_path, 0, "0000:03:00.0", 100_000_000)
    hwmon(tmp_path, 1, "power_meter", {"power1_average": 400_000_000})
    source = HwmonSource(host="h", root=tmp_path / "class", quality_interval_s=10.0)
    source.sample(tick(0))
    shutil.rmtree(tmp_path / "class/hwmon0")  # GPU fell off the bus
    points = source.sample(tick(1))
    assert by(points, "gpu", "gpu") == {}
    assert "power_meter/power1" in by(points, "domain", "cpu")
    amdgpu_back = amdgpu(tmp_path / "again", 0, "0000:03:00.0", 100_000_000)
    shutil.copytree(amdgpu_back, tmp_path / "class/hwmon0", symlinks=True)
    back = by(source.sample(tick(2)), "gpu", "gpu")["0"]
    assert "energy_j" not in back.field_map  # never integrated across the gap
    quality = by(source.sample(tick(10)), "device", "quality")
    assert quality["amdgpu/0"].field("device_lost") == 1.0
    assert quality["power_meter/power1"].field("device_lost") == 0.0


def test_no_sensors(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "coretemp", {"temp1_input": 40_000})
    probe = HwmonSource(host="h", root=tmp_path / "class").probe()
    assert not probe.ok and "no power or energy sensors" in probe.detail
    probe = HwmonSource(host="h", root=tmp_path / "missing").probe()
    assert not probe.ok and "not present" in probe.detail


@pytest.mark.parametrize("junk", ["", "not-a-number"])
def test_junk_reading_is_skipped(tmp_path: Path, junk: str) -> None:
    hwmon(tmp_path, 0, "power_meter", {"power1_average": 1_000_000})
    source = HwmonSource(host="h", root=tmp_path / "class")
    source.probe()
    (tmp_path / "class/hwmon0/power1_average").write_text(junk)
    assert source.sample(tick(0)) == []
