"""The simulated fleet: determinism, energy = integral of power, and the DVFS physics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.sources.base import Tick
from collector.sources.simulated import (
    GPU_SPECS,
    NS,
    S_MIN,
    SIM_TICK_S,
    SimulatedFleet,
    carbon_intensity,
    dvfs,
    fleet_layout,
)

T0 = 1_795_000_000 * NS  # a fixed instant, so the test is the same every day


def _by(points: list, measurement: str) -> list:  # type: ignore[type-arg]
    return [p for p in points if p.measurement == measurement]


def test_same_seed_same_points_and_other_seed_differs() -> None:
    a = SimulatedFleet(seed=7).points_between(T0, T0 + 60 * NS)
    b = SimulatedFleet(seed=7).points_between(T0, T0 + 60 * NS)
    c = SimulatedFleet(seed=8).points_between(T0, T0 + 60 * NS)
    assert a == b
    assert a != c


def test_every_design_measurement_is_emitted() -> None:
    pts = SimulatedFleet(nodes=4, gpus_per_node=8).points_between(T0, T0 + 10 * NS)
    assert {p.measurement for p in pts} == {"gpu", "cpu", "job", "facility", "carbon"}
    assert len(_by(pts, "gpu")) == 32
    assert all(p.tag("method") == "simulated" for p in _by(pts, "gpu") + _by(pts, "cpu"))


@pytest.mark.parametrize("interval_s", [1, 7, 60, 3600])
def test_gpu_energy_is_the_integral_of_instantaneous_power(interval_s: int) -> None:
    fleet = SimulatedFleet(nodes=4, gpus_per_node=8, seed=3)
    start = T0 + 3 * NS  # deliberately not aligned to a simulation tick
    end = start + interval_s * NS
    pts = {(p.tag("host"), p.tag("gpu")): p for p in _by(fleet.points_between(start, end), "gpu")}
    for grp in fleet.groups:
        for gpu in grp.gpu_indices:
            # Integrate the instantaneous power numerically at 0.5 s resolution.
            integral, t = 0.0, start
            step = NS // 2
            while t < end:
                dt = min(step, end - t)
                integral += fleet.gpu_state(grp, gpu, t // (SIM_TICK_S * NS)).power_w * dt / NS
                t += dt
            assert pts[(grp.host, str(gpu))].field("energy_j") == pytest.approx(integral, rel=1e-9)


def test_splitting_an_interval_conserves_energy_and_work() -> None:
    one = SimulatedFleet(seed=2).points_between(T0, T0 + 600 * NS)
    fleet = SimulatedFleet(seed=2)
    parts = [p for k in range(10)
             for p in fleet.points_between(T0 + k * 60 * NS, T0 + (k + 1) * 60 * NS)]
    for m, f in (("gpu", "energy_j"), ("cpu", "energy_j"), ("job", "samples"),
                 ("job", "energy_j"), ("facility", "facility_energy_j")):
        whole = sum(float(p.field(f) or 0) for p in _by(one, m))
        split = sum(float(p.field(f) or 0) for p in _by(parts, m))
        assert split == pytest.approx(whole, rel=1e-9), (m, f)


def test_job_energy_equals_its_gpus_energy() -> None:
    pts = SimulatedFleet(seed=1).points_between(T0, T0 + 120 * NS)
    jobs = sum(float(p.field("energy_j") or 0) for p in _by(pts, "job"))
    busy = sum(float(p.field("energy_j") or 0) for p in _by(pts, "gpu")
               if float(p.field("util_pct") or 0) > 0)
    assert jobs == pytest.approx(busy, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(GPU_SPECS)), st.floats(0.3, 1.0), st.floats(0.4, 1.0),
       st.floats(0.05, 0.9))
def test_throughput_rises_monotonically_with_cap(model: str, util: float, beta: float,
                                                 frac: float) -> None:
    spec = GPU_SPECS[model]
    lo = spec.min_cap_w + frac * (spec.tdp_w - spec.min_cap_w) * 0.5
    hi = lo + (spec.tdp_w - lo) * 0.5
    p_lo, s_lo, thr_lo = dvfs(spec, util, lo, beta)
    p_hi, _, thr_hi = dvfs(spec, util, hi, beta)
    assert thr_hi >= thr_lo
    assert p_hi >= p_lo
    # The cap holds unless the clock is already at its floor.
    assert p_lo <= lo + 1e-6 or s_lo == S_MIN


def test_throughput_falls_sub_linearly_so_a_lower_cap_buys_more_work_per_joule() -> None:
    spec = GPU_SPECS["NVIDIA H100 80GB HBM3"]
    p700, _, thr700 = dvfs(spec, 1.0, 700, 0.9)
    p500, _, thr500 = dvfs(spec, 1.0, 500, 0.9)
    assert p500 == pytest.approx(500)
    assert p500 / p700 < thr500 / thr700 < 1.0  # power fell more than throughput
    assert thr500 / p500 > thr700 / p700


def test_planted_layout() -> None:
    groups = fleet_layout(4, 8)
    caps = {g.cap_w for g in groups if g.model == "NVIDIA H100 80GB HBM3" and g.runs
            and g.runs[0].job.name.startswith("llm-pretrain")}
    assert caps == {700, 500, 400}  # a frontier over caps
    idle = [g for g in groups if not g.runs]
    assert idle and idle[0].host == "node-01" and idle[0].gpu_indices == (6, 7)
    assert any(r.job.deferrable for g in groups for r in g.runs)
    assert any(r.job.precision == "fp32" for g in groups for r in g.runs)


def test_carbon_has_a_midday_dip_and_pue_is_plausible() -> None:
    day = 1_795_000_000 - 1_795_000_000 % 86400
    noon, evening = carbon_intensity(day + 13 * 3600, 1)[0], carbon_intensity(day + 19 * 3600, 1)[0]
    assert noon < evening
    pts = SimulatedFleet().points_between(T0, T0 + 60 * NS)
    fac = _by(pts, "facility")[0]
    pue = float(fac.field("facility_power_w") or 0) / float(fac.field("it_power_w") or 1)
    assert 1.1 < pue < 1.5


def test_sample_continues_from_the_previous_tick() -> None:
    fleet = SimulatedFleet(interval_s=5)
    first = fleet.sample(Tick(T0, 0.0))
    second = fleet.sample(Tick(T0 + 5 * NS, 5.0))
    assert first and second
    assert fleet.sample(Tick(T0 + 5 * NS, 5.0)) == []  # no time passed, nothing to report


def test_bad_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="nodes, gpus_per_node"):
        fleet_layout(0, 8)
