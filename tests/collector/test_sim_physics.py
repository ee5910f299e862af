"""The simulator's physics against its own invariants and against the published measurements it cites."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.sim.models import GPU_SPECS, find_model
from collector.sim.physics import KINDS, cap_table, locked_clock_point, operating_point, work_rate_flops
from collector.sources.simulated import NS, SimulatedFleet

PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")


def _rel(model: str, kind: str, from_w: float, to_w: float) -> tuple[float, float]:
    """(energy per work change %, time per work change %) going from one cap to another at full load."""
    spec, k = find_model(model), KINDS[kind]
    a, b = operating_point(spec, k, 1.0, from_w), operating_point(spec, k, 1.0, to_w)
    return (100 * (b.power_w * b.slowdown / (a.power_w * a.slowdown) - 1),
            100 * (b.slowdown / a.slowdown - 1))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(GPU_SPECS)), st.sampled_from(sorted(KINDS)), st.floats(0.0, 1.0),
       st.floats(0.0, 1.0), st.sampled_from(PRECISIONS))
def test_power_within_the_limit_and_work_within_the_datasheet_peak(
        model: str, kind: str, util: float, frac: float, precision: str) -> None:
    spec = GPU_SPECS[model]
    cap = spec.min_cap_w + frac * (spec.tdp_w - spec.min_cap_w)
    op = operating_point(spec, KINDS[kind], util, cap)
    assert spec.idle_w - 1e-9 <= op.power_w <= cap + 1e-9
    assert 0 < op.clock <= 1 and op.slowdown >= 1
    flops = work_rate_flops(spec, KINDS[kind], precision, util, op)
    peak = spec.peak(precision) * 1e12
    assert flops <= peak * op.clock + 1e-6  # never faster than the clock-scaled datasheet peak
    assert flops / op.power_w <= peak / op.power_w  # FLOP/J within the peak at the power drawn


@pytest.mark.parametrize("model", sorted(GPU_SPECS))
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("util", [1.0, 0.5])
def test_energy_per_work_is_u_shaped_and_time_never_falls_as_the_cap_falls(
        model: str, kind: str, util: float) -> None:
    rows = cap_table(GPU_SPECS[model], KINDS[kind], step_w=GPU_SPECS[model].tdp_w / 100, util=util)
    times = [r.time_per_work_s for r in rows]  # by rising cap
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(times))
    energy = [r.energy_per_work_j for r in rows]
    low = energy.index(min(energy))
    # Falls (or stays) from the lowest cap to the minimum, rises (or stays) from there to TDP.
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(energy[:low + 1]))
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(energy[low:]))
    assert all(r.power_w <= r.cap_w + 1e-9 for r in rows)


@pytest.mark.parametrize("model", ["H100", "H200", "A100-SXM4", "L40S", "MI300X"])
def test_training_has_an_interior_optimum_within_the_zeus_range(model: str) -> None:
    spec = find_model(model)
    rows = cap_table(spec, KINDS["llm-train"], step_w=5)
    best = min(rows, key=lambda r: r.energy_per_work_j)
    assert spec.min_cap_w < best.cap_w < spec.tdp_w  # a U, not a slope
    gain = rows[-1].energy_per_work_j / best.energy_per_work_j - 1
    assert 0.15 <= gain <= 0.76  # Zeus (NSDI'23): 15-76 % better energy efficiency at the optimum


def test_mit_lincoln_lab_v100_training_250_to_150_w() -> None:
    energy, t = _rel("V100-PCIE", "train", 250, 150)
    assert energy == pytest.approx(-13.7, abs=2.0)  # published: -13.7 % energy
    assert t == pytest.approx(6.8, abs=1.5)  # published: +6.8 % time


def test_samsi_a100_llama_inference_250_to_175_w() -> None:
    energy, t = _rel("A100-PCIE", "llm-infer", 250, 175)
    assert energy == pytest.approx(-23.0, abs=2.0)  # published: about -23 % energy
    assert 5.0 <= t <= 8.0  # published: +6-7 % latency


def test_the_samsi_cap_is_the_clock_the_truth_locks_at() -> None:
    # A binding cap is the driver lowering the SM clock: Samsi et al.'s 175 W on an A100 is the
    # simulator's 80 % clock, the lock collector/sim/truth.py scores clock-lock items at.
    op = operating_point(find_model("A100-PCIE"), KINDS["llm-infer"], 1.0, 175)
    assert op.clock == pytest.approx(0.8, abs=0.02)


# Tang et al., e-Energy 2019 (arXiv 1905.11012): the best core clock saved 8.7-23.1 % of the energy
# of DNN training and 19.6-26.4 % of inference. A lock at 80 % must land in those bands on the
# NVIDIA data-centre boards (L4 and MI300X, with a high idle share, and the batch-infer/embed kinds
# save less at 80 %: docs/simulator.md).
@pytest.mark.parametrize("model", ["V100-PCIE", "V100-SXM2", "A100-PCIE", "A100-SXM4", "H100", "H200", "L40S"])
@pytest.mark.parametrize(("kind", "low", "high"), [("train", 8.7, 23.1), ("llm-train", 8.7, 23.1),
                                                   ("llm-infer", 19.6, 26.4)])
def test_sm_clocks_locked_at_80_pct_save_what_tang_et_al_measured(
        model: str, kind: str, low: float, high: float) -> None:
    spec, k = find_model(model), KINDS[kind]
    full, locked = locked_clock_point(spec, k, 1.0, 1.0), locked_clock_point(spec, k, 1.0, 0.8)
    saved = 100 * (1 - locked.power_w * locked.slowdown / (full.power_w * full.slowdown))
    assert low <= saved <= high, saved
    assert locked.power_w < full.power_w and locked.slowdown > 1  # less power, never faster


# NVIDIA boards, where the published measurements come from. The MI300X (idle 19 % of TDP) is at
# -21 % energy / +15.3 % time at 60 %: docs/simulator.md.
@pytest.mark.parametrize("model", ["H100", "H200", "A100-SXM4", "A100-PCIE", "V100-SXM2", "L40S"])
@pytest.mark.parametrize("share", [0.6, 0.7])
def test_training_at_60_to_70_pct_of_tdp_saves_10_to_30_pct_for_3_to_15_pct_time(
        model: str, share: float) -> None:
    spec = find_model(model)
    cap = max(spec.min_cap_w, share * spec.tdp_w)
    energy, t = _rel(model, "llm-train", spec.tdp_w, cap)
    assert -30 <= energy <= -10 and 3 <= t <= 15, (energy, t)


@pytest.mark.parametrize("model", sorted(GPU_SPECS))
def test_inference_that_does_not_reach_the_cap_is_not_slowed(model: str) -> None:
    spec = GPU_SPECS[model]
    op = operating_point(spec, KINDS["llm-infer"], 0.3, 0.7 * spec.tdp_w)
    assert op.power_w < 0.7 * spec.tdp_w and op.slowdown == 1.0


@pytest.mark.parametrize("model", sorted(GPU_SPECS))
def test_limits_outside_the_range_are_refused_as_nvml_refuses_them(model: str) -> None:
    spec = GPU_SPECS[model]
    assert spec.check_cap(spec.min_cap_w) == spec.min_cap_w
    for bad in (spec.min_cap_w - 1, spec.tdp_w + 1, 0):
        with pytest.raises(ValueError, match="INVALID_ARGUMENT"):
            spec.check_cap(bad)


def test_model_lookup_by_substring() -> None:
    assert find_model("v100-pcie").model == "Tesla V100-PCIE-32GB"
    assert find_model("H100").tdp_w == 700
    assert find_model("mi300x").vendor == "amd"
    assert find_model("L4").model == "NVIDIA L4" and find_model("l40s").model == "NVIDIA L40S"
    with pytest.raises(ValueError, match="ambiguous"):
        find_model("A100")
    with pytest.raises(ValueError, match="matches none"):
        find_model("B200")


def test_jobs_in_the_fleet_stay_below_peak_and_training_mfu_is_realistic() -> None:
    """Over two simulated hours of every scenario: FLOP/J below the datasheet peak at the power
    drawn, and training's model FLOP utilisation in the published 30-60 % range."""
    t0 = 1_795_824_000 * NS - 7200 * NS
    for scenario in ("default", "mixed", "v100-lab"):
        pts = [p for p in SimulatedFleet(scenario=scenario).points_between(t0, t0 + 7200 * NS)
               if p.measurement == "job"]
        assert pts
        for p in pts:
            spec = GPU_SPECS[p.tag("gpu_model") or ""]
            gpu_s = float(p.field("active_s") or 0) * float(p.field("gpus") or 0)
            flops, energy = float(p.field("flops") or 0), float(p.field("energy_j") or 0)
            peak = spec.peak(p.tag("precision") or "") * 1e12
            assert flops / energy <= peak / (energy / gpu_s), p.tag("job")
            if p.tag("kind") == "train" and p.tag("precision") in ("bf16", "fp16"):
                assert 0.30 <= flops / gpu_s / peak <= 0.60, p.tag("job")
