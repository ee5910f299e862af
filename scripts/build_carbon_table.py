"""Rebuild analytics/data/grid_intensity.csv from the data files CodeCarbon ships (MIT).

Usage (needs pycountry for ISO 3 -> ISO 2 codes; neither is a wattlens dependency):

    pip download --no-deps codecarbon==3.3.2 codecarbon==1.2.0 -d /tmp/cc
    cd /tmp/cc && for w in *.whl; do mkdir -p ${w%%-py3*}; unzip -q -o $w -d ${w%%-py3*}; done
    npm pack @cloud-carbon-footprint/aws@0.15.0 @cloud-carbon-footprint/azure@1.8.0   # Apache-2.0
    (unpack each into /tmp/ccf/aws and /tmp/ccf/azure)
    python scripts/build_carbon_table.py /tmp/cc/codecarbon-3.3.2 /tmp/cc/codecarbon-1.2.0 /tmp/ccf \
        [scripts/data/egrid2022_intensities.json]

Figures are copied, never adjusted: countries from CodeCarbon's global_energy_mix.json
(Ember / Our World in Data, the latest year per country), US states from its eGRID2023
file (lb/MWh converted to g/kWh), GCP regions from its impact.csv (Google's 2023 grid
carbon intensity per region). AWS and Azure regions are mapped to the grid they sit on
(locations from CodeCarbon 1.2.0's impact.csv, and for regions it lacks, the country named in
the region's display name as Cloud Carbon Footprint lists it) and take that grid's figure.
Cloud rows also carry the Electricity Maps zone Cloud Carbon Footprint maps the region to
(`live_zone`), so `--carbon-live electricitymaps:aws:us-east-1` can ask for it.

US eGRID subregions (`egrid:CAMX`, ...) come from scripts/data/egrid2022_intensities.json, kept
byte for byte as e-mission-common (BSD-3-Clause) publishes it in
src/emcommon/resources/egrid2022_intensities.json: EPA eGRID2022 field SRC2ERTA (subregion annual
CO2e total output emission rate, sheet SRL22 of egrid2022_data.xlsx, public domain), lb/MWh
x 0.45359237 = kg/MWh = g/kWh. Dividing back gives EPA's published lb/MWh to three decimals
(CAMX 499.278, ERCT 774.298, NYUP 275.389), which tests/analytics/test_grid_table.py checks.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pycountry  # type: ignore[import-not-found]

OUT = Path(__file__).resolve().parents[1] / "analytics" / "data" / "grid_intensity.csv"
G_PER_LB = 453.59237
CC3 = "CodeCarbon 3.3.2 (MIT)"
HEADER = ("code", "name", "kind", "grid", "g_per_kwh", "signal", "year", "source", "licence", "live_zone", "aliases")
CCF = "Cloud Carbon Footprint (Apache-2.0)"
EGRID_JSON = Path(__file__).resolve().parent / "data" / "egrid2022_intensities.json"
# eGRID subregion acronym -> EPA's subregion name (eGRID Technical Guide, subregion table).
EGRID_NAMES = {
    "AKGD": "ASCC Alaska Grid", "AKMS": "ASCC Miscellaneous", "AZNM": "WECC Southwest",
    "CAMX": "WECC California", "ERCT": "ERCOT All", "FRCC": "FRCC All", "HIMS": "HICC Miscellaneous",
    "HIOA": "HICC Oahu", "MROE": "MRO East", "MROW": "MRO West", "NEWE": "NPCC New England",
    "NWPP": "WECC Northwest", "NYCW": "NPCC NYC/Westchester", "NYLI": "NPCC Long Island",
    "NYUP": "NPCC Upstate NY", "PRMS": "Puerto Rico Miscellaneous", "RFCE": "RFC East",
    "RFCM": "RFC Michigan", "RFCW": "RFC West", "RMPA": "WECC Rockies", "SPNO": "SPP North",
    "SPSO": "SPP South", "SRMV": "SERC Mississippi Valley", "SRMW": "SERC Midwest",
    "SRSO": "SERC South", "SRTV": "SERC Tennessee Valley", "SRVC": "SERC Virginia/Carolina",
}
# Regions CodeCarbon 1.2.0 does not list: the country named in their display name, as in Cloud
# Carbon Footprint's AWSRegions.ts ('Africa (Cape Town)') and AzureRegions.ts (swedencentral, ...).
EXTRA = {
    "aws": {"af-south-1": ("Africa (Cape Town)", "ZA"), "ap-southeast-3": ("Asia Pacific (Jakarta)", "ID"),
            "eu-south-1": ("EU (Milan)", "IT"), "me-south-1": ("Middle East (Bahrain)", "BH"),
            "me-central-1": ("Middle East (UAE)", "AE")},
    "azure": {"swedencentral": ("Sweden Central", "SE"), "switzerlandnorth": ("Switzerland North", "CH"),
              "switzerlandwest": ("Switzerland West", "CH"), "germanywestcentral": ("Germany West Central", "DE"),
              "germanynorth": ("Germany North", "DE"), "norwayeast": ("Norway East", "NO"),
              "norwaywest": ("Norway West", "NO"), "uaenorth": ("UAE North", "AE"),
              "uaecentral": ("UAE Central", "AE"), "qatarcentral": ("Qatar Central", "QA"),
              "brazilsoutheast": ("Brazil Southeast", "BR")},
}

# World: not in CodeCarbon's file; Ember's 2023 world average as charted by Statista (kept
# from the table this one replaces).
WORLD = ("WORLD", "World average", "world", "WORLD", "481", "average", "2023",
         "Ember, Yearly Electricity Data (via Statista, July 2024)", "CC BY 4.0 (Ember)", "", "GLOBAL")

US_STATES = {s.name.lower(): s.code for s in pycountry.subdivisions.get(country_code="US")}

# Cloud regions whose source row names a city but no state: the state that city is in.
CITY_STATE = {"Columbus": "US-OH", "Dallas": "US-TX", "Ashburn": "US-VA", "Portland": "US-OR",
              "San Francisco": "US-CA", "Seattle": "US-WA", "Dublin": "US-OH",
              "Las Vegas": "US-NV", "Salt Lake City": "US-UT", "Los Angeles": "US-CA"}


def iso2(iso3: str) -> str | None:
    c = pycountry.countries.get(alpha_3=iso3)
    return c.alpha_2 if c else None


def countries(cc3: Path) -> list[tuple[str, ...]]:
    mix = json.loads((cc3 / "codecarbon/data/private_infra/global_energy_mix.json").read_text())
    rows = []
    for iso3, r in sorted(mix.items()):
        code = iso2(iso3)
        g = r.get("carbon_intensity")
        if code is None or not g:  # no ISO code, or no generation figure (0.0) in the source
            continue
        rows.append((code, r["country_name"], "country", code, f"{g:g}", "average",
                     str(r["year"]), f"Ember / Our World in Data via {CC3} global_energy_mix.json",
                     "CC BY 4.0 (Ember/OWID); MIT (CodeCarbon)", "",
                     ";".join([iso3, *(["UK"] if code == "GB" else [])])))
    return rows


def us_states(cc3: Path) -> list[tuple[str, ...]]:
    data = json.loads((cc3 / "codecarbon/data/private_infra/2023/usa_emissions.json").read_text())
    src = data["_source"]
    rows = []
    for name, r in sorted(data.items()):
        if name.startswith("_") or name == "usa":
            continue
        code = f"US-{r['regionCode']}"
        rows.append((code, f"{name.title()} (US state grid)", "us_state", code,
                     f"{r['emissions'] * G_PER_LB / 1000:.2f}", "average", str(src["year"]),
                     f"{src['name'].split(',')[0]} field {src['field']}, via {CC3}",
                     "public domain (US EPA); MIT (CodeCarbon)", "", ""))
    return rows


def egrid_subregions(path: Path) -> list[tuple[str, ...]]:
    """The 27 eGRID subregions: code ``egrid:CAMX`` (alias ``CAMX``), kg/MWh as published = g/kWh."""
    data = json.loads(path.read_text())
    year = int(data["metadata"]["year"])
    rows = []
    for sub, kg_per_mwh in sorted(data["regions_kg_per_mwh"].items()):
        code = f"egrid:{sub}"
        rows.append((code, f"{EGRID_NAMES[sub]} (eGRID subregion {sub})", "egrid", code,
                     f"{kg_per_mwh:.2f}", "average", str(year),
                     f"EPA eGRID{year} field SRC2ERTA (subregion CO2e total output rate, lb/MWh x 0.45359237), "
                     "via e-mission-common (BSD-3-Clause) egrid2022_intensities.json",
                     "public domain (US EPA); BSD-3-Clause (e-mission-common)", "", sub))
    return rows


def state_of(row: dict[str, str]) -> str | None:
    st = (row.get("state") or "").strip().lower().replace("northern ", "")
    return US_STATES.get(st) or CITY_STATE.get((row.get("city") or "").strip())


def em_zones(ccf: Path) -> dict[str, str]:
    """provider:region -> Electricity Maps zone, from Cloud Carbon Footprint's region files."""
    out = {}
    aws = (ccf / "aws/package/src/lib/AWSRegions.ts").read_text()
    codes = dict(re.findall(r"^\s+([A-Z0-9_]+) = '([a-z0-9-]+)',", aws, re.M))
    for key, zone in re.findall(r"\[AWS_REGIONS\.([A-Z0-9_]+)\]: '([A-Z0-9-]+)'", aws):
        out[f"aws:{codes[key]}"] = zone
    az = (ccf / "azure/package/src/lib/AzureRegions.ts").read_text()
    names = dict(re.findall(r"^\s+([A-Z0-9_]+): \{\s*name: '([a-z0-9]+)'", az, re.M))
    for key, zone in re.findall(r"\[AZURE_REGIONS\.([A-Z0-9_]+)\.name\]: '([A-Z0-9-]+)'", az):
        if key in names:
            out[f"azure:{names[key]}"] = zone
    return out


