"""MIG: a GPU's energy split over its instances, through the fake NVML binding's MIG and GPM calls."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.attribution import NvmlProcesses
from collector.sources.base import Tick
from collector.sources.mig import ACTIVITY, EVEN, SLICE_SIZE, gpm_request, split_by_weight
from collector.sources.nvml import NvmlSource
from collector.tracker import with_jobs
from tests.collector.sources.fake_pynvml import FakeGpu, FakeMig, FakeNvml
from tests.collector.test_attribution import write_host, write_proc


def _tick(n: int) -> Tick:
    return Tick(mono_s=float(n), wall_ns=1_700_000_000_000_000_000 + n * 1_000_000_000)


def _a100_3_2_2(**kw: object) -> FakeGpu:
    """A 7-slice GPU cut 3g + 2g + 2g, as on an A100 (no GPM)."""
    return FakeGpu(uuid="GPU-aaaa", mig_enabled=True, migs={
        0: FakeMig([10], uuid="MIG-a", gi_id=1, slices=3),
        1: FakeMig([20], uuid="MIG-b", gi_id=5, slices=2),
        2: FakeMig([], uuid="MIG-c", gi_id=6, slices=2),
    }, **kw)  # type: ignore[arg-type]


def _run(source: NvmlSource, fake: FakeNvml, rounds: int, mj: int = 700_000) -> list[list]:
    out = []
    for n in range(rounds):
        for g in fake.gpus:
            g.consume_mj(mj)
        out.append(source.sample(_tick(n)))
    return out


def _by(points: list, measurement: str) -> list:
    return [p for p in points if p.measurement == measurement]


def test_fake_mig_calls_exist_in_the_real_binding() -> None:
    for name in ("nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetAttributes", "nvmlGpmMigSampleGet",
                 "nvmlGpmMetricsGet", "nvmlGpmSampleAlloc", "nvmlGpmSampleFree",
                 "nvmlGpmQueryDeviceSupport", "nvmlDeviceGetMigDeviceHandleByIndex"):
        assert callable(getattr(pynvml, name)), name
    fields = {f[0] for f in pynvml.c_nvmlGpmMetricsGet_t._fields_}
    assert {"version", "numMetrics", "sample1", "sample2", "metrics"} <= fields
    assert {f[0] for f in pynvml.c_nvmlGpmMetric_t._fields_} >= {"metricId", "nvmlReturn", "value"}
    assert "gpuInstanceSliceCount" in {f[0] for f in pynvml.c_nvmlDeviceAttributes._fields_}


def test_gpm_request_builds_the_real_bindings_struct() -> None:
    """The request MigReader sends, built with pynvml's own ctypes types (no driver needed)."""
    before, after = pynvml.c_nvmlGpmSample_t(), pynvml.c_nvmlGpmSample_t()
    get = gpm_request(pynvml, before, after)
    assert isinstance(get, pynvml.c_nvmlGpmMetricsGet_t)
    assert (get.version, get.numMetrics) == (pynvml.NVML_GPM_METRICS_GET_VERSION, 1)
    assert get.metrics[0].metricId == pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL


def test_without_gpm_the_split_is_by_slice_size_and_sums_to_the_gpu() -> None:
    fake = FakeNvml([_a100_3_2_2()])
    rounds = _run(NvmlSource("h", nvml=fake), fake, 3)
    last = rounds[-1]
    gpu = _by(last, "gpu")[0]
    migs = {p.tag("mig"): p for p in _by(last, "mig")}
    assert set(migs) == {"MIG-a", "MIG-b", "MIG-c"}
    assert {p.tag("basis") for p in migs.values()} == {SLICE_SIZE}
    total = gpu.field("energy_j")
    assert total == pytest.approx(700.0)
    assert migs["MIG-a"].field("energy_j") == pytest.approx(total * 3 / 7)
    assert migs["MIG-b"].field("energy_j") == pytest.approx(total * 2 / 7)
    assert math.fsum(p.field("energy_j") for p in migs.values()) == pytest.approx(total, rel=1e-12)
    assert math.fsum(p.field("power_w") for p in migs.values()) == pytest.approx(gpu.field("power_w"))
    assert migs["MIG-a"].tag("uuid") == "GPU-aaaa" and migs["MIG-a"].tag("gi") == "1"


