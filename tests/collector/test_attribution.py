"""Per-job energy: the pure split, /proc and cgroup job mapping, and the tracker over fake NVML and /proc."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.attribution import (
    CPU_TIME,
    EVEN_SPLIT,
    EXCLUSIVE,
    UNATTRIBUTED,
    UTIL_SHARE,
    EnergyTap,
    NvmlProcesses,
    Presence,
    ProcTree,
    job_from_cgroup,
    job_from_environ,
    split_by_ticks,
    split_energy,
)
from collector.ingest import JobTracker, Progress, with_jobs
from collector.schema import Point
from collector.sources.base import Tick
from collector.sources.cpu_estimate import CpuEstimateSource
from collector.sources.nvml import NvmlSource
from tests.collector.sources.fake_pynvml import NVML_ERROR_NOT_FOUND, FakeGpu, FakeNvml, NVMLError

CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- the pure split ------------------------------------------------------------------------

presence_st = st.builds(
    Presence,
    start_s=st.floats(-5, 15, allow_nan=False),
    end_s=st.floats(-5, 15, allow_nan=False),
    util=st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
)


@settings(max_examples=400, deadline=None)
@given(energy=st.floats(0, 1e7, allow_nan=False), interval=st.floats(0.01, 10, allow_nan=False),
       presences=st.dictionaries(st.sampled_from("abcdef"), presence_st, max_size=6))
# Regressions found by CI's fuzz budget: a subnormal utilisation weight once gave 2 J of 1.5 J.
@example(energy=1.5, interval=1.0, presences={"a": Presence(0.0, 1.0, None),
                                              "b": Presence(0.0, 1.0, 5e-324)})
@example(energy=1.0, interval=1.5, presences={"a": Presence(0.0, 1.0, None),
                                              "b": Presence(0.0, 1.0, 5e-324)})
def test_split_conserves_energy_and_never_goes_negative(energy: float, interval: float,
                                                        presences: dict[str, Presence]) -> None:
    split = split_energy(energy, interval, presences)
    total = math.fsum(split.shares_j.values()) + split.unattributed_j
    assert total == pytest.approx(energy, rel=1e-9, abs=1e-9)
    assert all(v >= 0 for v in split.shares_j.values()) and split.unattributed_j >= 0
    for job, share in split.shares_j.items():
        p = presences[job]
        overlap = max(0.0, min(p.end_s, interval) - max(p.start_s, 0.0))
        # A job never gets more than the energy of the time it was there.
        assert share <= energy * overlap / interval * (1 + 1e-9) + 1e-9


@settings(max_examples=200, deadline=None)
@given(energy=st.floats(0, 1e6, allow_nan=False), busy=st.floats(0, 1e6, allow_nan=False),
       ticks=st.dictionaries(st.sampled_from("abcd"), st.floats(0, 1e6, allow_nan=False), max_size=4))
@example(energy=1.5, busy=0.0, ticks={"a": 5e-324})  # found by CI's budget: a subnormal tick count
def test_cpu_split_conserves_energy(energy: float, busy: float, ticks: dict[str, float]) -> None:
    split = split_by_ticks(energy, busy, ticks)
    assert math.fsum(split.shares_j.values()) + split.unattributed_j == pytest.approx(
        energy, rel=1e-9, abs=1e-9)


def test_a_job_alone_for_half_the_interval_gets_half_and_the_idle_half_is_reported() -> None:
    split = split_energy(100.0, 10.0, {"a": Presence(5.0, 10.0)})
    assert split.shares_j == {"a": pytest.approx(50.0)}
    assert split.unattributed_j == pytest.approx(50.0)
    assert split.method == EXCLUSIVE


def test_shared_time_is_split_evenly_and_alone_time_goes_to_the_one_job() -> None:
    # a runs throughout, b joins halfway: a has the first half alone, the second half is shared.
    split = split_energy(80.0, 4.0, {"a": Presence(0, 4), "b": Presence(2, 4)})
    assert split.shares_j["a"] == pytest.approx(80.0 / 2 + 80.0 / 4)
    assert split.shares_j["b"] == pytest.approx(80.0 / 4)
    assert split.method == EVEN_SPLIT


def test_shared_gpu_is_split_by_utilisation_when_known() -> None:
    split = split_energy(120.0, 1.0, {"a": Presence(0, 1, util=60), "b": Presence(0, 1, util=20)})
    assert split.shares_j["a"] == pytest.approx(120.0 * 60 / 80)
    assert split.shares_j["b"] == pytest.approx(120.0 * 20 / 80)
    assert split.method == UTIL_SHARE


def test_bad_energy_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="energy_j"):
        split_energy(float("nan"), 1.0, {})
    with pytest.raises(ValueError, match="interval_s"):
        split_energy(1.0, 0.0, {})


# --- /proc and cgroup ------------------------------------------------------------------------


def test_environment_names_the_job() -> None:
    assert job_from_environ(b"PATH=/bin\0WATTLENS_JOB=bert-ft\0SLURM_JOB_ID=12\0") == "bert-ft"
    assert job_from_environ(b"PATH=/bin\0SLURM_JOB_ID=4711\0") == "slurm-4711"
    # An unusable WATTLENS_JOB (bad characters) falls through to Slurm, then to nothing.
    assert job_from_environ(b"WATTLENS_JOB=a b\0SLURM_JOB_ID=9\0") == "slurm-9"
    assert job_from_environ(b"HOME=/root\0") is None


@pytest.mark.parametrize(("cgroup", "job"), [
    ("12:pids:/kubepods/burstable/pod2f1b6b4e-3c1d-4a7e-9e1f-0a1b2c3d4e5f/abcdef\n",
     "k8s-pod-2f1b6b4e-3c1d-4a7e-9e1f-0a1b2c3d4e5f"),
    ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2f1b6b4e_3c1d_4a7e_9e1f_"
     "0a1b2c3d4e5f.slice/cri-containerd-0123.scope\n", "k8s-pod-2f1b6b4e-3c1d-4a7e-9e1f-0a1b2c3d4e5f"),
    ("4:memory:/slurm/uid_1000/job_123/step_0/task_0\n", "slurm-123"),
    ("0::/system.slice/slurmstepd.scope/job_98765/step_batch/user/task_0\n", "slurm-98765"),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
])
def test_cgroup_path_names_the_job(cgroup: str, job: str | None) -> None:
    assert job_from_cgroup(cgroup) == job


def write_proc(root: Path, pid: int, *, ppid: int = 1, cpu_ticks: int = 0, start_ticks: int = 0,
               environ: dict[str, str] | None = None, cgroup: str | None = None,
               comm: str = "python3 (worker)", with_tasks: bool = True) -> None:
    """One process in a fake /proc: stat as the kernel writes it (comm with spaces and parens)."""
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    rest = ["S", str(ppid)] + ["0"] * 9 + [str(cpu_ticks), "0"] + ["0"] * 6 + [str(start_ticks)]
    rest += ["0"] * 10
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")
    if environ is not None:
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))
    (d / "cgroup").write_text(cgroup or "0::/user.slice\n")
    if with_tasks:  # what CONFIG_PROC_CHILDREN adds: each thread's children
        (d / "task" / str(pid)).mkdir(parents=True, exist_ok=True)
        (d / "task" / str(pid) / "children").write_text("")
        parent = root / str(ppid) / "task" / str(ppid)
        if parent.is_dir():
            kids = (parent / "children").read_text().split()
            (parent / "children").write_text(" ".join(sorted({*kids, str(pid)})) + " ")


def write_host(root: Path, *, uptime_s: float, busy: int, idle: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "uptime").write_text(f"{uptime_s:.2f} 0.00\n")
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n")
    (root / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\n\n")


def test_proc_tree_maps_environ_then_cgroup_and_sees_pid_reuse(tmp_path: Path) -> None:
    write_host(tmp_path, uptime_s=100, busy=0, idle=0)
    write_proc(tmp_path, 10, environ={"WATTLENS_JOB": "train-a"}, start_ticks=5)
    write_proc(tmp_path, 11, cgroup="4:memory:/slurm/uid_0/job_55/step_0\n", start_ticks=5)
    tree = ProcTree(tmp_path, clock_ticks_per_s=100)
    assert tree.job_of(10) == "train-a"
    assert tree.job_of(11) == "slurm-55"  # no environ readable: the cgroup tells
    assert tree.job_of(12) is None  # gone
    # PID 10 exits and the PID is reused by another job's process: looked up afresh.
    write_proc(tmp_path, 10, environ={"WATTLENS_JOB": "train-b"}, start_ticks=900)
    assert tree.job_of(10) == "train-b"
    assert tree.age_s(10) == pytest.approx(100 - 900 / 100)


@pytest.mark.parametrize("with_tasks", [True, False])
def test_descendants_follow_the_process_tree(tmp_path: Path, with_tasks: bool) -> None:
    # With the kernel's task/*/children files, and without them (a full scan).
    write_host(tmp_path, uptime_s=10, busy=0, idle=0)
    for pid, ppid in ((20, 1), (21, 20), (22, 21), (30, 1)):
        write_proc(tmp_path, pid, ppid=ppid, with_tasks=with_tasks)
    tree = ProcTree(tmp_path)
    assert (tree.child_pids(20) is None) == (not with_tasks)
    assert tree.descendants([20]) == {20, 21, 22}
    assert tree.descendants([20], tree.children()) == {20, 21, 22}


# --- the tracker over fake NVML and a fake /proc ------------------------------------------------


class FakeNvmlWithProcessUtil(FakeNvml):
    """Adds nvmlDeviceGetProcessUtilization (the binding's name and argument order)."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        super().__init__(gpus)
        self.process_util: dict[int, dict[int, int]] = {}  # gpu -> pid -> smUtil
        self.now_us = 1_000

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[SimpleNamespace]:
        self._gpu(handle)
        samples = [SimpleNamespace(pid=pid, timeStamp=self.now_us, smUtil=u, memUtil=0, encUtil=0,
                                   decUtil=0)
                   for pid, u in self.process_util.get(handle.index, {}).items()
                   if self.now_us > timeStamp]
        if not samples:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return samples


class Rig:
    """A host with three GPUs under fake NVML, a fake /proc, and a tracker wired by with_jobs."""

    def __init__(self, root: Path, idle_policy: str = "allocation") -> None:
        self.root = root
        # A model without a published idle figure, busy (90 %): no idle draw known, so all GPU
        # energy is active and these tests see the activity split alone. The CPU estimate at
        # ~0 % utilisation draws only its idle floor: all CPU energy is idle (collector.idle).
        self.nv = FakeNvmlWithProcessUtil([
            FakeGpu(name="Test GPU", uuid=f"GPU-{i}", energy_mj=1_000_000, pids=[]) for i in range(3)])
        self.mono = 1000.0
        self.uptime = 5000.0
        self.busy = 0
        write_host(root, uptime_s=self.uptime, busy=0, idle=0)
        self.nvml = NvmlSource("node-1", nvml=self.nv)
        cpu = CpuEstimateSource(host="node-1", proc_root=root, tdp_w=100.0)
        self.sources, self.tracker = with_jobs([self.nvml, cpu], "node-1", proc_root=str(root),
                                               clock=lambda: self.mono, idle_policy=idle_policy)

    def advance(self, seconds: float, gpu_joules: list[float], busy_ticks: int = 0) -> None:
        self.mono += seconds
        self.uptime += seconds
        self.nv.now_us += int(seconds * 1e6)
        for gpu, joules in zip(self.nv.gpus, gpu_joules, strict=True):
            assert gpu.energy_mj is not None
            gpu.energy_mj += int(joules * 1000)
        self.busy += busy_ticks
        write_host(self.root, uptime_s=self.uptime, busy=self.busy, idle=100_000)

    def round(self) -> list[Point]:
        tick = Tick(wall_ns=int(self.mono * 1e9), mono_s=self.mono)
        return [p for s in self.sources for p in s.sample(tick)]

    def start_ticks(self, age_s: float) -> int:
        return int((self.uptime - age_s) * CLK_TCK)


def jobs_of(points: list[Point]) -> dict[tuple[str, str], Point]:
    return {(p.tag("job") or "", p.tag("kind") or ""): p for p in points if p.measurement == "job"}


def gpu_energy(points: list[Point]) -> float:
    return math.fsum(float(p.field("energy_j") or 0.0) for p in points if p.measurement == "gpu")


def test_shared_gpus_and_jobs_that_end_or_start_mid_interval_conserve_energy(tmp_path: Path) -> None:
    rig = Rig(tmp_path, idle_policy="unattributed")  # the CPU's idle energy stays out of the jobs
    write_proc(tmp_path, 100, environ={"WATTLENS_JOB": "train-a"}, start_ticks=rig.start_ticks(60))
    write_proc(tmp_path, 200, cgroup="0::/kubepods.slice/kubepods-pod11111111_2222_3333_4444_"
                                     "555555555555.slice/cri-containerd-1.scope\n",
               start_ticks=rig.start_ticks(60))
    write_proc(tmp_path, 300, environ={"SLURM_JOB_ID": "77"}, start_ticks=rig.start_ticks(60))
    rig.nv.gpus[0].pids = [100, 200]  # GPU 0 shared by train-a and a Kubernetes pod
    rig.nv.gpus[1].pids = [300]  # GPU 1: a Slurm job that will end mid-interval
    rig.nv.process_util = {0: {100: 60, 200: 20}}
    assert jobs_of(rig.round()) == {}  # the first round only sets baselines

    rig.advance(10.0, [1000.0, 500.0, 80.0])
    rig.nv.gpus[1].pids = []  # the Slurm job ended at an unknown moment of this interval
    points = rig.round()
    jobs = jobs_of(points)
    pod = "k8s-pod-11111111-2222-3333-4444-555555555555"
    assert jobs[("train-a", "")].field("energy_j") == pytest.approx(1000.0 * 60 / 80)
    assert jobs[(pod, "")].field("energy_j") == pytest.approx(1000.0 * 20 / 80)
    assert jobs[("train-a", "")].tag("method") == UTIL_SHARE
    assert jobs[("slurm-77", "")].field("energy_j") == pytest.approx(500.0 / 2)
    assert jobs[("slurm-77", "")].field("active_s") == pytest.approx(10.0 / 2)
    idle = jobs[(UNATTRIBUTED, "gpu")]
    assert idle.field("energy_j") == pytest.approx(80.0 + 500.0 / 2)
    assert idle.field("gpus") == 1
    attributed = math.fsum(float(p.field("energy_j") or 0) for k, p in jobs.items() if k[1] != "cpu")
    assert attributed == pytest.approx(gpu_energy(points), rel=1e-12)

    # A new job starts on GPU 2 a quarter of the interval before the round: it gets that quarter.
    rig.advance(8.0, [400.0, 100.0, 200.0])
    write_proc(tmp_path, 400, environ={"WATTLENS_JOB": "late"}, start_ticks=rig.start_ticks(2.0))
    rig.nv.gpus[2].pids = [400]
    rig.nv.process_util = {}  # no per-process utilisation this time: even split on GPU 0
    points = rig.round()
    jobs = jobs_of(points)
    assert jobs[("late", "")].field("energy_j") == pytest.approx(200.0 * 2.0 / 8.0, rel=0.02)
    assert jobs[("train-a", "")].field("energy_j") == pytest.approx(400.0 / 2)
    assert jobs[("train-a", "")].tag("method") == EVEN_SPLIT
    assert ("slurm-77", "") not in jobs
    attributed = math.fsum(float(p.field("energy_j") or 0) for k, p in jobs.items() if k[1] != "cpu")
    assert attributed == pytest.approx(gpu_energy(points), rel=1e-12)


@pytest.mark.parametrize("policy", ["allocation", "even", "unattributed"])
def test_reported_job_gets_gpu_and_cpu_energy_with_its_work(tmp_path: Path, policy: str) -> None:
    rig = Rig(tmp_path, idle_policy=policy)
    write_proc(tmp_path, 500, cpu_ticks=1000, start_ticks=rig.start_ticks(300))
    write_proc(tmp_path, 501, ppid=500, cpu_ticks=200, start_ticks=rig.start_ticks(300))  # a worker
    write_proc(tmp_path, 600, cpu_ticks=50, start_ticks=rig.start_ticks(300))  # not a job's
    rig.nv.gpus[1].pids = [500]
    rig.tracker.record(Progress("bert", kind="train", precision="amp-bf16", batch_size=32, pid=500))
    rig.round()

    rig.advance(2.0, [300.0, 600.0, 300.0], busy_ticks=400)
    write_proc(tmp_path, 500, cpu_ticks=1000 + 150, start_ticks=rig.start_ticks(302))
    write_proc(tmp_path, 501, ppid=500, cpu_ticks=200 + 150, start_ticks=rig.start_ticks(302))
    write_proc(tmp_path, 600, cpu_ticks=50 + 100, start_ticks=rig.start_ticks(302))
    rig.tracker.record(Progress("bert", samples=64, tokens=64 * 512, steps=2, flops=1e12, pid=500))
    points = rig.round()
    jobs = jobs_of(points)
    bert = jobs[("bert", "train")]
    cpu_j = math.fsum(float(p.field("energy_j") or 0) for p in points if p.measurement == "cpu")
    assert cpu_j > 0
    # All of GPU 1 (busy, no idle figure: all active). The CPU ran at 0.4 % utilisation, so all
    # of its energy is its idle draw: bert, the one job on the host, gets all of it by allocation
    # or evenly; none of it when idle stays unattributed.
    idle_cpu_j = 0.0 if policy == "unattributed" else cpu_j
    assert bert.field("energy_j") == pytest.approx(600.0 + idle_cpu_j)
    assert bert.field("idle_j") == pytest.approx(idle_cpu_j)
    assert bert.tag("idle_policy") == policy
    assert (bert.field("samples"), bert.field("tokens"), bert.field("steps"), bert.field("flops")) == (
        64.0, 64.0 * 512, 2.0, 1e12)
    assert bert.tag("precision") == "amp-bf16" and bert.field("batch_size") == 32
    unattributed_cpu = jobs.get((UNATTRIBUTED, "cpu"))
    assert (unattributed_cpu.field("energy_j") if unattributed_cpu else 0.0) == pytest.approx(
        cpu_j - idle_cpu_j)
    everything = gpu_energy(points) + cpu_j
    assert math.fsum(float(p.field("energy_j") or 0) for p in jobs.values()) == pytest.approx(everything)


def test_declared_gpus_are_used_when_nvml_shows_no_processes(tmp_path: Path) -> None:
    # In a container NVML lists host PIDs the container cannot see: the job's own word counts.
    rig = Rig(tmp_path)
    rig.tracker.record(Progress("infer-svc", kind="infer", gpus=(0, 2)))
    rig.round()
    rig.advance(5.0, [100.0, 40.0, 60.0])
    rig.tracker.record(Progress("infer-svc", samples=10, final=True))
    jobs = jobs_of(rig.round())
    svc = jobs[("infer-svc", "infer")]
    assert svc.field("gpus") == 2
    assert svc.field("gpu_mask") == 0b101  # GPUs 0 and 2: GPU-level work goes to those two
    cpu_idle_j = svc.field("idle_j")  # the idle CPU's draw: the one job on the host holds it
    assert isinstance(cpu_idle_j, float) and cpu_idle_j > 0
    assert svc.field("energy_j") == pytest.approx(100.0 + 60.0 + cpu_idle_j, rel=1e-9)
    assert svc.field("samples") == 10
    assert svc.tag("method") == EXCLUSIVE
    assert rig.tracker.active_jobs() == []  # final: ended and emitted


def test_cpu_only_job_method_is_cpu_time(tmp_path: Path) -> None:
    write_host(tmp_path, uptime_s=1000, busy=0, idle=0)
    write_proc(tmp_path, 700, cpu_ticks=0, start_ticks=0)
    mono = [10.0]
    cpu = EnergyTap(CpuEstimateSource(host="h", proc_root=tmp_path, tdp_w=50.0))
    tracker = JobTracker("h", taps=[cpu], proc=ProcTree(tmp_path), clock=lambda: mono[0])
    tracker.record(Progress("etl", kind="batch", pid=700))
    for source in (cpu, tracker):
        source.sample(Tick(1, mono[0]))
    mono[0] += 1.0
    write_host(tmp_path, uptime_s=1001, busy=80, idle=20)
    write_proc(tmp_path, 700, cpu_ticks=40, start_ticks=0)
    points = [p for s in (cpu, tracker) for p in s.sample(Tick(2, mono[0]))]
    etl = jobs_of(points)[("etl", "batch")]
    assert etl.tag("method") == CPU_TIME
    cpu_j = math.fsum(float(p.field("energy_j") or 0) for p in points if p.measurement == "cpu")
    assert etl.field("energy_j") == pytest.approx(cpu_j * 40 / 80)


def test_cpu_time_after_the_first_report_counts_when_the_next_round_comes_late(tmp_path: Path) -> None:
    """An old process joins a job, works, and the agent's next round comes only afterwards (its
    loop held up by a stalled disk): its CPU time since the report is the job's, not lost."""
    write_host(tmp_path, uptime_s=1000, busy=0, idle=0)
    write_proc(tmp_path, 700, cpu_ticks=500, start_ticks=0)  # running for 1,000 s already
    mono = [10.0]
    cpu = EnergyTap(CpuEstimateSource(host="h", proc_root=tmp_path, tdp_w=50.0))
    tracker = JobTracker("h", taps=[cpu], proc=ProcTree(tmp_path), clock=lambda: mono[0])
    for source in (cpu, tracker):
        source.sample(Tick(1, mono[0]))
    tracker.record(Progress("etl", kind="batch", pid=700))  # 500 ticks used before the job
    mono[0] += 1.0
    write_host(tmp_path, uptime_s=1001, busy=80, idle=20)
    write_proc(tmp_path, 700, cpu_ticks=540, start_ticks=0)
    points = [p for s in (cpu, tracker) for p in s.sample(Tick(2, mono[0]))]
    etl = jobs_of(points)[("etl", "batch")]
    cpu_j = math.fsum(float(p.field("energy_j") or 0) for p in points if p.measurement == "cpu")
    assert cpu_j > 0 and etl.field("energy_j") == pytest.approx(cpu_j * 40 / 80)


def test_nvml_processes_reads_utilisation_since_last_call() -> None:
    nv = FakeNvmlWithProcessUtil([FakeGpu(pids=[1, 2]), FakeGpu(pids=[])])
    source = NvmlSource("h", nvml=nv)
    source.probe()
    nv.process_util = {0: {1: 30, 2: 10}}
    procs = NvmlProcesses(source)
    assert procs.utilization() == {0: {1: 30.0, 2: 10.0}, 1: {}}
    assert procs.utilization() == {0: {}, 1: {}}  # nothing newer than the last timestamp


def test_the_job_point_shows_the_sm_clock_nvml_reads_on_its_gpu(tmp_path: Path) -> None:
    """NVML's nvmlDeviceGetClockInfo(NVML_CLOCK_SM) on the job's GPU reaches its job point: a GPU
    locked at 1,584 MHz (nvidia-smi -lgc) shows there (analytics.clock_lock measures from it)."""
    rig = Rig(tmp_path)
    write_proc(tmp_path, 500, environ={"WATTLENS_JOB": "locked"}, start_ticks=rig.start_ticks(60))
    rig.nv.gpus[1].pids = [500]
    rig.nv.gpus[1].sm_clock_mhz = 1584
    rig.round()
    rig.advance(10.0, [100.0, 400.0, 100.0])
    job = jobs_of(rig.round())[("locked", "")]
    assert job.field("sm_clock_mhz") == 1584.0
