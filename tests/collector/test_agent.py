"""The sampling loop: fixed rate without drift on an injected clock, a slow sink never delays sampling."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

import pytest

from collector.agent import Agent
from collector.errors import StoreRejected, StoreUnavailable
from collector.schema import Point, point
from collector.sources.base import Probe, Tick

NS = 1_000_000_000


class FakeClock:
    """Monotonic and wall time that advance only when the agent waits (or a source 'works')."""

    def __init__(self, wall_ns: int = 1_795_000_000 * NS) -> None:
        self.mono_s = 1000.0
        self.wall0_ns = wall_ns
        self.wall_offset_ns = 0

    def monotonic(self) -> float:
        return self.mono_s

    def wall_ns(self) -> int:
        return self.wall0_ns + int((self.mono_s - 1000.0) * NS) + self.wall_offset_ns

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        self.mono_s += max(0.0, seconds)
        return stop.is_set()


class WorkSource:
    """Takes ``cost_s`` of (fake) time per round and records when it was sampled."""

    name = "work"

    def __init__(self, clock: FakeClock, cost_s: float = 0.0) -> None:
        self.clock = clock
        self.cost_s = cost_s
        self.ticks: list[Tick] = []

    def probe(self) -> Probe:
        return Probe.found("test source")

    def sample(self, tick: Tick) -> list[Point]:
        self.ticks.append(tick)
        self.clock.mono_s += self.cost_s
        return [point("gpu", {"host": "h", "gpu": "0"}, {"power_w": 100.0}, tick.wall_ns)]

    def close(self) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.points: list[Point] = []

    def write(self, points: Sequence[Point]) -> None:
        self.points.extend(points)

    def close(self) -> None:
        pass


def test_an_hour_at_1_hz_has_no_drift_even_when_rounds_take_time() -> None:
    clock = FakeClock()
    source = WorkSource(clock, cost_s=0.37)
    sink = ListSink()
    agent = Agent([source], sink, interval_s=1.0, clock=clock, queue_max_batches=4000)
    agent.run(rounds=3600)
    starts = [t.mono_s - 1000.0 for t in source.ticks]
    assert len(starts) == 3600
    assert starts[0] == 0.0
    # Round k starts exactly k seconds after the first: no accumulated drift.
    assert max(abs(s - k) for k, s in enumerate(starts)) < 1e-6
    assert agent.stats.rounds_missed == 0
    assert len(sink.points) == 3600 == agent.stats.points_written


def test_a_round_that_overruns_skips_ticks_instead_of_bursting() -> None:
    clock = FakeClock()
    source = WorkSource(clock, cost_s=2.5)  # longer than the interval
    agent = Agent([source], ListSink(), interval_s=1.0, clock=clock)
    agent.run(rounds=10)
    starts = [t.mono_s - 1000.0 for t in source.ticks]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(starts))
    assert all(abs(s - round(s)) < 1e-6 for s in starts)  # still on the 1 s grid
    assert agent.stats.rounds_missed >= 10


def test_timestamps_stay_monotonic_when_the_wall_clock_steps_back() -> None:
    clock = FakeClock()
    source = WorkSource(clock)
    agent = Agent([source], ListSink(), interval_s=1.0, clock=clock)
    agent.run(rounds=5)
    clock.wall_offset_ns = -3600 * NS  # NTP steps the clock back an hour
    agent._stop.clear()
    agent.run(rounds=5)
    walls = [t.wall_ns for t in source.ticks]
    assert all(b > a for a, b in itertools.pairwise(walls))
    assert agent.stats.clock_jumps >= 1


class BlockingSink(ListSink):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.calls = 0

    def write(self, points: Sequence[Point]) -> None:
        self.calls += 1
        self.release.wait(30)
        super().write(points)


def test_a_slow_sink_never_delays_sampling_and_drops_are_counted() -> None:
    clock = FakeClock()
    source = WorkSource(clock)
    sink = BlockingSink()
    agent = Agent([source], sink, interval_s=1.0, clock=clock, queue_max_batches=5,
                  batch_max_points=1)
    runner = threading.Thread(target=agent.run, kwargs={"rounds": 200})
    runner.start()
    deadline = time.monotonic() + 20
    while agent.stats.rounds < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    # All 200 rounds were sampled while the sink was stuck on its first write.
    assert agent.stats.rounds == 200
    assert sink.calls <= 1
    assert agent.stats.points_dropped >= 200 - 5 - 1
    assert agent.stats.queue_depth <= 5
    sink.release.set()
    runner.join(30)
    assert not runner.is_alive()
    assert agent.stats.points_written + agent.stats.points_dropped == 200
    assert len(sink.points) == agent.stats.points_written


class FailingSource(WorkSource):
    name = "broken"

    def sample(self, tick: Tick) -> list[Point]:
        raise OSError("sensor vanished")


def test_a_failing_source_is_isolated_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    good = WorkSource(clock)
    agent = Agent([FailingSource(clock), good], ListSink(), interval_s=1.0, clock=clock)
    with caplog.at_level("WARNING", logger="wattlens.agent"):
        agent.run(rounds=50)
    assert len(good.ticks) == 50
    assert agent.stats.source_errors == 50
    assert sum("sensor vanished" in r.message for r in caplog.records) == 1


class FlakySink(ListSink):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def write(self, points: Sequence[Point]) -> None:
        raise self.error


@pytest.mark.parametrize("error", [StoreUnavailable("down"), StoreRejected("400 bad")])
def test_write_errors_are_counted_not_fatal(error: Exception) -> None:
    clock = FakeClock()
    agent = Agent([WorkSource(clock)], FlakySink(error), interval_s=1.0, clock=clock)
    agent.run(rounds=20)
    assert agent.stats.rounds == 20
    assert agent.stats.write_errors >= 1
    assert agent.stats.points_dropped == 20


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Agent([], ListSink(), interval_s=0)
