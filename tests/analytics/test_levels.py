"""PER at GPU, job, node, fleet and facility level over a hand-made store, with values computed by hand."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from analytics import levels, queries
from analytics.context import Settings
from analytics.cost import Tariff
from analytics.queries import GpuBucket, JobBucket
from analytics.report import build_report, render
from analytics.timeutil import Window
from collector.store.sqlite import SQLiteStore
from tests.analytics.handmade import A100, L4, NS, STEP, T0, N, write_small_fleet


@pytest.fixture
def small(tmp_path: Path) -> tuple[SQLiteStore, Window]:
    return write_small_fleet(tmp_path / "small.db"), Window(T0, T0 + (N * STEP + 1) * NS)


def test_per_at_every_level_by_hand(small: tuple[SQLiteStore, Window]) -> None:
    store, window = small
    report = build_report(store, window, 0.5, Settings(tariff=Tariff(0.2)))
    gpu = {r.name: r for r in report.per["gpu"]}
    assert gpu["h1/0"].energy_j == 72_000 and gpu["h1/0"].per["samples"] == pytest.approx(0.1)
    assert gpu["h1/0"].gflops_per_w == pytest.approx(0.1)  # 1e9 FLOP/sample × 0.1 samples/J
    assert gpu["h1/1"].energy_j == 360_000 and gpu["h1/1"].per == {}  # idle: no work attributed
    assert gpu["h2/0"].per["samples"] == pytest.approx(2.0)
    job = {r.name: r for r in report.per["job"]}
    assert job["job-a"].per["samples"] == pytest.approx(7_200 / 72_000)
    assert job["job-b"].per["samples"] == pytest.approx(28_800 / 14_400)
    node = {r.name: r for r in report.per["node"]}
    assert node["h1"].energy_j == 72_000 + 360_000 + 3_600
    assert node["h1"].per["samples"] == pytest.approx(7_200 / 435_600)
    assert node["h2"].estimated_energy_j == 1_200 and node["h1"].estimated_energy_j == 0
    assert node["h2"].label == "incl. 8% estimated energy"  # 1,200 / 15,600
    (fleet,) = report.per["fleet"]
    assert fleet.energy_j == 451_200 and fleet.estimated_energy_j == 1_200
    assert fleet.per["samples"] == pytest.approx(36_000 / 451_200)
    (fac,) = report.per["facility"]
    assert fac.energy_j == 12 * 56_400 and fac.extra["pue"] == pytest.approx(1.5)
    assert fac.per["samples"] == pytest.approx(36_000 / 676_800)
    t = report.totals
    assert t["pue"] == pytest.approx(1.5) and t["estimated_energy_j"] == 1_200
    assert t["cost"] == pytest.approx(676_800 / 3.6e6 * 0.2)  # on facility energy
    assert t["kg_co2"] is None and "--carbon-csv" in t["emissions"]["message"]
    assert any("estimated" in n for n in report.notes)
    json.dumps(report.to_dict(), allow_nan=False)
    text = render(report)
    assert "incl. 8% estimated energy" in text and "unknown: no carbon intensity" in text


def test_report_on_the_hand_made_store_recommends_the_idle_gpu(small: tuple[SQLiteStore, Window]) -> None:
    store, window = small
    report = build_report(store, window, 0.5)
    idle = [r for r in report.recommendations if r.kind == "idle_gpu"]
    assert [r.gpus for r in idle] == [("h1/1",)]
    # 360,000 J idle over the 2 h of data, scaled to a day: × 12 = 1.2 kWh.
    assert idle[0].savings_kwh_per_day == pytest.approx(360_000 * 12 / 3.6e6, rel=0.01)
    assert idle[0].evidence["mean_idle_power_w"] == pytest.approx(50.0, rel=0.05)
    assert idle[0].savings_kg_co2_per_day is None


def test_zero_energy_and_no_work_give_no_per() -> None:
    assert levels._row("job", "x", 0.0, {"samples": 10.0}).per == {}
    assert levels._row("job", "x", 10.0, {"samples": 0.0}).per == {}
    one = levels._row("job", "x", 2.0, {"samples": 1.0})
    assert one.per == {"samples": 0.5}


def gb(host: str, gpu: str, t: int, energy: float, util: float, limit: float,
       model: str = A100) -> GpuBucket:
    return GpuBucket(host, gpu, model, "counter", t, energy, util, util, None, None, limit, 1)


def jb(job: str, host: str, t: int, energy: float, samples: float, limit: float | None,
       model: str = A100) -> JobBucket:
    return JobBucket(job, host, "train", "bf16", model, t, energy,
                     {"samples": samples, "tokens": 0.0, "flops": 0.0, "steps": 0.0},
                     300.0, 1, 8.0, limit, 90.0, 90.0, False, None)


def test_attribution_follows_power_limit_then_energy_share() -> None:
    t = T0
    gpus = [gb("h", "0", t, 300.0, 90, 700), gb("h", "1", t, 100.0, 90, 700),
            gb("h", "2", t, 200.0, 90, 500), gb("h", "3", t, 50.0, 0, 500)]
    jobs = [jb("fast", "h", t, 400.0, 40.0, 700), jb("slow", "h", t, 200.0, 30.0, 500)]
    work = levels.attribute_work_to_gpus(gpus, jobs)
    # "fast" goes to GPUs 0 and 1 (limit 700) by energy 3:1; "slow" to GPU 2 only (GPU 3 is idle).
    assert work[("h", "0")]["samples"] == pytest.approx(30.0)
    assert work[("h", "1")]["samples"] == pytest.approx(10.0)
    assert work[("h", "2")]["samples"] == pytest.approx(30.0)
    assert ("h", "3") not in work
    # Without a power limit on the job, its work spreads over every busy GPU of its model.
    spread = levels.attribute_work_to_gpus(gpus, [jb("any", "h", t, 600.0, 60.0, None)])
    assert spread[("h", "0")]["samples"] == pytest.approx(30.0)
    assert spread[("h", "2")]["samples"] == pytest.approx(20.0)


def test_attribution_follows_the_gpu_mask_where_a_job_reports_one() -> None:
    t = T0
    # Two jobs on one host, same model and power limit, both busy: by their masks, "a" ran on
    # GPUs 0 and 1, "b" on GPU 2. Without the masks their work would blend over all three.
    gpus = [gb("h", "0", t, 300.0, 90, 700), gb("h", "1", t, 100.0, 90, 700),
            gb("h", "2", t, 200.0, 90, 700)]
    a = replace(jb("a", "h", t, 400.0, 40.0, 700), gpu_mask=0b011)
    b = replace(jb("b", "h", t, 200.0, 30.0, 700), gpu_mask=0b100)
    work = levels.attribute_work_to_gpus(gpus, [a, b])
    assert work[("h", "0")]["samples"] == pytest.approx(30.0)  # 40 split 3:1 by energy
    assert work[("h", "1")]["samples"] == pytest.approx(10.0)
    assert work[("h", "2")]["samples"] == pytest.approx(30.0)  # all of b's, none of a's
    blended = levels.attribute_work_to_gpus(gpus, [replace(a, gpu_mask=None),
                                                   replace(b, gpu_mask=None)])
    assert blended[("h", "2")]["samples"] == pytest.approx(70.0 * 200.0 / 600.0)
    # A mask naming no GPU the host reported falls back to the guess.
    stray = levels.attribute_work_to_gpus(gpus, [replace(b, gpu_mask=0b1000)])
    assert sum(w["samples"] for w in stray.values()) == pytest.approx(30.0)


def test_trend_against_first_hour_and_against_a_reference() -> None:
    h = 3600 * NS
    buckets = [jb("j", "h", T0, 100.0, 200.0, 400), jb("j", "h", T0 + h, 100.0, 150.0, 400),
               jb("j", "h", T0 + 2 * h, 100.0, 100.0, 400)]
    (trend,) = levels.per_trends(buckets)
    assert trend.unit == "samples" and trend.baseline_source == "first hour"
    assert trend.baseline == pytest.approx(2.0) and trend.latest == pytest.approx(1.0)
    assert trend.change_pct == pytest.approx(-50.0)
    assert trend.values == pytest.approx((2.0, 1.5, 1.0))
    (ref,) = levels.per_trends(buckets, {"j": 0.5})
    assert ref.baseline_source == "reference" and ref.change_pct == pytest.approx(100.0)


def test_queries_read_the_buckets_back(small: tuple[SQLiteStore, Window]) -> None:
    store, window = small
    jobs = queries.job_buckets(store, window, 3600, job="job-b")
    assert {j.job for j in jobs} == {"job-b"}
    assert sum(j.work["samples"] for j in jobs) == 28_800
    assert queries.max_power_limit_w(store, window, L4) == 72.0
    assert queries.newest_time_ns(store) == T0 + N * STEP * NS
