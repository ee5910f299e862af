"""Carbon intensity (series, CSV, bundled table, forecast, windows) and energy cost, by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics import carbon
from analytics.carbon import HOUR_NS, Intensity, IntensitySeries
from analytics.cost import Tariff, energy_cost, parse_tariff
from collector.errors import ConfigError

KWH = 3.6e6
T0 = 1_795_737_600 * 10**9  # 2026-11-27T00:00Z


def series(values: dict[int, float], renewable: dict[int, float] | None = None) -> IntensitySeries:
    return IntensitySeries("r", "test", {T0 + h * HOUR_NS: Intensity(g, (renewable or {}).get(h))
                                         for h, g in values.items()})


def test_emissions_by_hand() -> None:
    s = series({0: 100.0, 1: 200.0}, {0: 50.0, 1: 20.0})
    # 1 kWh at 100 g + 2 kWh at 200 g = 500 g; mean 500 / 3 g/kWh; renewable (1×50 + 2×20) / 3 %.
    em = carbon.emissions({T0 + 10: KWH, T0 + HOUR_NS + 5: 2 * KWH}, s)
    assert em.g_co2 == pytest.approx(500.0)
    assert em.kg_co2 == pytest.approx(0.5)
    assert em.mean_g_per_kwh == pytest.approx(500 / 3)
    assert em.renewable_pct == pytest.approx(30.0)
    assert em.uncovered_energy_j == 0 and em.message is None


def test_missing_carbon_data_is_a_message_not_zero() -> None:
    em = carbon.emissions({T0: KWH}, None)
    assert em.g_co2 is None and em.kg_co2 is None
    assert em.message is not None and "--carbon-csv" in em.message and "--country" in em.message


def test_hours_far_from_any_known_hour_are_reported_uncovered() -> None:
    s = series({0: 100.0})
    # Hour 1 borrows hour 0 (within the 3 h gap limit); hour 10 is too far and is left out.
    em = carbon.emissions({T0: KWH, T0 + HOUR_NS: KWH, T0 + 10 * HOUR_NS: KWH}, s)
    assert em.g_co2 == pytest.approx(200.0)
    assert em.uncovered_energy_j == pytest.approx(KWH)
    assert em.message is not None and "not counted" in em.message


def test_zero_energy_has_zero_emissions() -> None:
    em = carbon.emissions({T0: 0.0}, series({0: 100.0}))
    assert em.g_co2 == 0.0 and em.message is None


def test_csv_loads_and_averages_within_an_hour(tmp_path: Path) -> None:
    f = tmp_path / "grid.csv"
    f.write_text("timestamp,region,g_per_kwh,renewable_pct\n"
                 "2026-11-27T00:00Z,west,100,40\n2026-11-27T00:30:00+00:00,west,200,\n"
                 f"{T0 // 10**9 + 3600},west,300,10\n2026-11-27T00:00Z,east,50,\n")
    regions = carbon.load_intensity_csv(f)
    assert sorted(regions) == ["east", "west"]
    west = regions["west"]
    assert west.hourly[T0] == Intensity(150.0, 40.0)
    assert west.hourly[T0 + HOUR_NS] == Intensity(300.0, 10.0)
    assert regions["east"].hourly[T0].renewable_pct is None


@pytest.mark.parametrize(("text", "match"), [
    ("timestamp,region\n", "lacks column 'g_per_kwh'"),
    ("timestamp,region,g_per_kwh\n2026-11-27T00:00Z,west,abc\n", r":2: g_per_kwh: expected a number, got 'abc'"),
    ("timestamp,region,g_per_kwh\n2026-11-27T00:00Z,west,-5\n", r":2: g_per_kwh: must be a non-negative"),
    ("timestamp,region,g_per_kwh,renewable_pct\nx,west,5,1\n", r":2: timestamp: .* got 'x'"),
    ("timestamp,region,g_per_kwh,renewable_pct\n2026-11-27T00:00Z,west,5,120\n",
     "renewable_pct: must be between 0 and 100"),
    ("", "is empty"),
])
def test_csv_errors_name_line_field_and_value(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        carbon.load_intensity_csv(f)


def test_csv_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        carbon.load_intensity_csv(tmp_path / "nope.csv")


def test_bundled_table_names_source_and_year() -> None:
    table = carbon.bundled_table()
    assert {"FR", "DE", "WORLD"} <= set(table)
    fr = carbon.annual_series("fr")
    assert fr.at(T0) == Intensity(table["FR"].g_per_kwh, None)
    assert "2023" in fr.source and "Ember" in fr.source and fr.signal == "average"
    with pytest.raises(ConfigError, match=r"--country: .*'XX'.*wattlens carbon list"):
        carbon.annual_series("XX")


def test_persistence_forecast_and_given_future_values() -> None:
    day = {h: 100.0 + h for h in range(24)}
    s = series(day)
    now = T0 + 24 * HOUR_NS  # the next day: no data, so each hour repeats yesterday's
    fc = carbon.forecast(s, now, 86400)
    assert [g for _, g in fc] == [100.0 + h for h in range(24)]
    s.hourly[now + 5 * HOUR_NS] = Intensity(1.0)  # a supplied forecast wins over persistence
    assert dict(carbon.forecast(s, now, 86400))[now + 5 * HOUR_NS] == 1.0


def test_forecast_without_any_data_raises_a_clear_error() -> None:
    with pytest.raises(carbon.CarbonDataMissing, match="--carbon-csv"):
        carbon.forecast(IntensitySeries("r", "empty"), T0, 3600)


def test_best_window_by_hand() -> None:
    hourly = [(T0 + h * HOUR_NS, g) for h, g in enumerate([300.0, 100.0, 100.0, 400.0])]
    assert carbon.best_window(hourly, 7200) == (T0 + HOUR_NS, 100.0)
    # 1.5 h from hour 1: (100 × 1 + 100 × 0.5) / 1.5 = 100; from hour 0: (300 + 50) / 1.5.
    assert carbon.best_window(hourly, 5400) == (T0 + HOUR_NS, 100.0)
    assert carbon.window_mean(hourly, T0, 5400) == pytest.approx((300 + 50) / 1.5)
    assert carbon.window_mean(hourly, T0 + 3 * HOUR_NS, 7200) is None  # runs past the data
    assert carbon.best_window(hourly, 5 * 3600) is None


def test_flat_and_time_of_use_cost_by_hand() -> None:
    flat = Tariff(0.20)
    assert energy_cost({T0: 10 * KWH}, flat) == pytest.approx(2.0)
    tou = parse_tariff("0.10,17-21=0.30,22-6=0.05")
    assert tou.price_at(T0 + 18 * HOUR_NS) == 0.30
    assert tou.price_at(T0 + 23 * HOUR_NS) == 0.05 and tou.price_at(T0 + 2 * HOUR_NS) == 0.05
    assert tou.price_at(T0 + 12 * HOUR_NS) == 0.10
    # 1 kWh at 12:00 (0.10) + 2 kWh at 18:00 (0.30) + 1 kWh at 03:00 (0.05) = 0.75
    assert energy_cost({T0 + 12 * HOUR_NS: KWH, T0 + 18 * HOUR_NS: 2 * KWH,
                        T0 + 3 * HOUR_NS: KWH}, tou) == pytest.approx(0.75)
    shifted = parse_tariff("0.10,17-21=0.30", utc_offset_h=2)  # 16:00Z is 18:00 local
    assert shifted.price_at(T0 + 16 * HOUR_NS) == 0.30


@pytest.mark.parametrize(("text", "match"), [
    ("", "--price: expected"), ("abc", "--price: the first item"), ("0.1,17=0.3", "17=0.3"),
    ("0.1,17-21=x", "17-21=x"), ("-1", "price_per_kwh: must be a non-negative"),
    ("0.1,25-26=0.3", "period hours"),
])
def test_bad_tariffs(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_tariff(text)
