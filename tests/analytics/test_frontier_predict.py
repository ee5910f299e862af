"""Frontiers over power caps and job energy prediction, on hand-made buckets."""

from __future__ import annotations

import pytest

from analytics import carbon
from analytics.frontier import (
    Frontier,
    FrontierPoint,
    base_workload,
    best_cap,
    break_even_lambda,
    build_frontiers,
    pareto,
)
from analytics.predict import PRIOR_REL, predict_job
from analytics.queries import JobBucket
from collector.errors import ConfigError

NS = 1_000_000_000
T0 = 1_795_737_600 * NS
H100 = "NVIDIA H100 80GB HBM3"


def pt(cap: float, t: float, e: float) -> FrontierPoint:
    return FrontierPoint(cap, t, e, 1.0, e, t, cap, (), ())


def jb(job: str, t: int, energy: float, samples: float, cap: float | None = 700.0,
       active: float = 100.0, gpus: int = 2, planned: float | None = None,
       workload: str = "llm") -> JobBucket:
    return JobBucket(job, "h", "train", "bf16", H100, t, energy,
                     {"samples": samples, "tokens": 0.0, "flops": 0.0, "steps": 0.0}, active, gpus,
                     32.0, cap, 95.0, 96.0, False, planned, workload)


def test_build_frontiers_by_hand() -> None:
    buckets = [jb("llm-node-0-a-1", T0, 140_000.0, 1000.0, 700.0),  # 100 s × 2 GPUs
               jb("llm-node-1-b-1", T0, 100_000.0, 800.0, 500.0)]
    (f,) = build_frontiers(buckets, {H100: 700.0})
    assert (f.workload, f.unit, f.p_max_w) == ("llm", "samples", 700.0)
    p700, p500 = sorted(f.points, key=lambda p: -p.cap_w)
    assert (p700.time_s_per_unit, p700.energy_j_per_unit) == (0.2, 140.0)  # 200 GPU-s / 1000
    assert (p500.time_s_per_unit, p500.energy_j_per_unit) == (0.25, 125.0)
    assert p700.peak_power_w == 700.0 and p500.peak_power_w == 500.0
    # cost(λ) per sample: 700 W cap: 140λ + 140(1−λ) = 140; 500 W: 125λ + 175(1−λ) = 175 − 50λ.
    assert best_cap(f, 0.5).cap_w == 700.0  # type: ignore[union-attr]  # 140 < 150
    assert best_cap(f, 0.9).cap_w == 500.0  # type: ignore[union-attr]  # 130 < 140
    assert break_even_lambda(p700, p500, 700.0) == pytest.approx(0.7)  # 175 − 50λ = 140


def test_pareto_drops_dominated_points() -> None:
    a, b, c, d = pt(700, 1.0, 10.0), pt(500, 1.2, 8.0), pt(450, 1.3, 9.0), pt(400, 1.5, 7.0)
    assert pareto([a, b, c, d]) == (a, b, d)  # c is slower and hungrier than b
    f = Frontier(H100, "train", "w", "bf16", "samples", 700.0, (a, b, c, d))
    assert best_cap(f, 1.0) == d and best_cap(f, 0.0) == a
    with pytest.raises(ConfigError, match="lambda"):
        best_cap(f, 1.2)


def test_base_workload_strips_precision() -> None:
    assert base_workload("bert-ft-fp32") == "bert-ft"
    assert base_workload("bert-ft") == "bert-ft"
    assert base_workload("llama-int8-serve") == "llama-serve"


def test_prediction_by_hand_and_the_interval_narrows() -> None:
    # 100 s buckets of 100 samples (1 sample/s) at ~2 J/sample (±1 % noise); plan: 1000 samples.
    def run(done_buckets: int) -> list[JobBucket]:
        return [jb("j", T0 + k * 100 * NS, 200.0 * (1 + 0.01 * (k % 3)), 100.0, active=100.0,
                   planned=1000.0) for k in range(done_buckets)]

    early, late = predict_job(run(3)), predict_job(run(8))
    assert early is not None and late is not None
    assert early.progress == pytest.approx(0.3) and late.progress == pytest.approx(0.8)
    assert early.remaining_s == pytest.approx(700.0)  # 700 samples at 1 sample/s
    assert early.energy_total_j == pytest.approx(sum(b.energy_j for b in run(3)) / 300 * 1000)
    assert early.finish_ns == early.now_ns + 700 * NS
    assert early.energy_low_j <= early.energy_total_j <= early.energy_high_j
    assert early.energy_high_j - early.energy_low_j > late.energy_high_j - late.energy_low_j
    assert early.finish_high_ns - early.finish_low_ns > late.finish_high_ns - late.finish_low_ns
    assert late.kg_co2 is None and late.carbon_message is not None


def test_single_bucket_uses_the_prior_and_past_the_plan_is_done() -> None:
    one = predict_job([jb("j", T0, 100.0, 10.0, active=10.0, planned=20.0)])
    assert one is not None
    assert one.energy_high_j - one.energy_total_j == pytest.approx(100.0 * PRIOR_REL)
    over = predict_job([jb("j", T0, 100.0, 30.0, planned=20.0)])
    assert over is not None and over.done and over.remaining_s == 0
    assert over.energy_total_j == over.energy_done_j == 100.0
    assert predict_job([jb("j", T0, 100.0, 30.0, planned=None)]) is None
    assert predict_job([jb("j", T0, 0.0, 0.0, planned=10.0)]) is None


def test_prediction_co2_with_a_flat_intensity() -> None:
    s = carbon.annual_series("FR")  # flat: done and remaining hours all at the same intensity
    p = predict_job([jb("j", T0 + k * 100 * NS, 3.6e6, 100.0, planned=400.0) for k in range(2)], s)
    assert p is not None and p.kg_co2 is not None
    g = s.annual.g_per_kwh  # type: ignore[union-attr]
    assert p.kg_co2 == pytest.approx(4 * 1.0 * g / 1000)  # 4 kWh in total