def test_with_gpm_the_split_follows_activity_times_size() -> None:
    gpu = _a100_3_2_2(gpm_supported=True)
    gpu.migs[0].activity_pct, gpu.migs[1].activity_pct, gpu.migs[2].activity_pct = 20.0, 90.0, 0.0
    fake = FakeNvml([gpu])
    source = NvmlSource("h", nvml=fake)
    first, second = _run(source, fake, 2)
    # The first round has no earlier GPM sample to diff against: slice size, and says so.
    assert {p.tag("basis") for p in _by(first, "mig")} == {SLICE_SIZE}
    migs = {p.tag("mig"): p for p in _by(second, "mig")}
    assert {p.tag("basis") for p in migs.values()} == {ACTIVITY}
    total = _by(second, "gpu")[0].field("energy_j")
    # weights 20*3 = 60 and 90*2 = 180 (and 0): the 2g instance did three times the work
    assert migs["MIG-a"].field("energy_j") == pytest.approx(total * 60 / 240)
    assert migs["MIG-b"].field("energy_j") == pytest.approx(total * 180 / 240)
    assert migs["MIG-c"].field("energy_j") == 0.0
    assert migs["MIG-b"].field("util_pct") == 90.0
    assert math.fsum(p.field("energy_j") for p in migs.values()) == pytest.approx(total, rel=1e-12)
    source.close()
    assert fake.gpm_live == set()  # every GPM sample freed


def test_all_idle_under_gpm_falls_back_to_slice_size() -> None:
    gpu = _a100_3_2_2(gpm_supported=True)  # every activity_pct is 0.0
    fake = FakeNvml([gpu])
    source = NvmlSource("h", nvml=fake)
    rounds = _run(source, fake, 3)
    assert {p.tag("basis") for p in _by(rounds[-1], "mig")} == {SLICE_SIZE}
    assert len(fake.gpm_live) <= 3  # one kept per instance between rounds, never a leak
    source.close()
    assert fake.gpm_live == set()


def test_gpm_metric_failing_for_one_instance_uses_slice_size_for_the_gpu() -> None:
    gpu = _a100_3_2_2(gpm_supported=True)
    gpu.migs[0].activity_pct, gpu.migs[1].activity_pct, gpu.migs[2].activity_pct = 50.0, None, 10.0
    fake = FakeNvml([gpu])
    rounds = _run(NvmlSource("h", nvml=fake), fake, 2)
    assert {p.tag("basis") for p in _by(rounds[-1], "mig")} == {SLICE_SIZE}


def test_unknown_slice_sizes_split_evenly() -> None:
    gpu = _a100_3_2_2()
    for mig in gpu.migs.values():
        mig.slices = 0  # a driver that does not fill gpuInstanceSliceCount
    fake = FakeNvml([gpu])
    rounds = _run(NvmlSource("h", nvml=fake), fake, 2)
    migs = _by(rounds[-1], "mig")
    assert {p.tag("basis") for p in migs} == {EVEN}
    assert [p.field("share") for p in migs] == pytest.approx([1 / 3] * 3)


def test_a_lost_mig_gpu_stops_its_points_and_not_the_others() -> None:
    fake = FakeNvml([_a100_3_2_2(), FakeGpu(uuid="GPU-bbbb")])
    source = NvmlSource("h", nvml=fake, retry_lost_s=1e9)
    _run(source, fake, 1)
    fake.gpus[0].lost = True
    fake.gpus[1].consume_mj(1000)
    points = source.sample(_tick(5))
    assert [p.tag("uuid") for p in _by(points, "gpu")] == ["GPU-bbbb"]
    assert _by(points, "mig") == []


def test_device_pids_name_mig_instances_by_their_uuid() -> None:
    fake = FakeNvml([_a100_3_2_2(), FakeGpu(uuid="GPU-bbbb", pids=[30, 31])])
    source = NvmlSource("h", nvml=fake)
    _run(source, fake, 1)
    assert source.device_pids() == {"MIG-a": [10], "MIG-b": [20], "MIG-c": [], "GPU-bbbb": [30, 31]}


def test_jobs_on_mig_instances_weigh_their_instance_share() -> None:
    fake = FakeNvml([_a100_3_2_2()])
    source = NvmlSource("h", nvml=fake)
    _run(source, fake, 2)
    utils = NvmlProcesses(source).utilization()
    # pid 10 runs on the 3g instance, pid 20 on a 2g: 3/7 and 2/7 of the GPU (x100)
    assert utils[0] == pytest.approx({10: 300 / 7, 20: 200 / 7})