def _grid_row(code: str, name: str, grid: str, g: tuple[str, ...], where: str, zone: str) -> tuple[str, ...]:
    return (code, name, "cloud", grid, g[4], "average", g[6], f"grid {grid} ({g[7]}); {where}", g[8], zone, "")


def cloud(cc3: Path, cc1: Path, grids: dict[str, tuple[str, ...]], zones: dict[str, str]) -> list[tuple[str, ...]]:
    rows = []
    with open(cc3 / "codecarbon/data/cloud/impact.csv", encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            if r["provider"] != "gcp" or r["city"] == "Hong Kong":
                continue
            grid = state_of(r) if r["countryIsoCode"] == "USA" else iso2(r["countryIsoCode"])
            region = r["region"].replace("me-cenrtal1", "me-central1")  # typo in the source
            rows.append((f"gcp:{region}", f"Google Cloud {region} ({r['city']})", "cloud",
                         grid or "", f"{float(r['impact']):.1f}", "average", "2023",
                         f"Google Cloud region carbon data 2023 (grid carbon intensity) via {CC3}",
                         "Google published data; MIT (CodeCarbon)", "", ""))
    with open(cc1 / "codecarbon/data/cloud/impact.csv", encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            if r["provider"] not in ("aws", "azure") or r["city"] in ("Hong Kong", "Wan Chai"):
                continue
            country = {"USA": "US"}.get(r["countryName"]) or pycountry.countries.lookup(
                r["countryName"].replace("South Korea", "Korea, Republic of")).alpha_2
            grid = state_of(r) if country == "US" else country
            if grid not in grids:
                continue
            code = f"{r['provider']}:{r['region']}"
            rows.append(_grid_row(code, f"{r['regionName']} ({r['city']})", grid, grids[grid],
                                  "region location from CodeCarbon 1.2.0 impact.csv", zones.get(code, "")))
    for provider, regions in EXTRA.items():
        for region, (display, grid) in regions.items():
            code = f"{provider}:{region}"
            if grid in grids and code not in {r[0] for r in rows}:
                rows.append(_grid_row(code, display, grid, grids[grid],
                                      f"region location from its display name in {CCF}", zones.get(code, "")))
    return rows


def main(cc3: str, cc1: str, ccf: str, egrid: str | None = None) -> None:
    base = countries(Path(cc3)) + us_states(Path(cc3)) + egrid_subregions(Path(egrid) if egrid else EGRID_JSON)
    grids = {r[0]: r for r in base}
    rows = [WORLD, *base, *cloud(Path(cc3), Path(cc1), grids, em_zones(Path(ccf)))]
    with open(OUT, "w", newline="", encoding="utf-8") as f:
        f.write("# Bundled annual grid carbon intensity, g CO2e per kWh; built by "
                "scripts/build_carbon_table.py. See docs/carbon.md.\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)
    print(f"{len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
