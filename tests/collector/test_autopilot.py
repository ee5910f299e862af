"""The autopilot's controller as a pure state machine, and per-group measurement from points."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.autopilot import Decision, GroupController, Limits, Sample, Settings, Window
from collector.autopilot_groups import group_rounds, opted_in
from collector.schema import point

FAST = Settings(hold_s=30, settle_s=10)


def _feed(ctrl: GroupController, speed_at: dict[str, float], t0: float, seconds: float,
          util: float = 95.0) -> list[Decision]:
    """Run ``seconds`` of 10 s rounds of a job whose speed at a cap is speed_at(cap)."""
    out = []
    t = t0
    while t < t0 + seconds:
        t += 10
        cap = ctrl.cap_w
        rate = speed_at["f"](cap)  # type: ignore[operator]
        d = ctrl.observe(Sample(t, 10, rate * 10 * util / 100, cap * 0.9 * 10, util))
        if d is not None:
            out.append(d)
    return out


def test_steps_down_bisects_and_settles_within_the_budget() -> None:
    # speed falls 1 % per 10 W below 300 W: the budget (5 %) is crossed at 250 W.
    ctrl = GroupController(Limits(100, 400, 400), FAST)
    curve = {"f": lambda cap: 1.0 if cap >= 300 else 1 - (300 - cap) / 1000}
    decisions = _feed(ctrl, curve, 0, 3600)
    assert ctrl.state == "settled"
    assert 250 <= ctrl.cap_w <= 252.5  # within an eighth of a step of the boundary, never below
    assert decisions[0].reason == "explore"
    assert all(d.cap_w < d.previous_w for d in decisions if d.reason == "explore"
               and d.previous_w == 400)
    # the first decision carries the baseline it was measured against
    assert decisions[0].baseline is not None and decisions[0].audit()["baseline"]


def test_a_job_the_cap_never_slows_goes_to_the_minimum() -> None:
    ctrl = GroupController(Limits(150, 300, 300), FAST)
    _feed(ctrl, {"f": lambda cap: 1.0}, 0, 7200)
    assert ctrl.state == "settled" and ctrl.cap_w == 150


def test_settled_then_slower_rolls_back_to_the_original() -> None:
    ctrl = GroupController(Limits(100, 400, 400), FAST)
    curve = {"f": lambda cap: 1.0 if cap >= 300 else 1 - (300 - cap) / 1000}
    _feed(ctrl, curve, 0, 3600)
    assert ctrl.state == "settled" and ctrl.cap_w < 300
    curve["f"] = lambda cap: 1.0 if cap >= 390 else 0.7  # a new, far heavier phase
    decisions = _feed(ctrl, curve, 3600, 600)
    assert decisions and decisions[0].reason in ("rollback", "phase")
    assert decisions[0].cap_w == 400 and decisions[0].state == "baseline"
    # it explores again and settles where the new phase is within the budget
    assert ctrl.state == "settled" and ctrl.cap_w >= 390


def test_utilisation_shift_is_a_phase_change() -> None:
    ctrl = GroupController(Limits(100, 400, 400), FAST)
    curve = {"f": lambda cap: 1.0 if cap >= 300 else 1 - (300 - cap) / 1000}
    _feed(ctrl, curve, 0, 3600)
    decisions = _feed(ctrl, curve, 3600, 200, util=40.0)
    assert decisions and decisions[0].reason == "phase" and decisions[0].cap_w == 400


def test_settings_and_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_slowdown"):
        Settings(max_slowdown=0.9)
    with pytest.raises(ValueError, match="original 500 W is outside"):
        GroupController(Limits(100, 400, 500))


def test_window_speed_is_work_per_busy_second() -> None:
    w = Window(300).add(Sample(10, 10, 50, 3000, 50)).add(Sample(20, 10, 100, 3000, 100))
    assert w.throughput == pytest.approx(7.5)
    assert w.speed == pytest.approx(150 / 15)
    assert w.per == pytest.approx(150 / 6000) and w.power_w == pytest.approx(300)


samples = st.lists(st.tuples(st.floats(0.5, 30), st.floats(0, 1e6), st.floats(0, 1e5),
                             st.floats(0, 100)), min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(lo=st.floats(10, 500), span=st.floats(0, 800), orig_frac=st.floats(0, 1), rounds=samples,
       hold=st.floats(1, 120), settle=st.floats(0, 60), step=st.floats(0.005, 0.5))
def test_limits_stay_in_range_and_change_at_most_once_per_interval(
        lo: float, span: float, orig_frac: float, rounds: list[tuple[float, float, float, float]],
        hold: float, settle: float, step: float) -> None:
    hi = lo + span
    cfg = Settings(hold_s=hold, settle_s=settle, step_frac=step)
    ctrl = GroupController(Limits(lo, hi, lo + orig_frac * span), cfg)
    t = 0.0
    changes: list[Decision] = []
    for seconds, work, energy, util in rounds:
        t += seconds
        d = ctrl.observe(Sample(t, seconds, work, energy, util))
        if d is not None:
            assert lo <= d.cap_w <= hi
            assert d.cap_w != d.previous_w
            changes.append(d)
        assert lo <= ctrl.cap_w <= hi
    for a, b in itertools.pairwise(changes):
        assert b.time_s - a.time_s >= cfg.change_interval_s - 1e-6


def _gpu(host: str, gpu: int, energy: float, util: float = 90.0, cap: float = 400.0) -> object:
    return point("gpu", {"host": host, "gpu": str(gpu)},
                 {"energy_j": energy, "util_pct": util, "power_limit_w": cap}, 10**9)


def _job(host: str, job: str, mask: int, samples: float, **tags: str) -> object:
    return point("job", {"host": host, "job": job, **tags},
                 {"samples": samples, "gpu_mask": mask}, 10**9)


def test_groups_opt_in_by_tag_or_rule_and_shared_gpus_are_left_alone() -> None:
    pts = [_gpu("n", 0, 100), _gpu("n", 1, 300), _gpu("n", 2, 50), _gpu("n", 3, 50),
           _job("n", "a", 0b11, 20, autopilot="on"), _job("n", "b", 0b100, 5),
           _job("n", "c", 0b1100, 5, workload="llm"), _job("n", "d", 0b1000, 1)]
    rounds = group_rounds(pts, 1.0, ["ll*"])  # type: ignore[arg-type]
    assert [(r.job, r.gpus) for r in rounds] == [("a", (0, 1))]  # c shares gpu 3 with d
    a = rounds[0]
    assert a.sample.energy_j == 400 and a.sample.work == 20 and a.work_unit == "samples"
    assert opted_in({"job": "x", "workload": "llm"}, ["ll*"])
    assert not opted_in({"job": "x", "autopilot": "off"}, [])
    pod = {"job": "k8s-pod-1", "namespace": "ml-train", "pod": "llm-0"}
    assert opted_in(pod, ["k8s:ml-train/*"]) and not opted_in(pod, ["k8s:serving/*"])
    assert not opted_in({"job": "k8s:ml-train/x"}, ["k8s:ml-train/*"])  # pods only


def test_jobs_api_opt_in_reaches_the_agents_job_points() -> None:
    import json

    from collector.job_report import parse_progress
    from collector.sources.base import Tick
    from collector.tracker import JobTracker
    from wattlens.jobs import Job

    job = Job("ft-1", autopilot=True, gpus=[0, 1], mode="standalone")
    job.add(samples=64)
    tracker = JobTracker("n", clock=lambda: 5.0)
    tracker.record(parse_progress("ft-1", json.dumps(job._payload(False)).encode()))
    tracker.sample(Tick(10**9, 1.0))
    pts = [p for p in tracker.sample(Tick(2 * 10**9, 2.0)) if p.measurement == "job"]
    assert pts and opted_in(pts[0].tag_map, [])
    plain = Job("ft-2", gpus=[0], mode="standalone")
    assert "autopilot" not in plain.metadata["tags"]


def test_autopilot_on_the_nvml_binding_names(tmp_path: object) -> None:
    """The agent side on the fake NVML module (the real binding's names and error codes): a job whose
    speed falls below 400 W gets a lower limit, inside the GPU's range, and the original back at exit."""
    from pathlib import Path

    from collector.actuation import PowerCapActuator
    from collector.autopilot_agent import Autopilot
    from tests.collector.sources.fake_pynvml import FakeGpu, FakeNvml

    tmp = Path(str(tmp_path))
    nv = FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-1")])
    act = PowerCapActuator(host="node-a", enabled=True, token="t0ken-for-tests-only",
                           audit_path=tmp / "audit.jsonl", nvml=nv, is_root=lambda: True)
    pilot = Autopilot({"node-a": act}, originals=tmp / "orig.json", rules=["train-*"],
                      settings=Settings(hold_s=30, settle_s=10))
    pilot.recover()
    for k in range(1, 200):
        t_ns = k * 10 * 10**9
        caps = [g.limit_mw / 1000 for g in nv.gpus]
        speed = min(1.0, 1 - (400 - min(caps)) / 1000) if min(caps) < 400 else 1.0
        pts = [point("gpu", {"host": "node-a", "gpu": str(i)},
                     {"energy_j": 10 * min(cap, 450.0), "util_pct": 95.0, "power_limit_w": cap}, t_ns)
               for i, cap in enumerate(caps)]
        pts.append(point("job", {"host": "node-a", "job": "train-1"},
                         {"samples": 10 * 100 * speed, "gpu_mask": 0b11}, t_ns))
        pilot(pts)
        for i, g in enumerate(nv.gpus):
            assert 200_000 <= g.limit_mw <= 700_000, (k, i)
    assert nv.set_limits and all(200_000 <= mw <= 700_000 for _i, mw in nv.set_limits)
    assert {g.limit_mw for g in nv.gpus} == {nv.gpus[0].limit_mw}  # the group moves together
    assert 350_000 <= nv.gpus[0].limit_mw <= 400_000  # within the 5 % budget, near its edge
    assert (tmp / "orig.json").exists()
    pilot.close()
    assert [g.limit_mw for g in nv.gpus] == [700_000, 700_000] and not (tmp / "orig.json").exists()


def test_settled_limit_that_costs_more_energy_per_work_rolls_back() -> None:
    ctrl = GroupController(Limits(100, 400, 400), FAST)
    curve = {"f": lambda cap: 1.0 if cap >= 300 else 1 - (300 - cap) / 1000}
    _feed(ctrl, curve, 0, 3600)
    assert ctrl.state == "settled"
    # same speed and utilisation, but twice the energy per sample at the settled limit
    t = 3600.0
    decisions = []
    for _ in range(20):
        t += 10
        d = ctrl.observe(Sample(t, 10, curve["f"](ctrl.cap_w) * 9.5,  # type: ignore[operator]
                                ctrl.cap_w * 0.9 * 10 * (2.0 if ctrl.cap_w < 400 else 1), 95))
        if d is not None:
            decisions.append(d)
    assert decisions and decisions[0].reason == "rollback" and decisions[0].cap_w == 400
