"""Energy cost: a price per kWh, flat or time-of-use by hour of day. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from collector.errors import ConfigError

NS = 1_000_000_000
HOUR_NS = 3600 * NS
J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Tariff:
    """A price per kWh, with optional time-of-use periods ``(start_hour, end_hour, price)``.

    Hours are whole hours of the day at ``utc_offset_h`` (local time of the
    site); a period may wrap midnight (22-6). Hours no period covers pay
    ``price_per_kwh``.
    """

    price_per_kwh: float
    currency: str = "USD"
    periods: tuple[tuple[int, int, float], ...] = ()
    utc_offset_h: int = 0

    def __post_init__(self) -> None:
        _price("price_per_kwh", self.price_per_kwh)
        for start, end, price in self.periods:
            if not (0 <= start <= 23 and 0 <= end <= 24 and start != end):
                raise ConfigError(f"tariff: period hours must be 0..24 and differ, got {start}-{end}")
            _price(f"tariff period {start}-{end}", price)
        if not -12 <= self.utc_offset_h <= 14:
            raise ConfigError(f"utc_offset_h: must be between -12 and 14, got {self.utc_offset_h!r}")

    def price_at(self, t_ns: int) -> float:
        """Price per kWh for the hour containing ``t_ns``; the first matching period wins."""
        hod = ((t_ns // HOUR_NS) + self.utc_offset_h) % 24
        for start, end, price in self.periods:
            inside = start <= hod < end if start < end else (hod >= start or hod < end)
            if inside:
                return price
        return self.price_per_kwh

    def describe(self) -> str:
        text = f"{self.price_per_kwh:g} {self.currency}/kWh"
        if self.periods:
            text += "; " + ", ".join(f"{s:02d}-{e:02d}h {p:g}" for s, e, p in self.periods)
            text += f" (UTC{self.utc_offset_h:+d})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {"price_per_kwh": self.price_per_kwh, "currency": self.currency,
                "periods": [list(p) for p in self.periods], "utc_offset_h": self.utc_offset_h}


def _price(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise ConfigError(f"{name}: must be a non-negative number, got {value!r}")
    return float(value)


def parse_tariff(text: str, currency: str = "USD", utc_offset_h: int = 0) -> Tariff:
    """``"0.15"`` or ``"0.15,17-21=0.32,0-6=0.08"``: a default price then START-END=PRICE periods."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"--price: expected a price per kWh like 0.15 or 0.15,17-21=0.32, got {text!r}")
    try:
        default = float(parts[0])
    except ValueError:
        raise ConfigError(f"--price: the first item must be the price per kWh, got {parts[0]!r}") from None
    periods = []
    for item in parts[1:]:
        hours, eq, price = item.partition("=")
        start, dash, end = hours.partition("-")
        try:
            if not eq or not dash:
                raise ValueError
            periods.append((int(start), int(end), float(price)))
        except ValueError:
            raise ConfigError(f"--price: period {item!r} must look like 17-21=0.32 "
                              f"(hours START-END, price per kWh)") from None
    return Tariff(default, currency, tuple(periods), utc_offset_h)


def energy_cost(energy_by_hour: Mapping[int, float], tariff: Tariff) -> float:
    """Σ energy(hour) / 3.6e6 × price(hour): the cost of energy given per hour (J, keyed by ns)."""
    return float(sum(e / J_PER_KWH * tariff.price_at(t) for t, e in energy_by_hour.items()))
