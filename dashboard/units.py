"""Readable numbers with units: W/kW/MW, J -> kWh/MWh, g/kg/t CO2, PER."""

from __future__ import annotations


def _scaled(value: float, steps: tuple[tuple[float, str], ...], digits: int = 1) -> str:
    for factor, unit in steps:
        if abs(value) >= factor:
            return f"{value / factor:,.{digits}f} {unit}"
    factor, unit = steps[-1]
    return f"{value / factor:,.{digits}f} {unit}"


def power(watts: float | None) -> str:
    if watts is None:
        return "–"
    return _scaled(watts, ((1e6, "MW"), (1e3, "kW"), (1.0, "W")))


def energy(joules: float | None) -> str:
    if joules is None:
        return "–"
    kwh = joules / 3.6e6
    return _scaled(kwh, ((1e3, "MWh"), (1.0, "kWh"), (1e-3, "Wh")), 2 if abs(kwh) < 10 else 1)


def mass_co2(grams: float | None) -> str:
    if grams is None:
        return "–"
    return _scaled(grams, ((1e6, "t CO₂"), (1e3, "kg CO₂"), (1.0, "g CO₂")))


def per(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if value >= 1000 or value < 0.01:
        return f"{value:.3g} {unit}"
    return f"{value:,.2f} {unit}"
