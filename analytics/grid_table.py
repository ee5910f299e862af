"""The bundled annual grid intensity: countries, US state grids, US eGRID subregions, cloud regions; source,
year, licence each."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

from collector.errors import ConfigError

KINDS = ("world", "country", "us_state", "egrid", "cloud")


@dataclass(frozen=True)
class GridRow:
    """One bundled figure: ``code`` (ISO 3166 country or subdivision, ``egrid:CAMX`` for a US eGRID
    subregion, ``provider:region`` for clouds, WORLD), the ``grid`` it stands for, g CO2e/kWh, what
    kind of signal it is (always ``average`` here: a yearly mean of the generation mix, not a marginal rate) and
    where it comes from."""

    code: str
    name: str
    kind: str
    grid: str
    g_per_kwh: float
    signal: str
    year: int
    source: str
    licence: str
    live_zone: str = ""  # cloud regions: the Electricity Maps zone (Cloud Carbon Footprint's mapping)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """Source line for reports: kind of figure, year, where from and, for a cloud, its grid."""
        on = f" on grid {self.grid}" if self.kind == "cloud" and self.grid else ""
        return f"annual {self.signal} {self.year}{on}, {self.source}"


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, GridRow], dict[str, str]]:
    text = resources.files("analytics").joinpath("data/grid_intensity.csv").read_text(encoding="utf-8")
    out: dict[str, GridRow] = {}
    aliases: dict[str, str] = {}
    for r in csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#")):
        row = GridRow(r["code"], r["name"], r["kind"], r["grid"], float(r["g_per_kwh"]), r["signal"],
                      int(r["year"]), r["source"], r["licence"], r.get("live_zone") or "")
        out[row.code.upper()] = row
        for alias in (r.get("aliases") or "").split(";"):
            if alias.strip():
                aliases[alias.strip().upper()] = row.code.upper()
    return out, aliases


def rows() -> dict[str, GridRow]:
    """Every bundled row by upper-case code (analytics/data/grid_intensity.csv)."""
    return _load()[0]


def lookup(code: str, option: str = "--country") -> GridRow:
    """The row for a listed code (case-insensitive; ISO 3166 alpha-3 and UK accepted for countries,
    the bare acronym ``CAMX`` for ``egrid:CAMX``, ``aws/us-east-1`` for ``aws:us-east-1``); a clear
    error naming the option otherwise."""
    key = code.strip().upper().replace("/", ":")
    table, aliases = _load()
    row = table.get(aliases.get(key, key))
    if row is None:
        near = sorted(c for c in table if c.startswith(key[:2]))[:8]
        hint = f" (codes starting {key[:2]!r}: {', '.join(near)})" if near else ""
        raise ConfigError(f"{option}: no bundled annual intensity for {code!r}{hint}; "
                          f"`wattlens carbon list` shows all {len(table)} codes, "
                          f"or pass --carbon-csv FILE")
    return row


def is_listed(code: str) -> bool:
    """Whether ``code`` (any accepted spelling) names a bundled row."""
    try:
        lookup(code)
    except ConfigError:
        return False
    return True


def live_spec(spec: str) -> str:
    """``electricitymaps:aws:us-east-1`` -> ``electricitymaps:US-MIDA-PJM`` for a bundled cloud region
    that has a mapped zone; any other spec is returned as it is."""
    provider, _, zone = spec.partition(":")
    if provider.strip().lower() == "electricitymaps" and is_listed(zone):
        row = lookup(zone)
        if row.live_zone:
            return f"{provider}:{row.live_zone}"
    return spec


def listing(kind: str | None = None) -> list[GridRow]:
    """Rows in table order (world, countries, US states, eGRID subregions, cloud regions), optionally one kind."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return [r for r in rows().values() if kind is None or r.kind == kind]
