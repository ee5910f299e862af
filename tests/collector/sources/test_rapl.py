"""RAPL source against powercap trees built in tmp_path: domains, wrap, permissions, vanishing zones."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from collector.errors import ConfigError
from collector.schema import Point
from collector.sources import create
from collector.sources.rapl import RaplSource, is_additive_cpu_domain, read_sysfs
from tests.collector.sources.trees import AMD_RANGE_UJ, set_energy, tick, two_socket_server, zone


def cpu_points(points: list[Point]) -> dict[str, Point]:
    return {p.tag("domain") or "": p for p in points if p.measurement == "cpu"}


def test_discovers_packages_and_subdomains_by_name(tmp_path: Path) -> None:
    source = RaplSource(host="h", root=two_socket_server(tmp_path))
    probe = source.probe()
    assert probe.ok
    assert source.domains() == ["package-0", "package-0/core", "package-0/dram",
                                "package-1", "package-1/dram"]
    assert probe.detail.startswith("found 2 package(s): package-0, package-0/core")


def test_energy_and_power_from_counter_deltas(tmp_path: Path) -> None:
    root = two_socket_server(tmp_path)
    source = RaplSource(host="node-1", root=root)
    assert source.sample(tick(0.0)) == []  # first readings only prime the counters
    set_energy(root, "intel-rapl:0", 1_000_000 + 240_000_000)
    set_energy(root, "intel-rapl:0:1", 200_000 + 30_000_000)
    points = cpu_points(source.sample(tick(2.0)))
    p = points["package-0"]
    assert p.tag_map == {"host": "node-1", "domain": "package-0", "method": "counter"}
    assert p.field_map == {"energy_j": 240.0, "power_w": 120.0}
    assert points["package-0/dram"].field("power_w") == 15.0
    assert points["package-1"].field("energy_j") == 0.0


def test_wrap_around_through_max_energy_range(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", AMD_RANGE_UJ - 1_000_000,
         max_range_uj=AMD_RANGE_UJ)
    source = RaplSource(host="h", root=tmp_path, quality_interval_s=5.0)
    source.sample(tick(0))
    set_energy(tmp_path, "intel-rapl:0", 4_000_000)
    p = cpu_points(source.sample(tick(1)))["package-0"]
    assert p.field("energy_j") == pytest.approx(5.0)
    quality = [q for q in source.sample(tick(5)) if q.measurement == "quality"]
    assert quality[0].tag_map == {"host": "h", "source": "rapl", "device": "package-0"}
    assert quality[0].field("counter_wraps") == 1.0


def test_psys_and_mmio_mirror(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 1)
    zone(tmp_path, "intel-rapl:1", "psys", 1)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 1)  # the same package over MMIO
    source = RaplSource(host="h", root=tmp_path)
    assert source.probe().ok
    assert source.domains() == ["package-0", "psys"]


def test_mmio_zone_alone_is_used(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 1)
    source = RaplSource(host="h", root=tmp_path)
    assert source.probe().ok and source.domains() == ["package-0"]


def test_permission_denied_says_what_to_do(tmp_path: Path) -> None:
    two_socket_server(tmp_path)

    def root_only(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_sysfs(path)

    probe = RaplSource(host="h", root=tmp_path, read_text=root_only).probe()
    assert not probe.ok
    assert "root only since Linux 5.10" in probe.detail
    assert "run the agent as root" in probe.detail and "udev rule" in probe.detail
    assert "\n" not in probe.detail


def test_permission_lost_mid_run_warns_and_skips(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 1)
    denied = {"on": False}

    def reader(path: Path) -> str:
        if denied["on"] and path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_sysfs(path)

    source = RaplSource(host="h", root=tmp_path, read_text=reader)
    source.sample(tick(0))
    denied["on"] = True
    with caplog.at_level(logging.WARNING):
        assert source.sample(tick(1)) == []
    assert "readable by root only" in caplog.text


def test_energy_file_that_is_a_directory_is_unreadable(tmp_path: Path) -> None:
    path = zone(tmp_path, "intel-rapl:0", "package-0", 1)
    zone(tmp_path, "intel-rapl:1", "package-1", 1)
    (path / "energy_uj").unlink()
    (path / "energy_uj").mkdir()
    source = RaplSource(host="h", root=tmp_path)
    assert source.probe().ok  # package-1 still reads
    source.sample(tick(0))
    set_energy(tmp_path, "intel-rapl:1", 1_000_001)
    assert set(cpu_points(source.sample(tick(1)))) == {"package-1"}


def test_zone_vanishing_and_returning_is_never_a_wrap(tmp_path: Path) -> None:
    two_socket_server(tmp_path)
    source = RaplSource(host="h", root=tmp_path, quality_interval_s=10.0)
    source.sample(tick(0))
    set_energy(tmp_path, "intel-rapl:0", 9_000_000)
    source.sample(tick(1))
    shutil.rmtree(tmp_path / "intel-rapl:1")
    points = cpu_points(source.sample(tick(2)))
    assert "package-1" not in points and "package-0" in points
    zone(tmp_path, "intel-rapl:1", "package-1", 10)  # module reloaded: counter restarted
    assert "package-1" not in cpu_points(source.sample(tick(3)))  # new base, no fake wrap
    set_energy(tmp_path, "intel-rapl:1", 1_000_010)
    assert cpu_points(source.sample(tick(4)))["package-1"].field("energy_j") == 1.0
    quality = {q.tag("device"): q for q in source.sample(tick(10)) if q.measurement == "quality"}
    assert quality["package-1"].field("device_lost") == 1.0
    assert quality["package-1"].field("counter_wraps") == 0.0


def test_interval_longer_than_the_wrap_time_is_refused(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 1, max_range_uj=AMD_RANGE_UJ)
    source = RaplSource(host="h", root=tmp_path, interval_s=120.0)
    probe = source.probe()
    assert not probe.ok
    # 65.7 kJ at the default 500 W wraps in 131 s; half of that is the safe interval.
    assert probe.detail == ("interval_s: 120 s is too long for RAPL zone package-0, whose "
                            "counter wraps every 131 s at 500 W: use an interval of at most 66 s")
    with pytest.raises(ConfigError, match="interval_s"):
        source.sample(tick(0))
    assert RaplSource(host="h", root=tmp_path, interval_s=10.0).probe().ok


def test_bad_interval_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="interval_s: must be positive, got 0"):
        RaplSource(host="h", root=tmp_path, interval_s=0)


def test_gap_longer_than_the_counter_covers_is_dropped_and_warned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 1, max_range_uj=AMD_RANGE_UJ,
         limit_uw=280_000_000)
    source = RaplSource(host="h", root=tmp_path, quality_interval_s=250.0)
    source.sample(tick(0))
    set_energy(tmp_path, "intel-rapl:0", 5_000_000)
    with caplog.at_level(logging.WARNING):
        assert source.sample(tick(200)) == []  # a stalled agent: the counter may have wrapped
    assert "sample more often" in caplog.text
    set_energy(tmp_path, "intel-rapl:0", 6_000_000)
    assert cpu_points(source.sample(tick(201)))["package-0"].field("energy_j") == 1.0
    quality = [q for q in source.sample(tick(250)) if q.measurement == "quality"]
    assert quality[0].field("counter_gaps") == 1.0


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    probe = RaplSource(host="h", root=tmp_path / "nope").probe()
    assert not probe.ok and "not present" in probe.detail
    probe = RaplSource(host="h", root=tmp_path).probe()
    assert not probe.ok and "no RAPL zones" in probe.detail


def test_registry_factory(tmp_path: Path) -> None:
    two_socket_server(tmp_path)
    source = create("rapl", host="h", root=str(tmp_path), interval_s=1.0)
    assert source.name == "rapl" and source.probe().ok


@pytest.mark.parametrize(("domain", "additive"), [
    ("package-0", True), ("package-1/dram", True), ("package-0/core", False),
    ("package-0/uncore", False), ("psys", False), ("ina3221/VDD_IN", False),
])
def test_additive_domains(domain: str, additive: bool) -> None:
    assert is_additive_cpu_domain(domain) is additive
