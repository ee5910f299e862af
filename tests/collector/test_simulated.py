"""The simulated fleet: determinism, energy = integral of power, the layout's planted groups, sites."""

from __future__ import annotations

import pytest

from collector.sim.fleet import SCENARIOS, build_fleet
from collector.sim.models import GPU_SPECS
from collector.sources.base import Tick
from collector.sources.simulated import (
    NS,
    SIM_TICK_S,
    SimulatedFleet,
    carbon_intensity,
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


def test_planted_layout() -> None:
    groups = fleet_layout(4, 8)
    llm = {g.cap_w: g for g in groups if g.runs and g.runs[0].job.workload == "llm-1.3b"}
    assert set(llm) == {700, 490}  # the same workload at two caps: a frontier
    assert llm[700].role == "planted" and llm[490].role == "control"
    idle = [g for g in groups if not g.runs]
    # Two idle A100s on node-01: the idle-GPU recommendation and the idle alert rely on them.
    assert [(g.host, g.model, g.gpu_indices) for g in idle] == [
        ("node-01", "NVIDIA A100-SXM4-80GB", (6, 7))]
    assert any(r.job.deferrable for g in groups for r in g.runs)
    assert any(r.job.precision == "fp32" for g in groups for r in g.runs)
    assert {g.role for g in groups} == {"planted", "control"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_builds_with_known_models_and_caps_in_range(scenario: str) -> None:
    for nodes, gpus in ((1, 1), (4, 8), (7, 3)):
        fleet = build_fleet(nodes, gpus, scenario, seed=3)
        for g in fleet.groups:
            spec = GPU_SPECS[g.model]
            assert spec.check_cap(g.cap_w) == g.cap_w
            assert all(0 <= i < gpus for i in g.gpu_indices)
        seen = [(g.host, i) for g in fleet.groups for i in g.gpu_indices]
        assert len(seen) == len(set(seen)) == nodes * gpus  # every GPU in exactly one group


def test_points_carry_the_workload_tag_and_the_gpus_each_job_ran_on() -> None:
    fleet = SimulatedFleet(seed=1)
    pts = fleet.points_between(T0, T0 + 60 * NS)
    for p in _by(pts, "job"):
        assert p.tag("workload")
        mask = int(p.field("gpu_mask") or 0)
        assert bin(mask).count("1") == p.field("gpus")
    embed = next(p for p in _by(pts, "job") if p.tag("job", "").startswith("embed-infer"))
    assert embed.field("gpu_mask") == (1 << 6) | (1 << 7)


def test_power_never_exceeds_the_limit_anywhere_in_the_fleet() -> None:
    for scenario in sorted(SCENARIOS):
        pts = SimulatedFleet(scenario=scenario).points_between(T0, T0 + 3600 * NS)
        for p in _by(pts, "gpu"):
            assert float(p.field("power_w") or 0) <= float(p.field("power_limit_w") or 0) + 1e-6


def test_a_high_pue_site_and_a_normal_one() -> None:
    pts = SimulatedFleet().points_between(T0, T0 + 3600 * NS)
    pue = {p.tag("site"): float(p.field("facility_energy_j") or 0) / float(p.field("it_energy_j") or 1)
           for p in _by(pts, "facility")}
    assert set(pue) == {"dc-1", "edge-1"}
    assert 1.1 < pue["dc-1"] < 1.45 and pue["edge-1"] > 1.6


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="scenario: must be one of"):
        SimulatedFleet(scenario="nope")


def test_carbon_has_a_midday_dip_and_pue_is_plausible() -> None:
    day = 1_795_000_000 - 1_795_000_000 % 86400
    noon, evening = carbon_intensity(day + 13 * 3600, 1)[0], carbon_intensity(day + 19 * 3600, 1)[0]
    assert noon < evening
    pts = SimulatedFleet().points_between(T0, T0 + 60 * NS)
    fac = next(p for p in _by(pts, "facility") if p.tag("site") == "dc-1")
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


def test_a_group_the_operator_clock_locked_runs_at_that_clock_and_its_jobs_say_so() -> None:
    """The clock-lock scenario's locked twins: SM clock at 80 % of max on the GPU and job points,
    less power than the full-clock twin at the same load (collector.sim.physics.locked_clock_point)."""
    fleet = SimulatedFleet(scenario="clock-lock")
    pts = fleet.points_between(T0, T0 + 600 * NS)
    chat = {p.tag("job"): p for p in pts if p.measurement == "job" and p.tag("workload") == "chat-7b"}
    top = GPU_SPECS["NVIDIA L4"].max_sm_clock_mhz
    locked, full = chat["chat-infer-node-01-b"], chat["chat-infer-node-01-a"]
    assert locked.field("sm_clock_mhz") == pytest.approx(0.8 * top, abs=0.1)
    assert full.field("sm_clock_mhz") == pytest.approx(top, abs=0.1)
    per_gpu = {k: float(p.field("energy_j") or 0) / float(p.field("gpus") or 1) for k, p in chat.items()}
    assert per_gpu["chat-infer-node-01-b"] < per_gpu["chat-infer-node-01-a"]
    gpu_clock = {p.tag("gpu"): p.field("sm_clock_mhz") for p in pts
                 if p.measurement == "gpu" and p.tag("host") == "node-01"}
    assert gpu_clock["0"] == round(top) and gpu_clock["4"] == round(0.8 * top)
