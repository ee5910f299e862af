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


def worked_example_store(path: Path, model: str = A100) -> SQLiteStore:
    """docs/carbon.md, "SCI worked example": 2 A100s (or ``model``) at 400 W for 3 h running one job of
    1,000,000 tokens, PUE 1.25, grid 200 g/kWh."""
    store = SQLiteStore(path)
    pts = []
    for k in range(1, N + 1):
        t = T0 + k * STEP * NS
        for gpu in ("0", "1"):
            pts.append(point("gpu", {"host": "h1", "gpu": gpu, "model": model, "method": "counter"},
                             {"energy_j": 400.0 * STEP, "power_w": 400.0, "util_pct": 95.0,
                              "power_limit_w": 400.0}, t))
        pts.append(point("job", {"job": "llm-train", "host": "h1", "kind": "train", "precision": "bf16",
                                 "gpu_model": model},
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
    assert embodied.lookup("NVIDIA B200") is None and embodied.lookup("NVIDIA L40") is None  # none bundled
    with pytest.raises(ConfigError, match="--embodied: expected MODEL=KG:YEARS"):
        embodied.parse_overrides("H100=lots")
    with pytest.raises(ConfigError, match="YEARS > 0"):
        embodied.parse_overrides("H100=100:0")
    with pytest.raises(ConfigError, match="--sci-unit"):
        Settings(sci_unit="joules")


def test_job_without_embodied_figure_says_so(tmp_path: Path) -> None:
    store = worked_example_store(tmp_path / "s.db", model="NVIDIA B200")  # no bundled figure
    try:
        r = build_report(store, Window(T0, T0 + 4 * 3600 * NS), 0.5, Settings())
    finally:
        store.close()
    (job,) = r.sci["jobs"]
    assert job["operational_g"] == pytest.approx(O_G)  # E·I is still known
    assert job["embodied_g"] is None and job["sci_g_per_unit"] is None
    assert "no embodied figure for GPU model 'NVIDIA B200'" in job["note"]
    assert r.sci["fleet"]["embodied_unknown_models"] == ["NVIDIA B200"] and r.sci["fleet"]["by_unit"] == {}


# GPU model names as NVML / amdsmi report them -> the bundled row they take (longest token match).
NAMES = {"NVIDIA H100 80GB HBM3": "H100", "NVIDIA H100 PCIe": "H100 PCIE", "NVIDIA H100 NVL": "H100 NVL",
         "NVIDIA H200": "H200", "NVIDIA L40S": "L40S", "NVIDIA L4": "L4", "Tesla V100-SXM2-32GB": "V100-SXM2-32GB",
         "Tesla V100-SXM2-16GB": "V100-SXM2-16GB", "Tesla V100-PCIE-32GB": "V100-PCIE-32GB",
         "Tesla V100-PCIE-16GB": "V100-PCIE-16GB", "AMD Instinct MI300X": "MI300X", A100: "A100"}
# The BoaviztAPI 2.5.0 manufacture-phase figures (kg CO2e) printed by scripts/embodied_boavizta.py.
BOAVIZTA_KG = {"H100": 572.0, "H100 PCIE": 564.5, "H100 NVL": 665.6, "H200": 1063.8, "L40S": 275.2, "L4": 123.3,
               "V100-SXM2-32GB": 286.9, "V100-SXM2-16GB": 202.5, "V100-PCIE-32GB": 285.5, "V100-PCIE-16GB": 201.1,
               "MI300X": 1494.1}


def test_embodied_rows_parse_with_scope_source_and_lifetime() -> None:
    table = embodied.bundled()
    assert set(table) == {"A100", *BOAVIZTA_KG}
    for key, row in table.items():
        assert row.kg_co2e > 0 and row.lifetime_years == 4 and row.scope and row.source, row
        assert row.g_per_gpu_hour == pytest.approx(row.kg_co2e * 1000 / (4 * 8766))
        if key != "A100":
            assert row.kg_co2e == BOAVIZTA_KG[key] and "BoaviztAPI 2.5.0" in row.source
            assert "card" in row.scope or "module" in row.scope
    assert "HotCarbon" in table["A100"].source and "1/8 share of the host" in table["A100"].scope


@pytest.mark.parametrize(("name", "match"), sorted(NAMES.items()))
def test_gpu_names_take_their_own_row(name: str, match: str) -> None:
    row = embodied.lookup(name)
    assert row is not None and row.match.upper() == match
    assert embodied.matches(match, name) and not embodied.matches("L4", "NVIDIA L40S")


def test_sci_uses_the_bundled_h100_and_l4_rows(tmp_path: Path) -> None:
    # the worked example on H100s: same E·I, M from the H100 row (572.0 kg over 4 years)
    store = worked_example_store(tmp_path / "s.db", model="NVIDIA H100 80GB HBM3")
    try:
        r = build_report(store, Window(T0, T0 + 4 * 3600 * NS), 0.5, Settings())
    finally:
        store.close()
    (job,) = r.sci["jobs"]
    m_rate = 572_000 / (4 * 8766)  # 16.3130 g per GPU-hour
    assert job["embodied_g_per_gpu_hour"] == pytest.approx(m_rate) and job["embodied_g"] == pytest.approx(6 * m_rate)
    assert job["sci_g_per_unit"] == pytest.approx((O_G + 6 * m_rate) / 1_000_000)
    assert r.sci["fleet"]["embodied_g"] == pytest.approx(6 * m_rate)
    # the hand-made fleet's L4 job now has every term, from the L4 row
    from tests.analytics.handmade import T0 as H_T0
    from tests.analytics.handmade import write_small_fleet

    store = write_small_fleet(tmp_path / "h.db")
    try:
        r = build_report(store, Window(H_T0, H_T0 + 3 * 3600 * NS), 0.5, Settings(country="FR"))
    finally:
        store.close()
    jobs = {j["job"]: j for j in r.sci["jobs"]}
    assert jobs["job-b"]["embodied_g_per_gpu_hour"] == pytest.approx(123_300 / (4 * 8766))
    assert jobs["job-b"]["embodied_g"] == pytest.approx(jobs["job-b"]["gpu_hours"] * 123_300 / (4 * 8766))
    assert jobs["job-b"]["sci_g_per_unit"] is not None and r.sci["fleet"]["embodied_unknown_models"] == []
