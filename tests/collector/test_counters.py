"""Counter deltas, wrap and reset, gaps, trapezoid integration and quality windows."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.counters import (
    CounterStats,
    CounterTracker,
    PowerIntegrator,
    QualityTracker,
    quality_point,
    relative_difference,
)


def test_first_reading_has_no_increment_then_deltas() -> None:
    t = CounterTracker()
    assert t.update(100.0) is None
    assert t.update(150.0) == 50.0
    assert t.update(150.0) == 0.0


def test_wrap_through_max_value() -> None:
    t = CounterTracker(max_value=1000.0)
    t.update(900.0)
    assert t.update(100.0) == pytest.approx(200.0)
    assert t.stats == CounterStats(wraps=1, resets=0)


def test_implausible_wrap_is_a_reset_not_energy() -> None:
    t = CounterTracker(max_value=1000.0)
    t.update(300.0)
    assert t.update(200.0) is None  # wrapped delta 900 > half the range
    assert t.stats.resets == 1
    assert t.update(250.0) == 50.0  # counting resumes from the new base


def test_counter_without_range_that_goes_down_is_a_reset() -> None:
    t = CounterTracker()
    t.update(5_000.0)
    assert t.update(10.0) is None
    assert t.stats == CounterStats(wraps=0, resets=1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_junk_readings_are_ignored(bad: float) -> None:
    t = CounterTracker()
    t.update(10.0)
    assert t.update(bad) is None
    assert t.update(12.0) == 2.0


def test_forget_makes_the_next_reading_a_new_base() -> None:
    t = CounterTracker(max_value=1000.0)
    t.update(900.0)
    t.forget()
    assert t.update(100.0) is None  # not a wrap of 200
    assert t.stats == CounterStats()


def test_gap_longer_than_the_safe_interval_is_dropped() -> None:
    t = CounterTracker(max_value=1000.0, max_rate_per_s=10.0)
    assert t.safe_interval_s() == pytest.approx(50.0)
    t.update(0.0, None)
    assert t.update(400.0, 40.0) == 400.0
    assert t.update(500.0, 60.0) is None
    assert t.stats.gaps == 1


def test_safe_interval_is_unbounded_without_range_or_rate() -> None:
    assert CounterTracker().safe_interval_s() is None
    assert CounterTracker(max_value=10.0).safe_interval_s() is None


def test_trapezoid_integration() -> None:
    i = PowerIntegrator()
    assert i.update(0.0, 100.0) is None
    assert i.update(2.0, 300.0) == pytest.approx(400.0)
    assert i.update(2.0, 300.0) is None  # no time passed
    assert i.update(1.0, 300.0) is None  # time went back


def test_integrator_forget_does_not_integrate_across_a_gap() -> None:
    i = PowerIntegrator()
    i.update(0.0, 100.0)
    i.forget()
    assert i.update(100.0, 100.0) is None


def test_relative_difference() -> None:
    assert relative_difference(110.0, 100.0) == pytest.approx(0.1)
    assert relative_difference(1.0, 0.0) is None
    assert relative_difference(math.nan, 1.0) is None


def test_quality_window_closes_after_interval_with_increments() -> None:
    q = QualityTracker(interval_s=60.0)
    stats = CounterStats(wraps=2)
    assert q.poll(0.0, stats, True) is None
    q.add_energy(100.0, 102.0)
    q.add_energy(None, 50.0)  # unpaired: not part of the check
    stats.wraps += 1
    stats.resets += 1
    q.lost()
    assert q.poll(30.0, stats, True) is None
    window = q.poll(60.0, stats, False)
    assert window is not None
    assert window.window_s == 60.0
    assert window.counter_j == 100.0 and window.integrated_j == 102.0
    assert window.energy_check_rel_diff == pytest.approx(0.02)
    assert (window.counter_wraps, window.counter_resets, window.device_lost) == (1, 1, 1)
    assert window.device_available is False
    nxt = q.poll(120.0, stats, True)
    assert nxt is not None and nxt.counter_wraps == 0 and nxt.energy_check_rel_diff is None


def test_quality_point_leaves_unmeasured_fields_out() -> None:
    q = QualityTracker(interval_s=1.0)
    q.poll(0.0, None, True)
    window = q.poll(1.0, None, True)
    assert window is not None
    p = quality_point("h", "rapl", "package-0", window, 5)
    assert p.measurement == "quality"
    assert p.tag_map == {"host": "h", "source": "rapl", "device": "package-0"}
    assert "energy_check_rel_diff" not in p.field_map
    assert p.field("device_available") == 1.0


# --- properties ------------------------------------------------------------------

readings = st.one_of(st.floats(min_value=-1e6, max_value=1e18),
                     st.sampled_from([math.nan, math.inf, -math.inf]))


@given(st.lists(readings, max_size=60), st.one_of(st.none(), st.floats(1.0, 1e12)),
       st.lists(st.one_of(st.none(), st.floats(0.0, 1e6)), max_size=60))
def test_increments_are_never_negative_or_nan(values: list[float], max_value: float | None,
                                              elapsed: list[float | None]) -> None:
    t = CounterTracker(max_value=max_value, max_rate_per_s=1e3)
    for i, value in enumerate(values):
        delta = t.update(value, elapsed[i] if i < len(elapsed) else None)
        assert delta is None or (math.isfinite(delta) and delta >= 0)


@given(st.integers(1_000, 2**32), st.integers(0, 2**32),
       st.lists(st.floats(0.0, 0.49), min_size=1, max_size=80))
def test_wrapping_counter_sums_to_the_true_energy(max_int: int, start_int: int,
                                                  steps: list[float]) -> None:
    max_value = float(max_int)
    t = CounterTracker(max_value=max_value)
    true_value = float(start_int) % max_value
    t.update(true_value)
    total = 0.0
    expected = 0.0
    for fraction in steps:
        step = fraction * max_value  # below half the range: every wrap is a real one
        expected += step
        true_value = (true_value + step) % max_value
        delta = t.update(true_value)
        assert delta is not None and delta >= 0
        total += delta
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-6 * max_value)
    assert t.stats.resets == 0


@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True),
                          st.floats(allow_nan=True, allow_infinity=True)), max_size=60))
def test_integrated_energy_is_never_negative_or_nan(samples: list[tuple[float, float]]) -> None:
    i = PowerIntegrator()
    for time_s, power_w in samples:
        energy = i.update(time_s, power_w)
        assert energy is None or (math.isfinite(energy) and energy >= 0)
