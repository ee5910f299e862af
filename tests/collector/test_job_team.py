"""A job's team on its points: from the jobs API, the process environment (WATTLENS_TEAM, Slurm's
account, then user) and the Kubernetes namespace through the operator's map."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.attribution import ProcTree, team_from_environ
from collector.ingest import IngestApp, parse_progress
from collector.sim.fleet import NAMESPACE_TEAM
from collector.sources.simulated import SimulatedFleet
from tests.collector.test_attribution import Rig, jobs_of, write_host, write_proc


@pytest.mark.parametrize(("env", "team"), [
    (b"SLURM_JOB_ID=7\0SLURM_JOB_ACCOUNT=physics\0SLURM_JOB_USER=ana\0", "physics"),
    (b"SLURM_JOB_ID=7\0SLURM_JOB_USER=ana\0", "ana"),
    (b"SLURM_JOB_ID=7\0SLURM_JOB_ACCOUNT=bad account\0SLURM_JOB_USER=ana\0", "ana"),
    (b"WATTLENS_TEAM=ml\0SLURM_JOB_ACCOUNT=physics\0", "ml"),
    (b"SLURM_JOB_ID=7\0", None),
])
def test_team_from_the_environment(env: bytes, team: str | None) -> None:
    assert team_from_environ(env) == team


def test_a_slurm_jobs_points_carry_its_account_as_team(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    write_proc(tmp_path, 300, environ={"SLURM_JOB_ID": "77", "SLURM_JOB_ACCOUNT": "physics"},
               start_ticks=rig.start_ticks(60))
    rig.nv.gpus[0].pids = [300]
    rig.round()
    rig.advance(10.0, [1000.0, 50.0, 50.0])
    job = jobs_of(rig.round())[("slurm-77", "")]
    assert job.tag("team") == "physics" and job.tag("idle_policy") == "allocation"


def test_the_jobs_api_team_wins_and_a_namespace_maps_to_a_team(tmp_path: Path) -> None:
    write_host(tmp_path, uptime_s=100, busy=0, idle=0)
    rig = Rig(tmp_path)
    rig.tracker.team_map = {"ml-prod": "ml"}
    rig.tracker.record(parse_progress("a", b'{"gpus": [0], "team": "search", '
                                           b'"tags": {"namespace": "ml-prod"}}'))
    rig.tracker.record(parse_progress("b", b'{"gpus": [1], "tags": {"namespace": "ml-prod"}}'))
    rig.tracker.record(parse_progress("c", b'{"gpus": [2], "tags": {"namespace": "other"}}'))
    rig.round()
    rig.advance(5.0, [100.0, 100.0, 100.0])
    jobs = jobs_of(rig.round())
    assert {k[0]: p.tag("team") for k, p in jobs.items() if k[0] in "abc"} == {
        "a": "search", "b": "ml", "c": "other"}


def test_a_bad_team_over_http_is_one_400_naming_it() -> None:
    from collector.tracker import JobTracker

    app = IngestApp(JobTracker("n1"), token="t0ken-0123456789abcdef")
    status, _, body = app.handle("POST", "/v1/jobs/j1/progress", {"Authorization": "Bearer t0ken-0123456789abcdef"},
                                 b'{"team": "drop table"}', "127.0.0.1", None)
    assert status == 400 and b"team: must be" in body and b"'drop table'" in body


def test_the_simulated_fleets_jobs_carry_team_and_namespace() -> None:
    fleet = SimulatedFleet(nodes=4, gpus_per_node=8, seed=1)
    end = 1_800_000_000 * 10**9
    jobs = [p for p in fleet.points_between(end - 6 * 3600 * 10**9, end) if p.measurement == "job"]
    assert jobs
    seen = {(p.tag("namespace"), p.tag("team")) for p in jobs}
    assert all(ns and team for ns, team in seen)
    assert all(NAMESPACE_TEAM.get(ns, ns) == team for ns, team in seen)
    assert len({team for _ns, team in seen}) >= 3
    assert all(p.tag("idle_policy") == "allocation" and 0 <= (p.field("idle_j") or 0) <= (
        p.field("energy_j") or 0) for p in jobs)


def test_proc_tree_remembers_the_team_of_a_job(tmp_path: Path) -> None:
    write_host(tmp_path, uptime_s=100, busy=0, idle=0)
    write_proc(tmp_path, 10, environ={"WATTLENS_JOB": "train-a", "WATTLENS_TEAM": "nlp"}, start_ticks=5)
    tree = ProcTree(tmp_path, clock_ticks_per_s=100)
    assert tree.job_of(10) == "train-a" and tree.teams == {"train-a": "nlp"}


def test_a_pods_namespace_from_the_kubelet_becomes_its_team(tmp_path: Path) -> None:
    """End to end: fake NVML, fake /proc, a real gRPC kubelet; the namespace tag the pod tags add
    after the round maps to a team through --team-map (unmapped: the namespace itself)."""
    from collector.sources.base import Tick
    from collector.sources.nvml import NvmlSource
    from collector.tracker import with_jobs
    from tests.collector.k8s.kubelet import FakeKubelet
    from tests.collector.sources.fake_pynvml import FakeGpu, FakeNvml

    proc = tmp_path / "proc"
    write_host(proc, uptime_s=5000.0, busy=0, idle=0)
    pod = "0::/kubepods.slice/kubepods-podaaaaaaaa_2222_3333_4444_555555555555.slice/cri-x.scope\n"
    write_proc(proc, 200, cgroup=pod, start_ticks=0)
    write_proc(proc, 300, environ={"WATTLENS_JOB": "svc"}, start_ticks=0)
    nv = FakeNvml([FakeGpu(uuid="GPU-0", pids=[200]), FakeGpu(uuid="GPU-1", pids=[300])])
    with FakeKubelet(tmp_path / "kubelet.sock") as kubelet:
        kubelet.pods = {("ml-prod", "llm-0"): [("trainer", {"nvidia.com/gpu": ["GPU-0"]})],
                        ("web", "svc-1"): [("main", {"nvidia.com/gpu": ["GPU-1"]})]}
        mono = [1000.0]
        sources, _ = with_jobs([NvmlSource("node-1", nvml=nv)], "node-1", proc_root=str(proc),
                               clock=lambda: mono[0], kubelet_socket=str(kubelet.socket_path),
                               team_map={"ml-prod": "ml"})
        for _round in range(3):
            for g in nv.gpus:
                g.consume_mj(700_000)
            mono[0] += 1.0
            tick = Tick(wall_ns=int(mono[0] * 1e9), mono_s=mono[0])
            points = [p for s in sources for p in s.sample(tick)]
    jobs = {p.tag("job"): p for p in points if p.measurement == "job"}
    llm = jobs["k8s-pod-aaaaaaaa-2222-3333-4444-555555555555"]
    assert (llm.tag("namespace"), llm.tag("team")) == ("ml-prod", "ml")
    assert (jobs["svc"].tag("namespace"), jobs["svc"].tag("team")) == ("web", "web")
