"""The idle-power policy: each device's energy split into idle (its idle draw) and active; active by
activity, idle by the operator's policy; every joule still a job's or unattributed, under each policy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.attribution import Presence
from collector.idle import IDLE_POLICIES, check_idle_policy, idle_power_w, split_idle
from collector.job_round import GpuReading, JobState, RoundInput, job_round, job_team
from collector.schema import Point

WORK = {"samples": 1.0, "tokens": 0.0, "steps": 1.0, "flops": 0.0}


def _example(policy: str) -> RoundInput:
    """The worked example of docs/attribution.md: one GPU (idle draw 70 W), one CPU (50 W), 10 s;
    job A there all along at 60 % SM, job B for the first 5 s at 20 %."""
    jobs = {"A": JobState("A", first_s=0.0, last_s=10.0, gpus=(0,), pids={100}, work=dict(WORK)),
            "B": JobState("B", first_s=0.0, last_s=5.0, end_s=5.0, gpus=(0,), pids={200},
                          work=dict(WORK))}
    return RoundInput(
        host="n1", wall_ns=10**18, t0=0.0, now_s=10.0, jobs=jobs,
        gpus={0: GpuReading(0, "Test GPU", 3000.0, 60.0, 700.0)}, cpu_energy_j=1000.0,
        pids_now={0: [100, 200]}, prev_pids={0: {100, 200}}, utils={0: {100: 60.0, 200: 20.0}},
        pid_job={}, pid_age_s={}, job_ticks={"A": 60.0, "B": 20.0}, busy_ticks=100.0,
        attribute_cpu=True, can_hold=True, methods={}, held={}, live=frozenset({"A"}),
        idle_policy=policy, gpu_idle_w={0: 70.0}, cpu_idle_w=50.0)


def _by_job(points: list[Point], field: str = "energy_j") -> dict[str, float]:
    out: dict[str, float] = {}
    for p in points:
        out[p.tag("job") or ""] = out.get(p.tag("job") or "", 0.0) + float(p.field(field) or 0.0)
    return out


# GPU: idle 70 W x 10 s = 700 J, active 2300 J: 0-5 s A:B = 60:20 of 1150 J, 5-10 s A alone.
# CPU: idle 50 W x 10 s = 500 J, active 500 J by CPU time: A 60, B 20 of 100 busy ticks.
EXPECTED = {  # policy -> (A, B, unattributed, A's idle share, B's idle share)
    "allocation": (2012.5 + 525 + 300 + 375, 287.5 + 175 + 100 + 125, 100.0, 900.0, 300.0),
    "even": (2012.5 + 350 + 300 + 250, 287.5 + 350 + 100 + 250, 100.0, 600.0, 600.0),
    "unattributed": (2012.5 + 300, 287.5 + 100, 100.0 + 700 + 500, 0.0, 0.0),
}


@pytest.mark.parametrize("policy", IDLE_POLICIES)
def test_the_worked_example_of_the_docs(policy: str) -> None:
    points = job_round(_example(policy)).points
    energy, idle = _by_job(points), _by_job(points, "idle_j")
    a, b, rest, a_idle, b_idle = EXPECTED[policy]
    assert energy["A"] == pytest.approx(a) and energy["B"] == pytest.approx(b)
    assert energy["unattributed"] == pytest.approx(rest)
    assert idle["A"] == pytest.approx(a_idle) and idle["B"] == pytest.approx(b_idle)
    assert math.fsum(energy.values()) == pytest.approx(3000.0 + 1000.0, rel=1e-12)
    assert {p.tag("idle_policy") for p in points} == {policy}


def test_policies_move_only_idle_energy() -> None:
    """Active energy is the same whatever the policy: energy minus idle share is policy-free."""
    actives = []
    for policy in IDLE_POLICIES:
        points = job_round(_example(policy)).points
        e, i = _by_job(points), _by_job(points, "idle_j")
        actives.append((round(e["A"] - i["A"], 6), round(e["B"] - i["B"], 6)))
    assert len(set(actives)) == 1


def test_idle_draw_is_the_lowest_idle_power_else_the_model_figure() -> None:
    assert idle_power_w(61.5, "NVIDIA H100 80GB HBM3") == (61.5, "lowest power at <= 2% utilisation")
    assert idle_power_w(None, "NVIDIA H100 80GB HBM3")[0] == 70  # collector/sim/models.py
    assert idle_power_w(None, "Unknown GPU") == (None, "unknown")


def test_a_bad_policy_names_the_option_and_the_value() -> None:
    with pytest.raises(ValueError, match=r"--idle-policy: expected one of allocation, even, "
                                         r"unattributed, got 'fair'"):
        check_idle_policy("fair")


def test_team_comes_from_the_job_then_the_environment_then_the_namespace() -> None:
    assert job_team({"team": "ml", "namespace": "ns"}, "slurm-acct", {"ns": "x"}) == "ml"
    assert job_team({"namespace": "ns"}, "slurm-acct", {"ns": "x"}) == "slurm-acct"
    assert job_team({"namespace": "ns"}, None, {"ns": "x"}) == "x"
    assert job_team({"namespace": "ns"}, None, {}) == "ns"  # unmapped: the namespace is the team
    assert job_team({}, None, {}) == ""


# --- the property: parts equal the whole, over random layouts and under each policy -------------

layouts = st.fixed_dictionaries({
    "gpus": st.lists(st.tuples(st.floats(0, 5000), st.one_of(st.none(), st.floats(0, 800)),
                               st.floats(0, 100)), min_size=1, max_size=4),
    "jobs": st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10), st.sets(st.integers(0, 3)),
                               st.sampled_from(["", "ml", "infra", "search"]),
                               st.floats(0, 100), st.floats(0, 200)), max_size=5),
    "stray": st.lists(st.tuples(st.integers(0, 3), st.floats(0, 100)), max_size=3),
    "cpu": st.one_of(st.none(), st.floats(0, 2000)),
    "cpu_idle_w": st.one_of(st.none(), st.floats(0, 300)),
    "busy": st.one_of(st.none(), st.floats(0, 500)),
})


def _round(layout: dict, policy: str) -> tuple[RoundInput, float]:  # type: ignore[type-arg]
    gpus = {i: GpuReading(i, "Test GPU", e, u, 700.0) for i, (e, _w, u) in enumerate(layout["gpus"])}
    idle_w = {i: w for i, (_e, w, _u) in enumerate(layout["gpus"]) if w is not None}
    jobs: dict[str, JobState] = {}
    pids: dict[int, list[int]] = {}
    utils: dict[int, dict[int, float]] = {}
    ticks: dict[str, float] = {}
    for k, (a, b, on, team, util, cpu_ticks) in enumerate(layout["jobs"]):
        on_gpus = tuple(sorted(g for g in on if g in gpus))
        pid = 1000 + k
        jobs[f"j{k}"] = JobState(f"j{k}", first_s=min(a, b), last_s=max(a, b),
                                 end_s=max(a, b) if k % 2 else None, gpus=on_gpus, pids={pid},
                                 tags={"team": team} if team else {}, work=dict(WORK))
        for g in on_gpus:
            pids.setdefault(g, []).append(pid)
            utils.setdefault(g, {})[pid] = util
        ticks[f"j{k}"] = cpu_ticks
    pid_job: dict[int, str | None] = {}
    for k, (g, util) in enumerate(layout["stray"]):  # processes found through /proc, no report
        if g in gpus:
            pid = 5000 + k
            pids.setdefault(g, []).append(pid)
            utils.setdefault(g, {})[pid] = util
            pid_job[pid] = f"proc-{k % 2}"
    total = math.fsum(g.energy_j or 0.0 for g in gpus.values()) + (layout["cpu"] or 0.0)
    r = RoundInput(
        host="n1", wall_ns=10**18, t0=0.0, now_s=10.0, jobs=jobs, gpus=gpus,
        cpu_energy_j=layout["cpu"], pids_now=pids, prev_pids={g: set(p) for g, p in pids.items()},
        utils=utils, pid_job=pid_job, pid_age_s={p: 100.0 for p in pid_job}, job_ticks=ticks,
        busy_ticks=layout["busy"], attribute_cpu=True, can_hold=False, methods={}, held={},
        live=frozenset(jobs), idle_policy=policy, gpu_idle_w=idle_w,
        cpu_idle_w=layout["cpu_idle_w"])
    return r, total


@settings(max_examples=150, deadline=None)
@given(layout=layouts, policy=st.sampled_from(IDLE_POLICIES))
def test_parts_equal_the_whole_under_every_policy(layout: dict, policy: str) -> None:  # type: ignore[type-arg]
    r, total = _round(layout, policy)
    points = job_round(r).points
    energy = [float(p.field("energy_j") or 0.0) for p in points]
    assert all(e >= 0 for e in energy)
    assert math.fsum(energy) == pytest.approx(total, rel=1e-9, abs=1e-6)
    idle = [float(p.field("idle_j") or 0.0) for p in points]
    assert all(0 <= i <= e + 1e-9 for i, e in zip(idle, energy, strict=True))
    by_team: dict[str, float] = {}
    for p in points:
        by_team[p.tag("team") or "(none)"] = by_team.get(p.tag("team") or "(none)", 0.0) + (
            float(p.field("energy_j") or 0.0))
    assert math.fsum(by_team.values()) == pytest.approx(total, rel=1e-9, abs=1e-6)
    teams = {f"j{k}": job[3] for k, job in enumerate(layout["jobs"])}
    for p in points:  # each reported job's points carry its team
        if (p.tag("job") or "") in teams:
            assert (p.tag("team") or "") == teams[p.tag("job") or ""]
    if policy == "unattributed":
        assert math.fsum(idle[i] for i, p in enumerate(points) if p.tag("job") != "unattributed") == 0


@given(idle_j=st.floats(0, 1e6), policy=st.sampled_from(IDLE_POLICIES),
       spans=st.dictionaries(st.sampled_from("abcd"), st.tuples(st.floats(0, 10), st.floats(0, 10))),
       others=st.sets(st.sampled_from("abcdef")))
def test_split_idle_conserves(idle_j: float, policy: str, spans: dict[str, tuple[float, float]],
                              others: set[str]) -> None:
    holders = {k: Presence(min(a, b), max(a, b)) for k, (a, b) in spans.items()}
    split = split_idle(idle_j, 10.0, holders, set(holders) | others, policy)
    assert math.fsum(split.shares_j.values()) + split.unattributed_j == pytest.approx(idle_j, rel=1e-12)
    assert all(v >= 0 for v in split.shares_j.values())


def test_the_tracker_learns_a_gpus_idle_draw_at_low_utilisation(tmp_path: Path) -> None:
    """Through fake NVML: a GPU seen at 1 % drawing 50 W has a 50 W idle draw afterwards; busy, its
    idle energy goes to the jobs holding it (allocation) and only the rest by utilisation."""
    from tests.collector.test_attribution import Rig, jobs_of, write_proc

    rig = Rig(tmp_path, idle_policy="allocation")
    rig.round()
    rig.nv.gpus[0].util = (1, 0)
    rig.advance(10.0, [500.0, 0.0, 0.0])  # 50 W at 1 %: the idle draw
    rig.round()
    for pid, job in ((100, "a"), (200, "b")):
        write_proc(tmp_path, pid, environ={"WATTLENS_JOB": job}, start_ticks=rig.start_ticks(60))
    rig.nv.gpus[0].pids = [100, 200]
    rig.nv.gpus[0].util = (90, 40)
    rig.nv.process_util = {0: {100: 75, 200: 25}}
    rig.round()
    rig.advance(10.0, [2500.0, 0.0, 0.0])
    jobs = jobs_of(rig.round())
    # idle 50 W x 10 s = 500 J, half each (both held it all along); active 2000 J at 75 : 25.
    # (/proc/stat did not move this round, so the CPU estimate has no energy to share.)
    a, b = jobs[("a", "")], jobs[("b", "")]
    assert (a.field("idle_j"), b.field("idle_j")) == (pytest.approx(250.0), pytest.approx(250.0))
    assert a.field("energy_j") == pytest.approx(250.0 + 2000.0 * 0.75)
    assert b.field("energy_j") == pytest.approx(250.0 + 2000.0 * 0.25)


def test_on_a_mig_gpu_allocation_weighs_each_jobs_instance() -> None:
    """On MIG a job holds only its instance: idle energy by allocation follows the instance weights
    (a 3g and a 2g instance: 3 : 2), where a whole GPU's holders share it by time alone."""
    r = _example("allocation")
    jobs = {"A": JobState("A", first_s=0.0, last_s=10.0, gpus=(0,), pids={100}, work=dict(WORK)),
            "B": JobState("B", first_s=0.0, last_s=10.0, gpus=(0,), pids={200}, work=dict(WORK))}
    for mig, (a_idle, b_idle) in ((True, (420.0, 280.0)), (False, (350.0, 350.0))):
        rr = RoundInput(**{**r.__dict__, "jobs": jobs, "cpu_energy_j": None,
                           "utils": {0: {100: 60.0, 200: 40.0}},
                           "gpus": {0: GpuReading(0, "Test GPU", 3000.0, None, 700.0, mig=mig)}})
        idle = _by_job(job_round(rr).points, "idle_j")
        assert (idle["A"], idle["B"]) == (pytest.approx(a_idle), pytest.approx(b_idle))
