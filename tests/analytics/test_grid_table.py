"""The bundled intensity table: coverage, every code resolves, published values, labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analytics import carbon, grid_table
from collector.errors import ConfigError

# Ember's yearly data for 2023 as published independently in CO2.js 0.16.0 (Green Web
# Foundation, data/output/average-intensities, g CO2e/kWh); our table comes from
# CodeCarbon's copy of Ember / OWID, so these check one publication against another.
PUBLISHED_2023 = {"US": 369.47, "GB": 237.59, "JP": 485.39, "SG": 470.78}

# EPA eGRID2022 SRC2ERTA (subregion annual CO2e total output emission rate), lb/MWh as EPA publishes
# it with three decimals (egrid2022_data.xlsx, sheet SRL22); the table holds them x 0.45359237 in g/kWh.
EGRID2022_LB_PER_MWH = {"CAMX": 499.278, "ERCT": 774.298, "NYUP": 275.389, "RFCE": 660.311,
                        "SRSO": 897.659, "RFCW": 1005.904, "NWPP": 605.872}
EGRID_SUBREGIONS = {"AKGD", "AKMS", "AZNM", "CAMX", "ERCT", "FRCC", "HIMS", "HIOA", "MROE", "MROW", "NEWE",
                    "NWPP", "NYCW", "NYLI", "NYUP", "PRMS", "RFCE", "RFCM", "RFCW", "RMPA", "SPNO", "SPSO",
                    "SRMV", "SRMW", "SRSO", "SRTV", "SRVC"}


def test_coverage_countries_us_states_and_three_clouds() -> None:
    rows = grid_table.listing()
    kinds = {k: [r for r in rows if r.kind == k] for k in grid_table.KINDS}
    assert len(kinds["country"]) >= 200
    assert len(kinds["us_state"]) == 51  # 50 states and DC
    assert {r.code for r in kinds["egrid"]} == {f"egrid:{s}" for s in EGRID_SUBREGIONS}  # all 27
    providers = {r.code.split(":")[0] for r in kinds["cloud"]}
    assert providers == {"aws", "azure", "gcp"}
    for code in ("US", "GB", "JP", "SG", "NL", "KR", "US-VA", "aws:us-east-1", "gcp:europe-west4",
                 "azure:westeurope"):
        assert code.upper() in grid_table.rows()


def test_every_row_carries_signal_source_year_licence_and_a_known_grid() -> None:
    table = grid_table.rows()
    for row in table.values():
        assert row.signal == "average"
        assert row.source and row.licence and 2009 <= row.year <= 2024
        assert 0 < row.g_per_kwh < 1500, row
        if row.kind == "cloud" and not row.code.startswith("gcp:"):
            # AWS and Azure regions take their grid's figure, so grid and figure agree.
            assert table[row.grid.upper()].g_per_kwh == row.g_per_kwh, row
        elif row.kind == "cloud":
            assert row.grid.upper() in table, row  # GCP: Google's own figure, grid still bundled


def test_every_listed_code_resolves_for_country_and_region() -> None:
    for code, row in grid_table.rows().items():
        for spelling in (row.code, row.code.lower()):
            series = carbon.annual_series(spelling)
            assert series.annual is not None and series.annual.g_per_kwh == row.g_per_kwh
        assert grid_table.lookup(code, "--region") == row


@pytest.mark.parametrize(("code", "published"), sorted(PUBLISHED_2023.items()))
def test_published_values(code: str, published: float) -> None:
    row = grid_table.lookup(code)
    assert row.year == 2023 and "Ember" in row.source
    assert row.g_per_kwh == pytest.approx(published, abs=0.005)  # published with two decimals


def test_aliases_and_unknown_codes() -> None:
    assert grid_table.lookup("uk").code == "GB"
    assert grid_table.lookup("aws/us-east-1").code == "aws:us-east-1"
    assert grid_table.lookup("aws:us-east-1").grid == "US-VA"
    with pytest.raises(ConfigError, match=r"--region: no bundled annual intensity for 'aws:mars-1'.*codes starting"):
        grid_table.lookup("aws:mars-1", "--region")
    with pytest.raises(ConfigError, match="--kind"):
        grid_table.listing("planet")


def test_cloud_regions_carry_their_electricity_maps_zone() -> None:
    assert grid_table.lookup("aws:us-east-1").live_zone == "US-MIDA-PJM"
    assert grid_table.lookup("azure:swedencentral").live_zone == "SE-SE3"
    assert grid_table.live_spec("electricitymaps:aws:eu-north-1") == "electricitymaps:SE-SE3"
    assert grid_table.live_spec("electricitymaps:DE") == "electricitymaps:DE"  # a zone passes through
    assert grid_table.live_spec("watttime:aws:us-east-1") == "watttime:aws:us-east-1"  # EM zones only
    zones = [r for r in grid_table.listing("cloud") if r.live_zone]
    assert len(zones) >= 50 and all(not r.code.startswith("gcp:") for r in zones)


def test_iso3_codes_are_accepted_for_countries() -> None:
    assert grid_table.lookup("USA").code == "US" and grid_table.lookup("gbr").code == "GB"
    assert grid_table.lookup("JPN").code == "JP" and grid_table.lookup("global").code == "WORLD"


@pytest.mark.parametrize(("sub", "lb_per_mwh"), sorted(EGRID2022_LB_PER_MWH.items()))
def test_egrid_subregions_match_epa_published_rates(sub: str, lb_per_mwh: float) -> None:
    row = grid_table.lookup(f"egrid:{sub}", "--region")
    assert (row.kind, row.grid, row.year, row.signal) == ("egrid", f"egrid:{sub}", 2022, "average")
    assert "eGRID2022" in row.source and "SRC2ERTA" in row.source and "public domain" in row.licence
    assert row.g_per_kwh == pytest.approx(lb_per_mwh * 0.45359237, abs=0.005)  # stored with two decimals


def test_egrid_codes_resolve_in_every_spelling_and_list_by_kind() -> None:
    listed = grid_table.listing("egrid")
    assert len(listed) == 27 and all(r.kind == "egrid" for r in listed)
    for row in listed:
        sub = row.code.split(":")[1]
        for spelling in (row.code, sub, sub.lower(), f"egrid/{sub.lower()}"):
            assert grid_table.lookup(spelling, "--region") == row
            series = carbon.annual_series(spelling, "--region")
            assert series.annual is not None and series.annual.g_per_kwh == row.g_per_kwh
    # a subregion is not a state: NYUP (upstate New York) is far cleaner than the New York state mix
    assert grid_table.lookup("NYUP").g_per_kwh < grid_table.lookup("US-NY").g_per_kwh
    with pytest.raises(ConfigError, match=r"--region: no bundled annual intensity for 'egrid:XXXX'"):
        grid_table.lookup("egrid:XXXX", "--region")


def test_egrid_rows_match_their_source_file() -> None:
    """Each egrid row is its subregion in the vendored source file (kg/MWh = g/kWh), to two decimals."""
    src = json.loads((Path(__file__).parents[2] / "scripts/data/egrid2022_intensities.json").read_text())
    assert src["metadata"]["year"] == 2022 and set(src["regions_kg_per_mwh"]) == EGRID_SUBREGIONS
    for sub, kg_per_mwh in src["regions_kg_per_mwh"].items():
        row = grid_table.lookup(f"egrid:{sub}")
        assert row.g_per_kwh == round(kg_per_mwh, 2) and row.year == 2022, row
        assert f"(eGRID subregion {sub})" in row.name
