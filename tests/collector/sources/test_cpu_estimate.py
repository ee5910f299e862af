"""CPU estimate from /proc trees in tmp_path: TDP table, per-package utilisation, idle floor, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.errors import ConfigError
from collector.sources import create
from collector.sources.cpu_estimate import (
    DEFAULT_TDP_W,
    CpuEstimateSource,
    lookup_tdp_w,
    parse_cpuinfo,
    parse_stat,
)
from tests.collector.sources.trees import cpuinfo, proc, stat, tick


@pytest.mark.parametrize(("model", "tdp_w"), [
    ("Intel(R) Xeon(R) Platinum 8480C", 350.0),
    ("Intel(R) Xeon(R) Platinum 8480+", 350.0),
    ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", 150.0),
    ("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", 205.0),
    ("AMD EPYC 7763 64-Core Processor", 280.0),
    ("AMD EPYC 9654 96-Core Processor", 360.0),
    ("AMD Ryzen 9 7950X 16-Core Processor", None),
])
def test_tdp_table(model: str, tdp_w: float | None) -> None:
    assert lookup_tdp_w(model) == tdp_w


def test_parse_cpuinfo_maps_cpus_to_packages() -> None:
    info = parse_cpuinfo(cpuinfo("AMD EPYC 7763 64-Core Processor", [0, 0, 1, 1], "fpu hypervisor"))
    assert info.model == "AMD EPYC 7763 64-Core Processor"
    assert info.package_of == {0: 0, 1: 0, 2: 1, 3: 1}
    assert info.virtual


def test_parse_cpuinfo_without_physical_id_is_one_package() -> None:
    info = parse_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n")
    assert info.package_of == {0: 0, 1: 0} and info.model == "unknown" and not info.virtual


def test_parse_stat_counts_steal_as_not_busy() -> None:
    assert parse_stat(stat([(30, 10, 40, 20)])) == {0: (40.0, 100.0)}


def test_power_per_package_from_utilisation_above_the_idle_floor(tmp_path: Path) -> None:
    root = proc(tmp_path, "AMD EPYC 7763 64-Core Processor", [0, 0, 1, 1])
    source = CpuEstimateSource(host="h", proc_root=root)
    assert source.probe().detail == ("estimating 2 package(s) x 280 W TDP (AMD EPYC 7763 "
                                     "64-Core Processor, from table), idle floor 20%")
    assert source.sample(tick(0)) == []  # utilisation needs two readings
    # package 0: both CPUs fully busy; package 1: both idle.
    (root / "stat").write_text(stat([(100, 0, 0, 0), (50, 50, 0, 0), (0, 0, 100, 0),
                                     (0, 0, 100, 0)]))
    points = {p.tag("domain"): p for p in source.sample(tick(2.0))}
    busy, idle = points["package-0"], points["package-1"]
    assert busy.tag_map == {"host": "h", "domain": "package-0", "method": "estimated"}
    assert busy.field_map == {"power_w": 280.0, "energy_j": 560.0, "util_pct": 100.0}
    assert idle.field("power_w") == pytest.approx(56.0)  # 20 % of TDP
    assert idle.field("util_pct") == 0.0


def test_tdp_override_and_unknown_model_default(tmp_path: Path) -> None:
    root = proc(tmp_path, "Some Future CPU", [0])
    default = CpuEstimateSource(host="h", proc_root=root)
    assert "unknown model: pass --tdp-w " in default.probe().detail
    assert default.package_tdp_w == DEFAULT_TDP_W
    override = create("cpu-estimate", host="h", proc_root=str(root), tdp_w=95, interval_s=1.0)
    assert "95 W TDP" in override.probe().detail and "from tdp_w option" in override.probe().detail
    override.sample(tick(0))
    (root / "stat").write_text(stat([(50, 0, 50, 0)]))
    p = override.sample(tick(1))[0]
    assert p.field("power_w") == pytest.approx(95 * (0.2 + 0.8 * 0.5))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("tdp_w", 0.0, "tdp_w: must be a positive number of watts, got 0.0"),
    ("tdp_w", float("nan"), "tdp_w: must be a positive"),
    ("idle_fraction", 1.5, "idle_fraction: must be between 0 and 1, got 1.5"),
])
def test_bad_options(tmp_path: Path, option: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        CpuEstimateSource(host="h", proc_root=tmp_path, **{option: value})  # type: ignore[arg-type]


def test_virtual_machine_hint(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(cpuinfo("AMD EPYC 7763 64-Core Processor", [0], "hypervisor"))
    (tmp_path / "stat").write_text(stat([(0, 0, 0, 0)]))
    assert "virtual machine" in CpuEstimateSource(host="h", proc_root=tmp_path).probe().detail


def test_missing_proc_stat(tmp_path: Path) -> None:
    probe = CpuEstimateSource(host="h", proc_root=tmp_path).probe()
    assert not probe.ok and "stat not readable" in probe.detail


def test_stat_vanishing_mid_run_restarts_the_baseline(tmp_path: Path) -> None:
    root = proc(tmp_path, "AMD EPYC 7763 64-Core Processor", [0])
    source = CpuEstimateSource(host="h", proc_root=root)
    source.sample(tick(0))
    (root / "stat").unlink()
    assert source.sample(tick(1)) == []
    (root / "stat").write_text(stat([(10, 0, 10, 0)]))
    assert source.sample(tick(2)) == []  # a new baseline, not a delta over the gap
    (root / "stat").write_text(stat([(20, 0, 20, 0)]))
    assert source.sample(tick(3))[0].field("util_pct") == 50.0


def test_cpu_coming_online_is_ignored_until_it_has_a_baseline(tmp_path: Path) -> None:
    root = proc(tmp_path, "AMD EPYC 7763 64-Core Processor", [0, 0])
    (root / "stat").write_text(stat([(0, 0, 0, 0)]))  # cpu1 offline
    source = CpuEstimateSource(host="h", proc_root=root)
    source.sample(tick(0))
    (root / "stat").write_text(stat([(0, 0, 100, 0), (100, 0, 0, 0)]))
    assert source.sample(tick(1))[0].field("util_pct") == 0.0
