"""`wattlens report --country`: the carbon line says which hours the store's own intensity covered
and which the country's annual figure filled (issue 19), without changing the carbon math."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analytics.carbon import J_PER_KWH, annual_series
from collector.schema import point
from collector.store.sqlite import SQLiteStore
from wattlens.cli import main

NS = 1_000_000_000
T0 = 1_795_737_600 * NS  # 2026-11-27T00:00Z
HOURS = 10
GPU_J = 3.6e6  # 1 kWh of GPU energy per hour
STORE_G = 400.0  # the store's own intensity, g/kWh


def _store(path: Path, carbon_hours: range) -> str:
    """One GPU drawing 1 kWh in each of 10 hours; the `carbon` measurement in ``carbon_hours``."""
    store = SQLiteStore(path)
    pts = []
    for h in range(HOURS):
        t = T0 + (h * 3600 + 1800) * NS
        pts.append(point("gpu", {"host": "h1", "gpu": "0", "model": "NVIDIA A100-SXM4-80GB",
                                 "method": "counter"},
                         {"energy_j": GPU_J, "power_w": 1000.0, "util_pct": 90.0}, t))
        if h in carbon_hours:
            pts.append(point("carbon", {"region": "grid-here"},
                             {"intensity_g_per_kwh": STORE_G, "renewable_pct": 30.0}, t))
    store.write(pts)
    store.close()
    return f"sqlite:///{path}"


def _report(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> tuple[dict[str, object], str]:
    window = ["--store", url, "--since", "2026-11-27T00:00Z", "--until", "2026-11-27T10:00Z", *extra]
    assert main(["report", *window, "--format", "json"]) == 0
    em = json.loads(capsys.readouterr().out)["totals"]["emissions"]
    assert main(["report", *window]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("carbon "))
    return em, line


def _g(code: str) -> float:
    annual = annual_series(code).annual
    assert annual is not None
    return annual.g_per_kwh


def test_store_intensity_everywhere_leaves_every_country_unused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _store(tmp_path / "full.db", range(HOURS))
    plain, plain_line = _report(capsys, url)
    assert "--country" not in str(plain["source"]) and "--country" not in plain_line
    assert plain["fallback_hours"] == 0 and plain["hours"] == HOURS
    for code in ("US", "GB", "JP", "SG"):
        em, line = _report(capsys, url, "--country", code)
        assert em["g_co2"] == plain["g_co2"] == pytest.approx(HOURS * STORE_G)  # the math as before
        assert (em["hours"], em["fallback_hours"], em["fallback_energy_j"]) == (HOURS, 0, 0.0)
        assert f"--country {code}: unused, the store's own intensity covers every hour" in line
        assert line.count("--country") == 1  # the other codes' lines differ only by the code


def test_country_fills_the_hours_the_store_lacks_and_says_how_many(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # carbon for hours 0-1; hours 2-4 borrow the nearest known hour (within 3 h); 5-9 have none
    url = _store(tmp_path / "part.db", range(2))
    em, line = _report(capsys, url, "--country", "GB")
    assert (em["hours"], em["fallback_hours"]) == (HOURS, 5)
    assert em["fallback_energy_j"] == pytest.approx(5 * GPU_J)
    assert em["g_co2"] == pytest.approx(5 * STORE_G + 5 * _g("GB"))
    assert (f"--country GB ({_g('GB'):.0f} g/kWh, annual average 2023, Ember" in line
            and "filled 5 of 10 h (50 % of the energy), the store's own intensity the rest" in line)
    jp, jp_line = _report(capsys, url, "--country", "JP")
    assert jp["g_co2"] == pytest.approx(5 * STORE_G + 5 * _g("JP"))
    assert "--country JP (" in jp_line and "filled 5 of 10 h" in jp_line

    # no --country: the same five hours are uncovered, and said to be
    bare, _ = _report(capsys, url)
    assert bare["g_co2"] == pytest.approx(5 * STORE_G)
    assert bare["uncovered_energy_j"] == pytest.approx(5 * GPU_J) and bare["fallback_hours"] == 0


def test_no_carbon_in_the_store_the_country_covers_every_hour(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _store(tmp_path / "none.db", range(0))
    em, line = _report(capsys, url, "--country", "SG")
    assert em["g_co2"] == pytest.approx(HOURS * GPU_J / J_PER_KWH * _g("SG"))
    assert (em["hours"], em["fallback_hours"]) == (HOURS, HOURS)
    assert str(em["source"]).startswith("SG (annual average 2023")
    assert "--country SG: every hour (10 h), no hourly intensity for this window" in line


def test_simulated_store_through_the_cli(tmp_path: Path) -> None:
    """The issue's check: `wattlens report --country US|GB|JP|SG` on a small simulated store."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'sim.db'}"
    cli = [sys.executable, "-m", "wattlens"]
    end = ["--end", "2026-11-28T00:00:00Z"]
    wrote = subprocess.run([*cli, "simulate", "write", "--hours", "3", "--nodes", "1", "--gpus", "2",
                            "--store", url, *end], capture_output=True, text=True, timeout=300)
    assert wrote.returncode == 0, wrote.stderr
    lines = {}
    for code in ("US", "GB", "JP", "SG"):
        out = subprocess.run([*cli, "report", "--store", url, "--since", "3h", "--until",
                              "2026-11-28T00:00:00Z", "--country", code],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        lines[code] = next(x for x in out.stdout.splitlines() if x.startswith("carbon "))
        assert f"--country {code}: unused, the store's own intensity covers every hour" in lines[code]
    assert len(set(lines.values())) == 4
    assert len({x.split(" kg CO2")[0] for x in lines.values()}) == 1  # the same figure: the store's
