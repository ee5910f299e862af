"""The report over a simulated day: totals agree with the store read another way, and it serialises."""

from __future__ import annotations

import json
import math

import pytest

from analytics import queries
from analytics.context import Settings, load_headline
from analytics.cost import parse_tariff
from analytics.report import STEPS, build_report, render
from analytics.timeutil import Window
from collector.store import open_store
from tests.analytics.simstore import SimStore, sim_store

NS = 1_000_000_000


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> SimStore:
    return sim_store(tmp_path_factory, 24)


def test_report_totals_match_the_store(day: SimStore) -> None:
    store = open_store(day.url)
    steps: list[str] = []
    report = build_report(store, day.window, 0.5, Settings(tariff=parse_tariff("0.10,17-21=0.40")),
                          progress=steps.append)
    assert steps == list(STEPS) == ["gpu", "job", "cpu", "facility", "carbon", "job owners",
                                    "analyse"]
    # The dashboard cards' path: hourly aggregates only (analytics.context.load_headline).
    ref = load_headline(store, day.window, Settings(tariff=parse_tariff("0.10,17-21=0.40")))
    t = report.totals
    # And the store read a third way: plain sums, no buckets.
    gpu = sum(queries.energy_by(store, day.window, "gpu", ()).values())
    cpu = sum(queries.energy_by(store, day.window, "cpu", ()).values())
    assert t["gpu_energy_j"] == pytest.approx(ref.gpu_energy_j, rel=1e-9) == pytest.approx(gpu)
    assert t["cpu_energy_j"] == pytest.approx(ref.cpu_energy_j, rel=1e-9) == pytest.approx(cpu)
    assert t["it_energy_j"] == pytest.approx(ref.it_energy_j, rel=1e-9)
    assert t["facility_energy_j"] == pytest.approx(ref.facility_energy_j, rel=1e-9)
    assert t["cost"] == pytest.approx(ref.cost, rel=1e-9)
    assert t["kg_co2"] == pytest.approx(ref.emissions.kg_co2, rel=1e-9)
    assert 1.18 <= t["pue"] <= 1.42  # the simulated site's PUE swings 1.30 ± 0.12
    assert t["pue"] == pytest.approx(t["facility_energy_j"] / t["it_energy_j"])
    # Cost and carbon are of the facility energy, and say so.
    assert t["grid_energy_j"] == pytest.approx(t["facility_energy_j"])
    (fleet,) = report.per["fleet"]
    assert fleet.per["tokens"] == pytest.approx(ref.work["tokens"] / (gpu + cpu))
    assert t["fleet_per"]["per"]["tokens"] == pytest.approx(fleet.per["tokens"], rel=1e-9)
    assert t["fleet_per"]["gpu_only_per"]["tokens"] == pytest.approx(ref.work["tokens"] / gpu)
    (fac,) = report.per["facility"]
    assert ref.facility_energy_j is not None
    assert fac.per["tokens"] == pytest.approx(ref.work["tokens"] / ref.facility_energy_j)
    assert t["span_s"] == pytest.approx(day.window.seconds, rel=0.01)
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
    # J − E = λ_J·P, exactly (to the last bit of J), with the default λ_J of 1 kWh.
    assert report.objective_lambda_j == 3.6e6 and infer["objective_lambda_j"] == 3.6e6
    assert infer["p_inf_share"] == 1.0
    assert abs(infer["j"] - infer["e_j"] - 3.6e6 * infer["p_inf_share"]) <= math.ulp(infer["j"])
    assert infer["tradeoff"]["weight"] == 0.5
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
    assert data["tradeoff_weight"] == 0.5 and data["objective_lambda_j"] == 3.6e6
    assert data["recommendations"][0]["id"]
    assert {"gpu", "job", "node", "fleet", "facility"} == set(data["per"])
    text = render(report)
    md = render(report, "md")
    for section in ("Totals", "Fleet PER", "Facility PER", "Job PER", "Objective J = E + λ_J·P",
                    "Recommendations"):
        assert section in text and f"## {section}" in md
    # The objective and the trade-off per job, in both text formats.
    first = data["objectives"][0]
    assert first["job"] in text.split("Objective J")[1]
    assert "| job | E | P | J | trade-off cost | terms |" in md
    assert "-0.0" not in text and "-0.0" not in md
    assert "savings per day, scaled from 24.0 h of data" in text
    caps = [r["title"] for r in data["recommendations"] if r["kind"] == "power_cap"]
    assert caps and all(title in text and title in md for title in caps)


def test_idle_stretches_never_outlast_the_window(day: SimStore) -> None:
    """A window that starts inside a bucket (here 7 min past the hour) still reports idle
    stretches no longer than itself: never "longest 24.1 h" in 24 h."""
    w = Window(day.window.start_ns + 420 * NS, day.window.end_ns)
    report = build_report(open_store(day.url), w, 0.5)
    idle = [r for r in report.recommendations if r.kind == "idle_gpu"]
    assert idle
    for r in idle:
        longest_h = float(r.detail.split("(longest ")[1].split(" h")[0])
        assert longest_h <= w.seconds / 3600 + 0.05, r.detail  # within display rounding
