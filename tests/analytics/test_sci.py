"""SCI = (E·I + M) / R against the worked example in docs/carbon.md, through the whole report."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics import embodied, sci
from analytics.context import Settings
from analytics.report import build_report
from analytics.timeutil import Window
from collector.errors import ConfigError
from collector.schema import point
from collector.store.sqlite import SQLiteStore

NS = 10**9
T0 = 1_795_737_600 * NS  # 2026-11-27T00:00Z
A100 = "NVIDIA A100-SXM4-80GB"
STEP = 600
N = 18  # three hours of 10-minute points


def worked_example_store(path: Path) -> SQLiteStore:
    """docs/carbon.md, "SCI worked example": 2 A100s at 400 W for 3 h running one job of 1,000,000
    tokens, PUE 1.25, grid 200 g/kWh."""
    store = SQLiteStore(path)
    pts = []
    for k in range(1, N + 1):
        t = T0 + k * STEP * NS
        for gpu in ("0", "1"):
            pts.append(point("gpu", {"host": "h1", "gpu": gpu, "model": A100, "method": "counter"},
                             {"energy_j": 400.0 * STEP, "power_w": 400.0, "util_pct": 95.0,
                              "power_limit_w": 400.0}, t))
        pts.append(point("job", {"job": "llm-train", "host": "h1", "kind": "train", "precision": "bf16",
                                 "gpu_model": A100},
                         {"energy_j": 2 * 400.0 * STEP, "tokens": 1_000_000 / N, "samples": 10.0,
                          "active_s": float(STEP), "gpus": 2}, t))
        pts.append(point("facility", {"site": "s"}, {"it_energy_j": 2 * 400.0 * STEP,
                                                     "facility_energy_j": 1.25 * 2 * 400.0 * STEP}, t))
    for h in range(4):
        pts.append(point("carbon", {"region": "here"}, {"intensity_g_per_kwh": 200.0}, T0 + h * 3600 * NS))
    store.write(pts)
    return store


# The worked example's numbers, by hand (docs/carbon.md):
E_KWH = 2.4 * 1.25  # 2 GPUs × 0.4 kW × 3 h, × PUE
O_G = E_KWH * 200  # 600 g
M_RATE = 318_000 / (4 * 8766)  # A100: 318 kg over 4 years of 8766 h = 9.0691 g per GPU-hour
M_G = 6 * M_RATE  # 6 GPU-hours = 54.41 g
SCI = (O_G + M_G) / 1_000_000  # 6.544e-4 g CO2e per token


def test_worked_example_by_hand_constants() -> None:
    assert O_G == pytest.approx(600.0)
    assert M_RATE == pytest.approx(9.0691, abs=1e-4) and M_G == pytest.approx(54.4147, abs=1e-4)
    assert sci.sci(O_G, M_G, 1_000_000) == pytest.approx(6.544147e-4, rel=1e-6)
    assert embodied.lookup(A100) is not None and embodied.lookup(A100).g_per_gpu_hour == pytest.approx(M_RATE)


def test_report_sci_matches_the_worked_example(tmp_path: Path) -> None:
    store = worked_example_store(tmp_path / "s.db")
    try:
        report = build_report(store, Window(T0, T0 + 4 * 3600 * NS), 0.5, Settings())
    finally:
        store.close()
    d = report.to_dict()["sci"]
    (job,) = d["jobs"]
    assert job["unit"] == "tokens" and job["r"] == pytest.approx(1_000_000)
    assert job["pue"] == pytest.approx(1.25) and job["energy_j"] == pytest.approx(E_KWH * 3.6e6)
    assert job["mean_g_per_kwh"] == pytest.approx(200.0)
    assert job["operational_g"] == pytest.approx(O_G)
    assert job["gpu_hours"] == pytest.approx(6.0)
    assert job["embodied_g"] == pytest.approx(M_G)
    assert job["sci_g_per_unit"] == pytest.approx(SCI)
    fleet = d["fleet"]
    assert fleet["by_unit"]["tokens"]["sci_g_per_unit"] == pytest.approx(SCI)
    # The fleet figures agree with the report's own totals: nothing here is idle or overhead.
    assert fleet["operational_g"] == pytest.approx(report.totals["emissions"]["g_co2"])
    assert fleet["operational_g"] == pytest.approx(O_G)
    assert fleet["unattributed_operational_g"] == pytest.approx(0.0, abs=1e-6)
    assert fleet["embodied_g"] == pytest.approx(M_G) and fleet["embodied_unknown_models"] == []


def test_unknown_model_and_overrides(tmp_path: Path) -> None:
    store = worked_example_store(tmp_path / "s.db")
    try:
        w = Window(T0, T0 + 4 * 3600 * NS)
        r = build_report(store, w, 0.5, Settings(embodied="A100=100:2", sci_unit="samples"))
    finally:
        store.close()
    (job,) = r.sci["jobs"]
    assert job["embodied_g_per_gpu_hour"] == pytest.approx(100_000 / (2 * 8766))
    assert job["unit"] == "samples" and job["r"] == pytest.approx(180.0)
    assert job["sci_g_per_unit"] == pytest.approx((O_G + 6 * 100_000 / (2 * 8766)) / 180)
    assert embodied.lookup("NVIDIA H100 80GB HBM3") is None  # no published figure bundled
    with pytest.raises(ConfigError, match="--embodied: expected MODEL=KG:YEARS"):
        embodied.parse_overrides("H100=lots")
    with pytest.raises(ConfigError, match="YEARS > 0"):
        embodied.parse_overrides("H100=100:0")
    with pytest.raises(ConfigError, match="--sci-unit"):
        Settings(sci_unit="joules")


def test_job_without_embodied_figure_says_so(tmp_path: Path) -> None:
    from tests.analytics.handmade import T0 as H_T0
    from tests.analytics.handmade import write_small_fleet

    store = write_small_fleet(tmp_path / "h.db")
    try:
        r = build_report(store, Window(H_T0, H_T0 + 3 * 3600 * NS), 0.5, Settings(country="FR"))
    finally:
        store.close()
    jobs = {j["job"]: j for j in r.sci["jobs"]}
    assert jobs["job-b"]["embodied_g"] is None and jobs["job-b"]["sci_g_per_unit"] is None
    assert "no embodied figure for GPU model 'NVIDIA L4'" in jobs["job-b"]["note"]
    assert jobs["job-a"]["sci_g_per_unit"] is not None and jobs["job-a"]["unit"] == "samples"
    assert r.sci["fleet"]["embodied_unknown_models"] == ["NVIDIA L4"]
    assert set(r.sci["fleet"]["by_unit"]) == {"samples"} and r.sci["fleet"]["by_unit"]["samples"]["jobs"] == 1
