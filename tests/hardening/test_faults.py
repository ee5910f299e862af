"""Fault injection on the agent: SIGKILL and restart, a sensor that vanishes, a GPU that is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from collector.agent import Agent
from collector.schema import Point
from collector.sources.nvml import NvmlSource
from collector.sources.rapl import RaplSource
from collector.store import AggregateQuery, open_store
from tests.collector.sources.fake_pynvml import NVML_ERROR_GPU_IS_LOST, FakeGpu, FakeNvml
from tests.collector.sources.trees import zone
from tests.collector.test_agent import FakeClock

UJ_PER_J = 1_000_000


def write_counter(path: Path, value_uj: int) -> None:
    """Replace energy_uj atomically, as a sysfs read is: never a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{value_uj}\n")
    os.replace(tmp, path)


def stored_energy_j(url: str) -> float:
    store = open_store(url)
    rows = store.query(AggregateQuery("cpu", (("sum", "energy_j"),), 0, 2**62))
    store.close()
    return float(rows[0].values["sum_energy_j"] or 0.0) if rows else 0.0


def stored_points(url: str) -> int:
    store = open_store(url)
    rows = store.query(AggregateQuery("cpu", (("count", "energy_j"),), 0, 2**62))
    store.close()
    return int(rows[0].values["count_energy_j"] or 0) if rows else 0


def wait_for(check, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_sigkill_and_restart_neither_loses_nor_double_counts_counter_energy(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    powercap = sysfs / "class" / "powercap"
    counter = zone(powercap, "intel-rapl:0", "package-0", 5 * UJ_PER_J) / "energy_uj"
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    argv = [sys.executable, "-m", "wattlens", "collect", "--source", "rapl", "--sysfs-root",
            str(sysfs), "--store", url, "--interval", "0.2", "--prometheus-port", "0",
            "--spool-dir", str(tmp_path / "state" / "spool"), "--host", "n1"]
    value = 5 * UJ_PER_J
    added = 0

    def burn(joules: int) -> None:
        nonlocal value, added
        for _ in range(joules):
            value += UJ_PER_J
            added += UJ_PER_J
            write_counter(counter, value)
            time.sleep(0.01)

    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: stored_points(url) >= 2)  # primed, and writing points
        burn(60)
        wait_for(lambda: stored_energy_j(url) > 0)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        burn(90)  # energy used while no agent runs
        second = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            burn(30)
            total_j = added / UJ_PER_J
            wait_for(lambda: abs(stored_energy_j(url) - total_j) < 1e-6 or
                     stored_energy_j(url) > total_j)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    # Every joule the counter moved after the first reading is stored exactly once.
    assert stored_energy_j(url) == added / UJ_PER_J


class ListSink:
    def __init__(self) -> None:
        self.points: list[Point] = []

    def write(self, points: Sequence[Point]) -> None:
        self.points.extend(points)

    def close(self) -> None:
        pass


def test_a_sensor_file_that_vanishes_and_returns_never_yields_negative_or_double_energy(
        tmp_path: Path) -> None:
    counter = zone(tmp_path, "intel-rapl:0", "package-0", 1000 * UJ_PER_J) / "energy_uj"
    clock = FakeClock()
    source = RaplSource(host="n1", root=tmp_path)
    sink = ListSink()
    agent = Agent([source], sink, interval_s=1.0, clock=clock, queue_max_batches=10_000)
    value = 1000 * UJ_PER_J
    expected_j = 0.0
    agent.run(rounds=1)  # primes the counter
    for rnd in range(60):
        if 20 <= rnd < 30:
            counter.unlink(missing_ok=True)  # driver unloaded: the file is gone
            value += 50 * UJ_PER_J  # energy used while we cannot see it: not attributable
        else:
            if not counter.exists():
                value += 50 * UJ_PER_J
                write_counter(counter, value)  # back; first reading re-primes
            else:
                value += 50 * UJ_PER_J
                write_counter(counter, value)
                expected_j += 50
        clock.mono_s += 1.0  # one interval passes
        agent._stop.clear()
        agent.run(rounds=1)
    energies = [float(p.field("energy_j") or 0) for p in sink.points if p.measurement == "cpu"]
    assert energies and min(energies) >= 0
    assert sum(energies) == expected_j
    assert agent.stats.source_errors == 0  # a vanished file is the source's business, not a crash


def test_a_lost_gpu_does_not_stop_the_others_and_comes_back(tmp_path: Path) -> None:
    nv = FakeNvml([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    clock = FakeClock()
    source = NvmlSource("n1", nvml=nv, retry_lost_s=5.0)
    sink = ListSink()
    agent = Agent([source], sink, interval_s=1.0, clock=clock, queue_max_batches=10_000)
    seen: list[set[str]] = []
    for rnd in range(40):
        for gpu in nv.gpus:
            gpu.consume_mj(300_000)  # 300 J per second each
        nv.gpus[1].lost = 10 <= rnd < 20
        before = len(sink.points)
        clock.mono_s += 1.0  # one interval passes
        agent._stop.clear()
        agent.run(rounds=1)
        assert agent._writer is not None
        agent._writer.join(5)
        seen.append({p.tag("gpu") or "" for p in sink.points[before:] if p.measurement == "gpu"})
    assert all("0" in s for s in seen)  # GPU 0 sampled in every round
    assert not any("1" in s for s in seen[10:20])  # the lost GPU is skipped, not zero-filled
    assert "1" in seen[-1]  # and retried until it is back
    energies = [float(p.field("energy_j") or 0) for p in sink.points
                if p.measurement == "gpu" and p.field("energy_j") is not None]
    assert min(energies) >= 0 and max(energies) <= 300.0 + 1e-9  # nothing counted twice
    assert NVML_ERROR_GPU_IS_LOST == nv.NVML_ERROR_GPU_IS_LOST
