"""Embodied carbon per GPU model (analytics/data/gpu_embodied.csv, overridable) amortised per GPU-hour."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from collector.errors import ConfigError

HOURS_PER_YEAR = 8766  # 365.25 days


@dataclass(frozen=True)
class Embodied:
    """Manufacturing kg CO2e of one GPU, its lifetime, and where the figures come from."""

    match: str
    kg_co2e: float
    lifetime_years: float
    source: str
    scope: str = ""  # what the figure covers (the card alone, or with a share of the host)

    @property
    def g_per_gpu_hour(self) -> float:
        """The amortised rate: grams CO2e per GPU-hour of the lifetime (SCI's TE × TS per hour)."""
        return self.kg_co2e * 1000 / (self.lifetime_years * HOURS_PER_YEAR)

    def to_dict(self) -> dict[str, object]:
        return {"match": self.match, "kg_co2e": self.kg_co2e, "lifetime_years": self.lifetime_years,
                "g_per_gpu_hour": self.g_per_gpu_hour, "scope": self.scope, "source": self.source}


@lru_cache(maxsize=1)
def bundled() -> dict[str, Embodied]:
    """The bundled table by upper-case match string."""
    text = resources.files("analytics").joinpath("data/gpu_embodied.csv").read_text(encoding="utf-8")
    lines = (line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {r["match"].upper(): Embodied(r["match"], float(r["kg_co2e"]), float(r["lifetime_years"]),
                                         r["source"], r.get("scope") or "") for r in csv.DictReader(lines)}


def parse_overrides(text: str | None) -> dict[str, Embodied]:
    """``H100=1200:5,A100=318:4`` (MODEL=KG:YEARS) -> overrides; errors name the item and value."""
    out: dict[str, Embodied] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        model, _, rest = item.partition("=")
        kg_text, _, years_text = rest.partition(":")
        try:
            kg, years = float(kg_text), float(years_text)
        except ValueError:
            raise ConfigError(f"--embodied: expected MODEL=KG:YEARS (H100=1200:5), got {item.strip()!r}") from None
        if not model.strip() or not (math.isfinite(kg) and kg >= 0 and math.isfinite(years) and years > 0):
            raise ConfigError(f"--embodied: {item.strip()!r}: KG must be >= 0 and YEARS > 0, with a model name")
        out[model.strip().upper()] = Embodied(model.strip(), kg, years, "--embodied (operator's figure)")
    return out


def matches(match: str, model: str) -> bool:
    """Whether ``match`` is a token of the model name, case-insensitive: not run into a letter or digit on
    either side, so ``L4`` matches ``NVIDIA L4`` but not ``NVIDIA L40S``, and ``V100-PCIE-32GB`` matches
    ``Tesla V100-PCIE-32GB``."""
    return re.search(rf"(?<![A-Z0-9]){re.escape(match.upper())}(?![A-Z0-9])", model.upper()) is not None


def lookup(model: str, overrides: Mapping[str, Embodied] | None = None) -> Embodied | None:
    """The figure for a GPU model name: the longest matching override, else the longest bundled match."""
    if overrides:
        hits = [k for k in overrides if matches(k, model)]
        if hits:
            return overrides[max(hits, key=len)]
    return _bundled_lookup(model)


@lru_cache(maxsize=256)
def _bundled_lookup(model: str) -> Embodied | None:
    """The longest bundled match (a fleet has a few models; the report asks once a GPU and job)."""
    table = bundled()
    hits = [k for k in table if matches(k, model)]
    return table[max(hits, key=len)] if hits else None
