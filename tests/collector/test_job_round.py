"""The tracker's round as a pure function: same input, same points; every joule goes to a job or to unattributed."""

from __future__ import annotations

import math

import pytest

from collector.job_round import GpuReading, JobState, RoundInput, job_round
from collector.schema import Point


def _input(**kw: object) -> RoundInput:
    jobs = {
        "a": JobState("a", first_s=0.0, last_s=9.0, gpus=(0,), pids={101},
                      work={"samples": 64.0, "tokens": 0.0, "steps": 1.0, "flops": 0.0}),
        "b": JobState("b", first_s=5.0, last_s=9.0, gpus=(1,),
                      work={"samples": 32.0, "tokens": 0.0, "steps": 1.0, "flops": 0.0}),
    }
    base: dict[str, object] = dict(
        host="n1", wall_ns=10**18, t0=0.0, now_s=10.0, jobs=jobs,
        gpus={0: GpuReading(0, "H100", 3000.0, 90.0, 700.0), 1: GpuReading(1, "H100", 2000.0, 40.0, 700.0),
              2: GpuReading(2, "H100", 600.0, 0.0, 700.0)},
        cpu_energy_j=500.0, pids_now={0: [101], 1: [], 2: [303]}, prev_pids={0: {101}},
        utils={}, pid_job={303: "found"}, pid_age_s={303: 4.0}, job_ticks={"a": 100.0, "found": 50.0},
        busy_ticks=400.0, attribute_cpu=True, can_hold=True, methods={}, held={},
        live=frozenset({"a", "b"}))
    base.update(kw)
    return RoundInput(**base)  # type: ignore[arg-type]


def _energy(points: list[Point]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in points:
        key = p.tag("job") if p.tag("job") != "unattributed" else f"unattributed/{p.tag('kind')}"
        out[key] = out.get(key, 0.0) + (p.field("energy_j") or 0.0)
    return out


def test_the_same_input_gives_the_same_points() -> None:
    first, second = job_round(_input()), job_round(_input())
    assert [(p.tags, p.fields) for p in first.points] == [(p.tags, p.fields) for p in second.points]


def test_every_joule_is_a_jobs_or_unattributed() -> None:
    result = job_round(_input())
    energy = _energy(result.points)
    assert math.fsum(energy.values()) == pytest.approx(3000.0 + 2000.0 + 600.0 + 500.0, rel=1e-12)
    assert energy["a"] > energy["b"] > 0  # a ran the whole interval, b half of it
    assert energy["found"] > 0  # a GPU process found through /proc is a job too
    work = {p.tag("job"): p.field("samples") for p in result.points}
    assert work["a"] == 64.0 and work["b"] == 32.0


def test_work_without_energy_waits_a_round_in_the_live_job() -> None:
    jobs = {"w": JobState("w", first_s=0.0, last_s=9.0,
                          work={"samples": 8.0, "tokens": 0.0, "steps": 1.0, "flops": 0.0})}
    result = job_round(_input(jobs=jobs, live=frozenset({"w"}), pids_now={}, prev_pids={},
                              pid_job={}, job_ticks={}))
    assert result.held_work == {"w": {"samples": 8.0, "steps": 1.0}}
    assert result.held == {"w": 1}
    assert "w" not in {p.tag("job") for p in result.points}


def test_a_job_point_carries_the_mean_sm_clock_of_its_gpus() -> None:
    """The SM clock (NVML_CLOCK_SM) shows a clock lock on the job's own points (analytics.clock_lock)."""
    gpus = {0: GpuReading(0, "H100", 3000.0, 90.0, 700.0, sm_clock_mhz=1584.0),
            1: GpuReading(1, "H100", 2000.0, 40.0, 700.0, sm_clock_mhz=1980.0),
            2: GpuReading(2, "H100", 600.0, 0.0, 700.0)}
    two = {"a": JobState("a", first_s=0.0, last_s=9.0, gpus=(0, 1), pids={101},
                         work={"samples": 64.0, "tokens": 0.0, "steps": 1.0, "flops": 0.0})}
    clocks = {p.tag("job"): p.field("sm_clock_mhz") for p in job_round(_input(gpus=gpus, jobs=two,
                                                                          live=frozenset({"a"}))).points}
    assert clocks["a"] == pytest.approx((1584.0 + 1980.0) / 2)
    unknown = {p.tag("job"): p.field("sm_clock_mhz") for p in job_round(_input()).points}
    assert unknown["a"] is None  # a source that cannot read the clock: no field, not a 0
