"""Provider forecasts in the analytics: fallback to the table, forecast hours, and the window's confidence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics import carbon, carbon_live
from analytics.carbon import HOUR_NS, Intensity, IntensitySeries
from collector.errors import ConfigError
from collector.sources.carbon_live import Reading
from tests.collector.sources.carbon_servers import EM_TOKEN, ProviderState, provider_server

T0 = 1_795_824_000 * 10**9  # 2026-11-28T00:00Z


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ProviderState]]:
    with provider_server() as (url, st):
        monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", EM_TOKEN)
        monkeypatch.setenv("WATTLENS_ELECTRICITYMAPS_URL", url)
        yield url, st


def test_live_figure_and_forecast(server: tuple[str, ProviderState], tmp_path: Path) -> None:
    got = carbon_live.live_or_table("electricitymaps:DE", forecast=True, cache_dir=tmp_path)
    assert (got.zone, got.g_per_kwh, got.signal, got.note) == ("DE", 302.0, "average", None)
    assert "electricitymaps" in got.source
    assert [g for _, g in got.forecast] == [280.0, 150.0, 200.0]


def test_provider_error_falls_back_to_the_table_or_says_what_to_do(server: tuple[str, ProviderState],
                                                                   tmp_path: Path) -> None:
    got = carbon_live.live_or_table("electricitymaps:XX", fallback="DE", cache_dir=tmp_path)
    table_de = carbon.bundled_table()["DE"]
    assert got.g_per_kwh == table_de.g_per_kwh and got.signal == "average"
    assert got.note is not None and "zone 'XX'" in got.note and "bundled figure for DE" in got.note
    with pytest.raises(ConfigError, match="--fallback CODE"):
        carbon_live.live_or_table("electricitymaps:XX", cache_dir=tmp_path)


def test_forecast_fills_future_hours_only_and_is_marked(server: tuple[str, ProviderState],
                                                        tmp_path: Path) -> None:
    measured = IntensitySeries("DE", "store", {T0 + HOUR_NS: Intensity(999.0)}, signal="average")
    series, note = carbon_live.load_forecast("electricitymaps:DE", measured, cache_dir=tmp_path)
    assert note is None and series is not None
    assert series.hourly[T0 + HOUR_NS].g_per_kwh == 999.0  # a measured hour is never overwritten
    assert series.hourly[T0 + 2 * HOUR_NS].g_per_kwh == 150.0
    assert series.forecast_hours == {T0 + 2 * HOUR_NS, T0 + 3 * HOUR_NS}
    assert "forecast: electricitymaps DE (average, 2 h)" in series.source


def test_provider_down_keeps_the_series_with_a_note(server: tuple[str, ProviderState], tmp_path: Path) -> None:
    _, st = server
    st.rate_limited = True
    table = carbon.annual_series("DE")
    series, note = carbon_live.load_forecast("electricitymaps:DE", table, cache_dir=tmp_path)
    assert series is table and note is not None and "rate limit" in note


def test_marginal_forecast_is_not_mixed_into_average() -> None:
    r = Reading("CAISO_NORTH", T0, 400.0, "marginal", "watttime", True)
    with pytest.raises(ConfigError, match="marginal"):
        carbon_live.with_forecast(None, [r], "CAISO_NORTH")


def test_hourly_means_of_five_minute_points() -> None:
    pts = [Reading("Z", T0 + k * 300 * 10**9, float(k), "average", "p", True) for k in range(12)]
    assert carbon_live.hourly_means(pts) == {T0: pytest.approx(5.5)}


def test_forecast_basis_and_confidence_by_hand() -> None:
    past = {T0 - h * HOUR_NS: Intensity(100.0) for h in range(1, 4 * 24 + 1)}  # four days measured
    s = IntensitySeries("r", "t", {**past, T0 + HOUR_NS: Intensity(50.0)},
                        forecast_hours=frozenset({T0 + HOUR_NS}))
    basis = carbon.forecast_basis(s, [T0, T0 + HOUR_NS], T0)
    assert basis == {"provider": 1, "given": 0, "persistence": 1, "annual": 0}
    assert carbon.history_days(s, T0) == 4.0
    assert carbon.window_confidence(basis, 4.0, True)[0] == "medium"
    assert carbon.window_confidence({"provider": 2}, 4.0, True)[0] == "high"
    assert carbon.window_confidence({"provider": 2}, 0.0, False)[0] == "medium"
    level, why = carbon.window_confidence({"persistence": 2}, 1.0, True)
    assert level == "low" and "under 3 days" in why
    level, why = carbon.window_confidence({"annual": 1, "provider": 1}, 9.0, True)
    assert level == "low" and "flat annual" in why


def test_report_context_takes_the_provider_forecast(server: tuple[str, ProviderState], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics.context import Settings, load_context
    from analytics.timeutil import Window
    from tests.analytics.handmade import T0 as H_T0
    from tests.analytics.handmade import write_small_fleet

    _, st = server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # The hand-made fleet ends at 02:00 on 2026-11-27; the provider forecasts the three hours after.
    st.em_forecast = [("2026-11-27T02:00:00Z", 90.0), ("2026-11-27T03:00:00Z", 60.0),
                      ("2026-11-27T04:00:00Z", 30.0)]
    store = write_small_fleet(tmp_path / "h.db")
    try:
        ctx = load_context(store, Window(H_T0, H_T0 + 2 * HOUR_NS + 1),
                           Settings(country="DE", carbon_live="electricitymaps:DE"))
    finally:
        store.close()
    assert ctx.carbon is not None and ctx.carbon_message is None
    assert ctx.carbon.forecast_hours == {H_T0 + k * HOUR_NS for k in (2, 3, 4)}
    fc = dict(carbon.forecast(ctx.carbon, H_T0 + 2 * HOUR_NS, 3 * 3600))
    assert [fc[H_T0 + k * HOUR_NS] for k in (2, 3, 4)] == [90.0, 60.0, 30.0]
    assert "forecast: electricitymaps DE (average, 3 h)" in ctx.carbon.describe()
    # Past hours still come from the table (--country): the forecast never rewrites them.
    assert ctx.carbon.at(H_T0).g_per_kwh == carbon.bundled_table()["DE"].g_per_kwh
