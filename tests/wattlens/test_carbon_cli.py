"""`wattlens carbon list|live` and `wattlens report --country/--region` with every kind of bundled code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics import grid_table
from tests.analytics.handmade import write_small_fleet
from tests.collector.sources.carbon_servers import EM_TOKEN, ProviderState, provider_server
from wattlens.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("carbon") / "s.db"
    write_small_fleet(path).close()
    return f"sqlite:///{path}"


def test_list_table_and_json_agree_with_the_bundled_rows(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "carbon", "list", "--json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == len(grid_table.rows())
    assert {r["code"] for r in rows} == {r.code for r in grid_table.rows().values()}
    assert all({"signal", "source", "year", "licence", "grid"} <= set(r) for r in rows)
    rc, out, _ = run(capsys, "carbon", "list")
    assert rc == 0 and f"{len(rows)} codes" in out
    us = next(line for line in out.splitlines() if line.startswith("US "))
    assert "369.5" in us  # printed with one decimal and "average" in us and "2023" in us
    rc, out, _ = run(capsys, "carbon", "list", "--kind", "cloud", "--json")
    assert {r["kind"] for r in json.loads(out)} == {"cloud"}
    rc, out, _ = run(capsys, "carbon", "list", "--kind", "egrid", "--json")
    egrid = json.loads(out)
    assert rc == 0 and len(egrid) == 27 and {r["kind"] for r in egrid} == {"egrid"}
    assert {r["code"] for r in egrid} == {r.code for r in grid_table.listing("egrid")}


@pytest.mark.parametrize("code", ["US", "GB", "JP", "SG"])
def test_report_country_uses_the_published_figure(store: str, code: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "report", "--store", store, "--format", "json", "--country", code)
    em = json.loads(out)["totals"]["emissions"]
    row = grid_table.lookup(code)
    assert rc == 0 and em["mean_g_per_kwh"] == pytest.approx(row.g_per_kwh)
    assert em["g_co2"] == pytest.approx(em["energy_j"] / 3.6e6 * row.g_per_kwh)
    assert "average 2023" in em["source"] and "Ember" in em["source"]


def test_report_region_accepts_cloud_and_state_codes(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    for code in ("aws:us-east-1", "US-VA", "gcp:europe-west4", "egrid:CAMX", "ERCT"):
        rc, out, err = run(capsys, "report", "--store", store, "--format", "json", "--region", code)
        assert rc == 0, err
        em = json.loads(out)["totals"]["emissions"]
        assert em["mean_g_per_kwh"] == pytest.approx(grid_table.lookup(code).g_per_kwh)
    rc, _, err = run(capsys, "report", "--store", store, "--region", "aws:mars-1")
    assert rc == 2 and "--region: no bundled annual intensity for 'aws:mars-1'" in err


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ProviderState]:
    with provider_server() as (url, st):
        monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", EM_TOKEN)
        monkeypatch.setenv("WATTLENS_ELECTRICITYMAPS_URL", url)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        yield st


def test_live_json_and_fallback(provider: ProviderState, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "carbon", "live", "electricitymaps:DE", "--forecast", "--json")
    got = json.loads(out)
    assert rc == 0 and got["g_per_kwh"] == 302.0 and got["signal"] == "average"
    assert len(got["forecast"]) == 3
    rc, out, _ = run(capsys, "carbon", "live", "electricitymaps:XX", "--fallback", "FR")
    assert rc == 0 and "(average)" in out and "note: " in out and "zone 'XX'" in out
    rc, _, err = run(capsys, "carbon", "live", "electricitymaps:XX")
    assert rc == 2 and "--fallback CODE" in err and err.count("\n") == 1


def test_live_without_a_key_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ELECTRICITYMAPS_API_TOKEN", raising=False)
    rc, _, err = run(capsys, "carbon", "live", "electricitymaps:DE")
    assert rc == 2 and "ELECTRICITYMAPS_API_TOKEN" in err


def test_live_resolves_a_cloud_region_to_its_zone(provider: ProviderState,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    provider.em_zones["SE-SE3"] = 20.0
    rc, out, _ = run(capsys, "carbon", "live", "electricitymaps:aws:eu-north-1", "--json")
    got = json.loads(out)
    assert rc == 0 and got["zone"] == "SE-SE3" and got["g_per_kwh"] == 20.0


def test_collect_tags_points_with_the_code_given(provider: ProviderState) -> None:
    from collector.sources.base import Tick
    from collector.sources.carbon_live import CarbonLiveSource
    from wattlens.cli import build_parser
    from wattlens.commands.collect import build_sources
    from wattlens.config import resolve

    provider.em_zones["US-MIDA-PJM"] = 380.0
    args = build_parser().parse_args(["collect", "--source", "sim", "--carbon-live",
                                      "electricitymaps:aws:us-east-1"])
    resolve(args._parser, args, args._section)
    (src,) = [s for s in build_sources(args) if isinstance(s, CarbonLiveSource)]
    (p,) = src.sample(Tick(1_795_824_000 * 10**9, 0.0))
    assert p.tag_map["region"] == "aws:us-east-1" and p.field_map == {"intensity_g_per_kwh": 380.0}


def test_collect_once_shows_the_carbon_point(provider: ProviderState, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "collect", "--source", "sim", "--nodes", "1", "--gpus", "1", "--once",
                     "--interval", "0.1", "--spool-dir", str(tmp_path / "spool"),
                     "--carbon-live", "electricitymaps:DE")
    line = next(x for x in out.splitlines() if x.startswith("electricitymaps"))
    assert rc == 0 and line.split()[1:4] == ["DE", "average", "302"]
