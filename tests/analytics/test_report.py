"""The report over a simulated day: totals agree with the store read another way, and it serialises."""

from __future__ import annotations

import json

import pytest

from analytics import queries
from analytics.context import Settings
from analytics.cost import parse_tariff
from analytics.report import build_report, render
from collector.store import open_store
from tests.analytics.simstore import SimStore, sim_store


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> SimStore:
    return sim_store(tmp_path_factory, 24)


def test_report_totals_match_the_store(day: SimStore) -> None:
    store = open_store(day.url)
    steps: list[str] = []
    report = build_report(store, day.window, 0.5, Settings(tariff=parse_tariff("0.10,17-21=0.40")),
                          progress=steps.append)
    assert steps == ["gpu", "job", "cpu", "facility", "carbon", "analyse"]
    ref = queries.fleet_totals(store, day.window)  # the dashboard's own path
    t = report.totals
    assert t["gpu_energy_j"] == pytest.approx(ref.gpu_energy_j, rel=1e-9)
    assert t["cpu_energy_j"] == pytest.approx(ref.cpu_energy_j, rel=1e-9)
    assert t["facility_energy_j"] == pytest.approx(ref.facility_energy_j, rel=1e-9)
    assert 1.18 <= t["pue"] <= 1.42  # the simulated site's PUE swings 1.30 ± 0.12
    (fleet,) = report.per["fleet"]
    assert fleet.per["tokens"] == pytest.approx(ref.work["tokens"] / (ref.gpu_energy_j + ref.cpu_energy_j))
    (fac,) = report.per["facility"]
    assert ref.facility_energy_j is not None
    assert fac.per["tokens"] == pytest.approx(ref.work["tokens"] / ref.facility_energy_j)
    # Grid intensity from the store's hourly series; renewable share where known.
    em = t["emissions"]
    assert em["g_co2"] > 0 and em["uncovered_energy_j"] == 0 and em["renewable_pct"] is not None
    assert 100 < em["mean_g_per_kwh"] < 500
    # Time-of-use: the evening hours cost four times the rest, so the mean price lies between.
    mean_price = t["cost"] / (t["grid_energy_j"] / 3.6e6)
    assert 0.10 < mean_price < 0.40


def test_every_job_gets_its_objective_and_trade_off(day: SimStore) -> None:
    report = build_report(open_store(day.url), day.window, 0.5)
    by_job = {o["job"]: o for o in report.objectives}
    train = next(o for j, o in by_job.items() if j.startswith("llm-pretrain-node-00-a"))
    assert train["e_train_j"] == pytest.approx(train["terms"]["energy_j"], rel=1e-9)
    assert train["p_inf_share"] == 0.0 and train["tradeoff"]["max_power_w"] == 4 * 700.0
    infer = by_job["chat-infer-node-03"]
    assert infer["p_inf_share"] == 1.0 and infer["j"] == pytest.approx(infer["e_j"] + 0.5)
    assert report.frontiers and report.trends and report.recommendations


def test_predictions_cover_running_jobs_with_a_plan(day: SimStore) -> None:
    report = build_report(open_store(day.url), day.window, 0.5)
    assert report.predictions
    for p in report.predictions:
        assert 0 < p.progress < 1
        assert p.energy_low_j <= p.energy_total_j <= p.energy_high_j
        assert p.finish_ns > p.now_ns and p.kg_co2 is not None


def test_report_serialises_and_renders(day: SimStore) -> None:
    report = build_report(open_store(day.url), day.window, 0.5)
    data = json.loads(report.to_json())
    assert data["lambda"] == 0.5 and data["recommendations"][0]["id"]
    assert {"gpu", "job", "node", "fleet", "facility"} == set(data["per"])
    text = render(report)
    md = render(report, "md")
    for section in ("Totals", "Fleet PER", "Facility PER", "Job PER", "Recommendations"):
        assert section in text and f"## {section}" in md
    caps = [r["title"] for r in data["recommendations"] if r["kind"] == "power_cap"]
    assert caps and all(title in text and title in md for title in caps)
