"""The simulated MI300X read through the real hwmon source from a sysfs tree in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.sim.hwmon_tree import write_amdgpu_tree
from collector.sources.base import Tick
from collector.sources.hwmon import HwmonSource
from collector.sources.simulated import NS, SIM_TICK_S, SimulatedFleet

T0 = 1_795_824_000 * NS - 6 * 3600 * NS


def test_mi300x_node_reads_back_through_hwmon(tmp_path: Path) -> None:
    fleet = SimulatedFleet(scenario="mixed")
    host = "node-02"  # the MI300X node of the mixed scenario: half training, half idle
    assert write_amdgpu_tree(tmp_path, fleet, host, T0) == 8
    source = HwmonSource(host=host, root=tmp_path / "class")
    assert source.probe().detail == "found 8 amdgpu board(s)"
    source.sample(Tick(T0, 0.0))  # the first round has no interval to integrate over
    write_amdgpu_tree(tmp_path, fleet, host, T0 + SIM_TICK_S * NS)
    pts = {p.tag("gpu"): p for p in source.sample(Tick(T0 + SIM_TICK_S * NS, float(SIM_TICK_S)))
           if p.measurement == "gpu"}
    assert sorted(pts, key=int) == [str(i) for i in range(8)]
    tick = (T0 + SIM_TICK_S * NS) // (SIM_TICK_S * NS)
    for grp in fleet.groups:
        if grp.host != host:
            continue
        for gpu in grp.gpu_indices:
            p, st = pts[str(gpu)], fleet.gpu_state(grp, gpu, tick)
            assert p.tag("model") == "AMD Instinct MI300X"
            assert p.field("power_w") == pytest.approx(st.power_w, abs=1e-6)
            assert p.field("power_limit_w") == grp.cap_w == 750
            assert p.field("util_pct") == round(st.util_pct)
            assert float(p.field("power_w") or 0) <= grp.cap_w
    busy = [float(pts[str(i)].field("power_w") or 0) for i in range(4)]
    idle = [float(pts[str(i)].field("power_w") or 0) for i in range(4, 8)]
    assert min(busy) > 3 * max(idle)  # training GPUs vs the planted idle ones
