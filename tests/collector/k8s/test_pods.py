"""Pod tags on job points: the cardinality bound, and the tracker end to end (fake NVML with MIG, fake /proc,
a real gRPC kubelet)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.agent import AgentStats
from collector.exporter import FleetCollector
from collector.k8s.podresources import PodRef
from collector.k8s.pods import INVALID, OTHER, PodLabels
from collector.sources.base import Tick
from collector.sources.nvml import NvmlSource
from collector.tracker import with_jobs
from tests.collector.k8s.kubelet import FakeKubelet
from tests.collector.sources.fake_pynvml import FakeGpu, FakeMig, FakeNvml
from tests.collector.test_attribution import write_host, write_proc


def test_pods_past_the_limit_share_an_overflow_value_until_slots_free() -> None:
    labels = PodLabels(None, max_pods=2, max_namespaces=2, forget_s=100.0)
    a, b, c = (PodRef("ns", f"p{i}", "c") for i in range(3))
    assert labels.bound(a, 0.0) == a
    assert labels.bound(b, 1.0) == b
    assert labels.bound(c, 2.0) == PodRef("ns", OTHER, OTHER)
    assert labels.bound(a, 50.0) == a  # a known pod keeps its name
    # b unseen for longer than forget_s: its slot goes to c; a (seen at 50) stays
    assert labels.bound(c, 120.0) == c
    assert labels.bound(b, 121.0) == PodRef("ns", OTHER, OTHER)


def test_namespaces_are_bounded_too_and_bad_names_are_replaced() -> None:
    labels = PodLabels(None, max_pods=10, max_namespaces=1)
    assert labels.bound(PodRef("a", "p", "c"), 0.0) == PodRef("a", "p", "c")
    assert labels.bound(PodRef("b", "p", "c"), 0.0) == PodRef(OTHER, OTHER, OTHER)
    assert labels.bound(PodRef("a", "bad\nname", "c"), 0.0) == PodRef("a", INVALID, "c")
    with pytest.raises(ValueError, match="max_pods"):
        PodLabels(None, max_pods=0)


def test_distinct_values_never_exceed_the_limit_however_many_pods_churn() -> None:
    labels = PodLabels(None, max_pods=5, max_namespaces=3, forget_s=10.0)
    values = set()
    for i in range(1000):  # 1000 short-lived pods in 7 namespaces over 100 s
        values.add(labels.bound(PodRef(f"ns{i % 7}", f"pod-{i}", "c"), i * 0.1))
    # at most 5 live per 10 s: 100 s of churn admits at most 5 * (100 / 10 + 1), plus the overflow values
    named = {v for v in values if v.pod != OTHER}
    assert len(named) <= 5 * 11
    assert {v.namespace for v in values} <= {f"ns{k}" for k in range(7)} | {OTHER}
    assert len({v.namespace for v in values if v.pod != OTHER}) <= 7


def test_tracker_tags_jobs_on_mig_instances_and_whole_gpus_with_their_pods(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write_host(proc, uptime_s=5000.0, busy=0, idle=0)
    pod_a = "0::/kubepods.slice/kubepods-podaaaaaaaa_2222_3333_4444_555555555555.slice/cri-x.scope\n"
    pod_b = "0::/kubepods.slice/kubepods-podbbbbbbbb_2222_3333_4444_555555555555.slice/cri-y.scope\n"
    write_proc(proc, 200, cgroup=pod_a, start_ticks=0)
    write_proc(proc, 300, cgroup=pod_b, start_ticks=0)
    write_proc(proc, 400, environ={"WATTLENS_JOB": "train-x"}, start_ticks=0)
    nv = FakeNvml([
        FakeGpu(uuid="GPU-0", mig_enabled=True, migs={
            0: FakeMig([200], uuid="MIG-a", gi_id=1, slices=3),
            1: FakeMig([300], uuid="MIG-b", gi_id=2, slices=2),
            2: FakeMig([], uuid="MIG-c", gi_id=3, slices=2)}),
        FakeGpu(uuid="GPU-1", pids=[400]),
    ])
    nvml = NvmlSource("node-1", nvml=nv)
    with FakeKubelet(tmp_path / "kubelet.sock") as kubelet:
        kubelet.pods = {
            ("research", "llm-0"): [("trainer", {"nvidia.com/mig-3g.40gb": ["MIG-a"]})],
            ("prod", "serve-1"): [("vllm", {"nvidia.com/mig-2g.20gb": ["MIG-b"]})],
            ("batch", "train-x-7f"): [("main", {"nvidia.com/gpu": ["GPU-1"]})],
            ("other", "elsewhere"): [("c", {"nvidia.com/gpu": ["GPU-unknown"]})],
        }
        mono = [1000.0]
        sources, _tracker = with_jobs([nvml], "node-1", proc_root=str(proc), clock=lambda: mono[0],
                                     kubelet_socket=str(kubelet.socket_path))
        exporter = FleetCollector(AgentStats(), None, stale_after_s=60, counter_idle_s=600,
                                  max_series=1000, clock=lambda: mono[0])
        for _round in range(3):
            for g in nv.gpus:
                g.consume_mj(700_000)
            mono[0] += 1.0
            tick = Tick(wall_ns=int(mono[0] * 1e9), mono_s=mono[0])
            points = [p for s in sources for p in s.sample(tick)]
            exporter.observe(points)
    jobs = {p.tag("job"): p for p in points if p.measurement == "job"}
    a = jobs["k8s-pod-aaaaaaaa-2222-3333-4444-555555555555"]
    b = jobs["k8s-pod-bbbbbbbb-2222-3333-4444-555555555555"]
    x = jobs["train-x"]
    assert (a.tag("namespace"), a.tag("pod"), a.tag("container")) == ("research", "llm-0", "trainer")
    assert (b.tag("namespace"), b.tag("pod"), b.tag("container")) == ("prod", "serve-1", "vllm")
    assert (x.tag("namespace"), x.tag("pod"), x.tag("container")) == ("batch", "train-x-7f", "main")
    # On the MIG GPU the jobs weigh their instances (3 and 2 slices); the idle 2g instance's
    # part goes to them too (the idle policy of issue 21 decides idle energy), and they sum to the GPU.
    gpu0 = next(p for p in points if p.measurement == "gpu" and p.tag("gpu") == "0")
    assert a.field("energy_j") == pytest.approx(gpu0.field("energy_j") * 3 / 5)
    assert math.fsum([a.field("energy_j"), b.field("energy_j")]) == pytest.approx(gpu0.field("energy_j"))
    migs = [p for p in points if p.measurement == "mig"]
    assert math.fsum(p.field("energy_j") for p in migs) == pytest.approx(gpu0.field("energy_j"))
    registry = CollectorRegistry()
    registry.register(exporter)
    samples = [s for fam in text_string_to_metric_families(generate_latest(registry).decode())
               for s in fam.samples]
    job_series = {s.labels["job"]: s.labels for s in samples
                  if s.name == "wattlens_job_energy_joules_total"}
    # team: the namespace's (unmapped here), so per-team energy is a PromQL sum by (team)
    assert job_series["train-x"] == {"job": "train-x", "host": "node-1", "namespace": "batch",
                                     "pod": "train-x-7f", "container": "main", "team": "batch"}
    mig_j = {s.labels["mig"]: s.value for s in samples if s.name == "wattlens_mig_energy_joules_total"}
    assert set(mig_j) == {"MIG-a", "MIG-b", "MIG-c"}
