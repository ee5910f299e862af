"""The autopilot end to end on the simulated fleet, in simulated time: the agent's observer, the
actuation path on the simulated NVML, and the physics obeying."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.autopilot import Settings
from collector.autopilot_agent import Autopilot
from collector.autopilot_sim import run_autopilot
from collector.schema import Point
from collector.sim.models import GPU_SPECS
from collector.sim.nvml import NVML_ERROR_INVALID_ARGUMENT, NVMLError, SimulatedNvml
from collector.sim.physics import KINDS, operating_point
from collector.sources import nvml as nvml_source
from collector.sources.base import Tick
from collector.sources.simulated import NS, SIM_TICK_S, SimulatedFleet

DAY0 = 20_000 * 86400 * NS  # midnight: the scenario's training runs start here
H = 3600 * NS


def _fleet(tmp_path: Path | None = None) -> SimulatedFleet:
    return SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot",
                          cap_state=tmp_path / "sim.json" if tmp_path else None)


def _keep(p: Point) -> bool:
    return p.measurement in ("gpu", "job", "autopilot")


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "cap-audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _energy_work(points: list[Point], host: str, gpus: tuple[int, ...], job: str,
                 since_ns: int = 0) -> tuple[float, float]:
    e = sum(float(p.field("energy_j") or 0) for p in points if p.measurement == "gpu"
            and p.tag("host") == host and int(p.tag("gpu") or -1) in gpus and p.time_ns > since_ns)
    w = sum(float(p.field("samples") or 0) for p in points if p.measurement == "job"
            and p.tag("host") == host and (p.tag("job") or "").startswith(job) and p.time_ns > since_ns)
    return e, w


def test_the_simulator_obeys_a_limit_set_through_nvml(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    nv = SimulatedNvml(fleet, "node-01")  # H100 LLM training at 700 W
    t = DAY0 + 600 * NS
    fleet.sample(Tick(t, 0))
    before = fleet.points_between(t, t + 60 * NS)
    assert nvml_source.get_power_limits(0, nvml=nv) == (200.0, 700.0, 700.0, 700.0)
    nvml_source.set_power_limit_w(0, 400, nvml=nv)
    after = fleet.points_between(t + SIM_TICK_S * NS, t + 70 * NS)

    def gpu0(points: list[Point]) -> Point:
        return next(p for p in points if p.measurement == "gpu" and p.tag("host") == "node-01"
                    and p.tag("gpu") == "0")

    assert gpu0(before).field("power_limit_w") == 700
    assert gpu0(after).field("power_limit_w") == 400
    assert float(gpu0(after).field("power_w") or 0) <= 400 < float(gpu0(before).field("power_w") or 0)
    # the data already sampled does not change after the fact
    assert fleet.points_between(t, t + 60 * NS) == fleet.points_between(t, t + 60 * NS)
    assert gpu0(fleet.points_between(t - 60 * NS, t)).field("power_limit_w") == 700
    with pytest.raises(ValueError, match="outside its allowed range 200-700 W"):
        nvml_source.set_power_limit_w(0, 150, nvml=nv)
    with pytest.raises(NVMLError) as err:
        nv.nvmlDeviceSetPowerManagementLimit(nv.nvmlDeviceGetHandleByIndex(0), 900_000)
    assert err.value.value == NVML_ERROR_INVALID_ARGUMENT
    # the limit outlives the process, as a GPU's does: a new fleet reads it back
    assert _fleet(tmp_path).current_cap("node-01", 0) == 400


def test_loop_end_to_end_saves_energy_within_the_budget_and_leaves_others_alone(
        tmp_path: Path) -> None:
    end = DAY0 + 2 * H
    original, _ = run_autopilot(_fleet(), DAY0, end, 10, state_dir=tmp_path / "o", enabled=False,
                                keep=_keep)
    fleet = _fleet()
    run, pilot = run_autopilot(fleet, DAY0, end, 10, state_dir=tmp_path, rules=["ap-*"], keep=_keep)
    for host, gpus, job in (("node-00", (0, 1), "ap-bert"), ("node-01", (0, 1, 2, 3), "ap-llm"),
                            ("node-02", (0, 1, 2, 3), "ap-serve")):
        e0, w0 = _energy_work(original.points, host, gpus, job, DAY0 + H)
        e1, w1 = _energy_work(run.points, host, gpus, job, DAY0 + H)
        assert e1 / w1 < 0.95 * e0 / w0, host  # settled: at least 5 % less energy per sample
        assert 1 - w1 / w0 <= 0.06, host  # and within the 5 % budget (+1 point)
        # the saving the autopilot reports (from its measured baseline) is the true one, from
        # the same fleet run at its original limits with the same noise
        e0, w0 = _energy_work(original.points, host, gpus, job)
        e1, w1 = _energy_work(run.points, host, gpus, job)
        true_pct = 100 * (e0 / w0 * w1 - e1) / (e0 / w0 * w1)
        windows = [p for p in run.of("autopilot") if p.tag("event") == "window" and p.tag("host") == host]
        saved = sum(float(p.field("saved_j") or 0) for p in windows)
        used = sum(float(p.field("energy_j") or 0) for p in windows)
        assert 100 * saved / (used + saved) == pytest.approx(true_pct, abs=0.5), host
    # the job next to ap-bert on node-00 never opted in: its GPUs were never touched
    audit = _audit(tmp_path)
    assert audit and not [a for a in audit if a["host"] == "node-00" and a["gpu"] in (2, 3)]
    assert {p.field("power_limit_w") for p in run.points if p.measurement == "gpu"
            and p.tag("host") == "node-00" and p.tag("gpu") in ("2", "3")} == {400.0}
    # every limit inside [min, max]; every change audited with its measurements
    for p in run.points:
        if p.measurement == "gpu":
            spec = GPU_SPECS[fleet.group_of(p.tag("host") or "", int(p.tag("gpu") or 0)).model]
            assert spec.min_cap_w <= float(p.field("power_limit_w") or 0) <= spec.tdp_w
    changes = [a for a in audit if a["who"] == "autopilot"]
    assert changes and all(a["detail"]["measured"]["throughput"] > 0 and a["detail"]["baseline"]
                           for a in changes)
    # closing restored every original limit and forgot them
    assert all(fleet.current_cap(g.host, i) == g.cap_w for g in fleet.groups for i in g.gpu_indices)
    assert not (tmp_path / "autopilot-originals.json").exists()
    assert pilot.paused is False


def test_phase_change_that_breaks_the_budget_rolls_back_and_explores_again(tmp_path: Path) -> None:
    fleet = _fleet()
    run, _ = run_autopilot(fleet, DAY0, DAY0 + 3 * H, 10, state_dir=tmp_path, rules=["ap-phase-*"],
                           keep=lambda p: p.measurement == "autopilot")
    events = [(p.time_ns - DAY0) / NS for p in run.points]
    assert events
    changes = [p for p in run.points if p.tag("event") == "change"]
    light_cap = next(float(p.field("cap_w") or 0) for p in run.points if p.tag("event") == "settled")
    # at the light phase's limit the heavy phase (from 2 h on) is far over the budget ...
    spec = GPU_SPECS["NVIDIA H100 80GB HBM3"]
    assert operating_point(spec, KINDS["llm-train"], 0.97, light_cap).slowdown - 1 > 0.10
    # ... so within two windows of it the autopilot rolls back to the original limit
    back = next(p for p in changes if p.tag("reason") in ("rollback", "phase")
                and p.time_ns >= DAY0 + 2 * H)
    assert back.field("cap_w") == 700 and back.time_ns - (DAY0 + 2 * H) <= 170 * NS
    # and settles again where the heavy phase is within the budget (+1 point)
    again = [p for p in run.points if p.tag("event") == "settled" and p.time_ns > back.time_ns]
    assert again
    cap = float(again[0].field("cap_w") or 0)
    assert cap > light_cap
    assert operating_point(spec, KINDS["llm-train"], 0.97, cap).slowdown - 1 <= 0.06


def test_kill_switch_restores_every_limit_at_once_and_holds(tmp_path: Path) -> None:
    fleet = _fleet()
    kill = tmp_path / "autopilot.stop"
    seen: dict[str, Any] = {}

    def on_round(t: int, pilot: Autopilot) -> None:
        if t == DAY0 + 1800 * NS:
            assert (tmp_path / "autopilot-originals.json").exists()  # changes made by now
            kill.touch()
        elif t == DAY0 + 1810 * NS:
            seen["caps"] = {(g.host, i): fleet.current_cap(g.host, i)
                            for g in fleet.groups for i in g.gpu_indices}
            seen["originals"] = (tmp_path / "autopilot-originals.json").exists()
            seen["paused"] = pilot.paused
        elif t == DAY0 + 2400 * NS:
            seen["audit_len"] = len(_audit(tmp_path))
            kill.unlink()

    run_autopilot(fleet, DAY0, DAY0 + 3600 * NS, 10, state_dir=tmp_path, rules=["ap-*"],
                  on_round=on_round, settings=Settings())
    assert seen["paused"] and not seen["originals"]
    assert seen["caps"] == {(g.host, i): g.cap_w for g in fleet.groups for i in g.gpu_indices}
    audit = _audit(tmp_path)
    killed_at = next(a["time_s"] for a in audit if (a.get("detail") or {}).get("reason") == "kill switch")
    quiet = [a for a in audit[:seen["audit_len"]] if a["time_s"] > killed_at and a["who"] == "autopilot"]
    assert quiet == []  # nothing changed while the switch was on
    assert len(audit) > seen["audit_len"]  # and it resumed once the file was gone


def test_a_limit_someone_else_sets_wins(tmp_path: Path) -> None:
    fleet = _fleet()
    operator = SimulatedNvml(fleet, "node-01")
    marks: dict[str, Any] = {}

    def on_round(t: int, pilot: Autopilot) -> None:
        if t == DAY0 + 2400 * NS:  # well after node-01 settled
            nvml_source.set_power_limit_w(0, 600, nvml=operator)  # `wattlens cap`, nvidia-smi -pl
            marks["audit_len"] = len(_audit(tmp_path))

    run_autopilot(fleet, DAY0, DAY0 + 3600 * NS, 10, state_dir=tmp_path, rules=["ap-*"],
                  on_round=on_round)
    later = _audit(tmp_path)[marks["audit_len"]:]
    assert not [a for a in later if a["host"] == "node-01" and a["who"] == "autopilot"]
    mine = {a["gpu"] for a in later if a["host"] == "node-01" and a["who"] == "autopilot:restore"}
    assert mine == {1, 2, 3}  # its own changes undone; the operator's gpu 0 kept as they set it
    assert fleet.current_cap("node-01", 0) == 600
    assert [fleet.current_cap("node-01", g) for g in (1, 2, 3)] == [700, 700, 700]
    # the other groups were steered to the end: their limits came back only at exit
    exits = {a["host"] for a in later if a["who"] == "autopilot:restore"
             and a["detail"]["reason"] == "agent exit"}
    assert exits == {"node-00", "node-02", "node-03"}