# --- conservation, as a property ------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
       st.lists(st.one_of(st.floats(min_value=0, max_value=1e6), st.just(0.0),
                          st.floats(min_value=5e-324, max_value=1e-300)), min_size=1, max_size=8))
def test_split_by_weight_parts_sum_to_the_whole(energy_j: float, weights: list[float]) -> None:
    parts = split_by_weight(energy_j, {f"m{i}": w for i, w in enumerate(weights)})
    assert all(v >= 0 for v in parts.values())
    assert math.fsum(parts.values()) == pytest.approx(energy_j, rel=1e-12, abs=1e-300)
    assert math.fsum(parts.values()) <= energy_j * (1 + 1e-15) + 1e-300


_layout = st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 7]),  # slice sizes of real profiles
                             st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
                             st.lists(st.integers(min_value=1, max_value=60), max_size=4)),
                   min_size=1, max_size=7)


@settings(max_examples=60, deadline=None)
@given(_layout, st.booleans(), st.integers(min_value=0, max_value=5_000_000))
def test_mig_slices_sum_to_the_gpu_over_random_layouts(layout: list, gpm: bool, mj: int) -> None:
    migs = {slot: FakeMig(pids, uuid=f"MIG-{slot}", gi_id=slot + 1, slices=size, activity_pct=act)
            for slot, (size, act, pids) in enumerate(layout)}
    fake = FakeNvml([FakeGpu(mig_enabled=True, migs=migs, gpm_supported=gpm)])
    source = NvmlSource("h", nvml=fake)
    for rounds in _run(source, fake, 3, mj):
        gpu_j = _by(rounds, "gpu")[0].field("energy_j")
        parts = [p.field("energy_j") for p in _by(rounds, "mig")]
        if gpu_j is None:  # the first round only sets the counter's baseline
            assert all(p is None for p in parts)
            continue
        assert len(parts) == len(layout)
        assert math.fsum(parts) == pytest.approx(gpu_j, rel=1e-12, abs=1e-12)
        assert math.fsum(p.field("share") for p in _by(rounds, "mig")) == pytest.approx(1.0)
    pid_weights = NvmlProcesses(source).utilization().get(0, {})
    assert math.fsum(pid_weights.values()) <= 100.0 + 1e-9
    source.close()
    assert fake.gpm_live == set()


_jobs_layout = st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 7]),
                                  st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3)),
                        min_size=1, max_size=7)


@settings(max_examples=30, deadline=None)
@given(_jobs_layout, st.integers(min_value=1, max_value=3_000_000))
def test_jobs_on_mig_instances_sum_to_the_gpu_over_random_layouts(layout: list, mj: int) -> None:
    """Through the tracker: every job's share plus the unattributed rest is the GPU's energy."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = Path(tmp)
        write_host(proc, uptime_s=5000.0, busy=0, idle=0)
        migs, pid = {}, 100
        for slot, (size, jobs) in enumerate(layout):
            pids = []
            for job in jobs:  # a job may run on several instances, and one instance hold several
                write_proc(proc, pid, environ={"WATTLENS_JOB": job}, start_ticks=0)
                pids.append(pid)
                pid += 1
            migs[slot] = FakeMig(pids, uuid=f"MIG-{slot}", gi_id=slot + 1, slices=size)
        fake = FakeNvml([FakeGpu(mig_enabled=True, migs=migs)])
        mono = [1000.0]
        sources, _tracker = with_jobs([NvmlSource("h", nvml=fake)], "h", proc_root=str(proc),
                                      clock=lambda: mono[0])
        for _round in range(3):
            fake.gpus[0].consume_mj(mj)
            mono[0] += 1.0
            points = [p for s in sources for p in s.sample(Tick(int(mono[0] * 1e9), mono[0]))]
        gpu_j = next(p for p in points if p.measurement == "gpu").field("energy_j")
        jobs_j = [p.field("energy_j") or 0.0 for p in points if p.measurement == "job"]
        assert math.fsum(jobs_j) == pytest.approx(gpu_j, rel=1e-9)
        mig_j = [p.field("energy_j") for p in points if p.measurement == "mig"]
        assert math.fsum(mig_j) == pytest.approx(gpu_j, rel=1e-12)
