"""Electricity Maps and WattTime adapters against a local server with the documented shapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.errors import ConfigError
from collector.sources import carbon_live
from collector.sources.base import Tick
from collector.sources.carbon_live import Cached, CarbonApiError, CarbonLiveSource, ElectricityMaps, WattTime
from tests.collector.sources.carbon_servers import (
    EM_TOKEN,
    WT_PASSWORD,
    WT_USER,
    ProviderState,
    provider_server,
)

T0 = 1_795_824_000 * 10**9  # 2026-11-28T00:00Z


@pytest.fixture
def server() -> Iterator[tuple[str, ProviderState]]:
    with provider_server() as got:
        yield got


def test_electricitymaps_latest_and_forecast_are_average(server: tuple[str, ProviderState]) -> None:
    url, _ = server
    em = ElectricityMaps("DE", EM_TOKEN, url)
    r = em.latest()
    assert (r.zone, r.g_per_kwh, r.signal, r.provider, r.time_ns) == ("DE", 302.0, "average",
                                                                     "electricitymaps", T0)
    fc = em.forecast()
    assert [x.g_per_kwh for x in fc] == [280.0, 150.0, 200.0]
    assert all(x.forecast and x.signal == "average" for x in fc)
    assert fc[1].time_ns == T0 + 2 * 3600 * 10**9


def test_watttime_moer_is_marginal_in_g_per_kwh(server: tuple[str, ProviderState]) -> None:
    url, st = server
    wt = WattTime("CAISO_NORTH", WT_USER, WT_PASSWORD, url)
    r = wt.latest()
    # 1000 lb/MWh × 453.59237 g/lb / 1000 kWh/MWh = 453.59237 g/kWh
    assert r.g_per_kwh == pytest.approx(453.59237) and r.signal == "marginal" and not r.forecast
    assert [x.g_per_kwh for x in wt.forecast()] == pytest.approx([453.59237, 408.233133])
    assert st.calls.count("/login") == 1  # the bearer token is reused


@pytest.mark.parametrize(("make", "kind", "match"), [
    (lambda u: ElectricityMaps("DE", "wrong", u), "auth", "ELECTRICITYMAPS_API_TOKEN"),
    (lambda u: ElectricityMaps("XX", EM_TOKEN, u), "unknown_zone", "zone 'XX'"),
    (lambda u: WattTime("CAISO_NORTH", WT_USER, "wrong", u), "auth", "WATTTIME_USERNAME"),
    (lambda u: WattTime("NOWHERE", WT_USER, WT_PASSWORD, u), "unknown_zone", "zone 'NOWHERE'"),
])
def test_errors_say_what_went_wrong(server: tuple[str, ProviderState], make: object, kind: str,
                                    match: str) -> None:
    url, _ = server
    with pytest.raises(CarbonApiError, match=match) as info:
        make(url).latest()  # type: ignore[operator]
    assert info.value.kind == kind


def test_rate_limit_and_unreachable(server: tuple[str, ProviderState]) -> None:
    url, st = server
    st.rate_limited = True
    with pytest.raises(CarbonApiError, match=r"rate limit .*retry after 60 s") as info:
        ElectricityMaps("DE", EM_TOKEN, url).latest()
    assert info.value.kind == "rate_limit"
    with pytest.raises(CarbonApiError, match="cannot reach") as info:
        ElectricityMaps("DE", EM_TOKEN, "http://127.0.0.1:9", timeout_s=2).latest()
    assert info.value.kind == "unavailable"


def test_cache_serves_within_ttl_and_stale_copy_on_rate_limit(server: tuple[str, ProviderState],
                                                             tmp_path: Path) -> None:
    url, st = server
    now = [1000.0]
    cached = Cached(ElectricityMaps("DE", EM_TOKEN, url), tmp_path, latest_ttl_s=300, clock=lambda: now[0])
    assert cached.latest().g_per_kwh == 302.0
    st.em_zones["DE"] = 500.0
    now[0] += 100
    assert cached.latest().g_per_kwh == 302.0  # within the TTL: no call
    assert st.calls.count("/v3/carbon-intensity/latest") == 1
    now[0] += 300
    assert cached.latest().g_per_kwh == 500.0
    st.rate_limited = True
    now[0] += 400
    assert cached.latest().g_per_kwh == 500.0 and cached.stale and "rate limit" in cached.stale
    # A bad key is never papered over by the cache.
    bad = Cached(ElectricityMaps("DE", "wrong", url), tmp_path / "other")
    st.rate_limited = False
    with pytest.raises(CarbonApiError):
        bad.latest()


def test_from_env_takes_keys_from_the_environment_only() -> None:
    with pytest.raises(ConfigError, match="needs ELECTRICITYMAPS_API_TOKEN in the environment"):
        carbon_live.from_env("electricitymaps:DE", env={})
    with pytest.raises(ConfigError, match="needs WATTTIME_PASSWORD"):
        carbon_live.from_env("watttime:CAISO_NORTH", env={"WATTTIME_USERNAME": "a"})
    with pytest.raises(ConfigError, match="PROVIDER:ZONE"):
        carbon_live.from_env("co2signal:DE", env={})
    a = carbon_live.from_env("electricitymaps:DE", env={"ELECTRICITYMAPS_API_TOKEN": "t"})
    assert isinstance(a, ElectricityMaps) and a.zone == "DE"


def test_source_writes_labelled_points_and_survives_errors(server: tuple[str, ProviderState],
                                                          tmp_path: Path) -> None:
    url, _ = server
    src = CarbonLiveSource(Cached(ElectricityMaps("DE", EM_TOKEN, url), tmp_path, latest_ttl_s=0))
    assert src.probe().ok
    (p,) = src.sample(Tick(T0, 0.0))
    assert p.measurement == "carbon" and p.time_ns == T0
    assert p.tag_map == {"region": "DE", "source": "electricitymaps", "signal": "average"}
    assert p.field_map == {"intensity_g_per_kwh": 302.0}
    wt = CarbonLiveSource(Cached(WattTime("CAISO_NORTH", WT_USER, WT_PASSWORD, url), tmp_path))
    (q,) = wt.sample(Tick(T0, 0.0))
    assert q.field_map == {"marginal_g_per_kwh": pytest.approx(453.59237)}  # never the average field
    bad = CarbonLiveSource(Cached(ElectricityMaps("XX", EM_TOKEN, url), tmp_path))
    assert not bad.probe().ok and "zone 'XX'" in bad.probe().detail
    assert bad.sample(Tick(T0, 0.0)) == []  # the agent keeps going


def test_collect_flag_builds_the_source_and_refuses_a_bad_key(server: tuple[str, ProviderState],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    from wattlens.cli import build_parser
    from wattlens.commands.collect import build_sources

    url, st = server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("WATTLENS_ELECTRICITYMAPS_URL", url)
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", EM_TOKEN)
    args = build_parser().parse_args(["collect", "--source", "sim", "--carbon-live", "electricitymaps:FR"])
    from wattlens.config import resolve

    resolve(args._parser, args, args._section)
    sources = build_sources(args)
    carbon = [s for s in sources if isinstance(s, CarbonLiveSource)]
    assert carbon[0].region == "FR"
    assert len(carbon) == 1
    first = carbon[0].sample(Tick(T0, 0.0))
    assert [p.field_map for p in first] == [{"intensity_g_per_kwh": 41.0}]
    assert carbon[0].sample(Tick(T0 + 10**9, 1.0)) == []  # one point per 5 minutes, not per round
    assert len(carbon[0].sample(Tick(T0 + 301 * 10**9, 301.0))) == 1
    assert st.calls.count("/v3/carbon-intensity/latest") <= 2  # served from the cache in between
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", "wrong")
    with pytest.raises(ConfigError, match="--carbon-live: electricitymaps: the key was refused"):
        build_sources(args)


def test_a_damaged_cache_file_is_refetched(server: tuple[str, ProviderState], tmp_path: Path) -> None:
    url, st = server
    cached = Cached(ElectricityMaps("DE", EM_TOKEN, url), tmp_path)
    assert cached.latest().g_per_kwh == 302.0
    (f,) = (tmp_path / "carbon").glob("*latest.json")
    f.write_text('{"fetched_at": 1e12, "readings": [{"zone": "DE"}]}')  # wrong shape
    assert cached.latest().g_per_kwh == 302.0
    assert st.calls.count("/v3/carbon-intensity/latest") == 2
