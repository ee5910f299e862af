"""Readable numbers with units: W/kW/MW, J -> Wh/kWh/MWh, g/kg/t CO₂, money, durations, PER,
changes. One set of formats, for the dashboard and the report's tables."""

from __future__ import annotations

import math

J_PER_KWH = 3.6e6
DASH = "–"

_CURRENCY_SIGNS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def _ok(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _scaled(value: float, steps: tuple[tuple[float, str], ...], digits: int = 1) -> str:
    factor, unit = next(((f, u) for f, u in steps if abs(value) >= f), steps[-1])
    text = f"{value / factor:,.{digits}f}"
    if text.startswith("-") and not any(c in "123456789" for c in text):
        text = text[1:]  # a value that rounds to zero is 0, never -0
    return f"{text} {unit}"


def power(watts: float | None) -> str:
    """1234.5 -> '1.2 kW'."""
    if not _ok(watts):
        return DASH
    assert watts is not None
    return _scaled(watts, ((1e6, "MW"), (1e3, "kW"), (1.0, "W")))


def energy(joules: float | None) -> str:
    """Joules shown as Wh, kWh, MWh or GWh."""
    if not _ok(joules):
        return DASH
    assert joules is not None
    kwh = joules / J_PER_KWH
    steps = ((1e6, "GWh"), (1e3, "MWh"), (1.0, "kWh"), (1e-3, "Wh"))
    factor = next((f for f, _ in steps if abs(kwh) >= f), 1e-3)
    scaled = abs(kwh) / factor  # three or four significant digits whatever the prefix
    return _scaled(kwh, steps, 2 if scaled < 10 else 1 if scaled < 1000 or factor == 1e-3 else 0)


def mass_co2(grams: float | None) -> str:
    """Grams of CO2 shown as g, kg or t CO₂."""
    if not _ok(grams):
        return DASH
    assert grams is not None
    return _scaled(grams, ((1e6, "t CO₂"), (1e3, "kg CO₂"), (1.0, "g CO₂")))


def intensity(g_per_kwh: float | None) -> str:
    if not _ok(g_per_kwh):
        return DASH
    return f"{g_per_kwh:,.0f} g CO₂/kWh"


def money(amount: float | None, currency: str = "USD") -> str:
    """12345.6, 'USD' -> '$12,346'; small amounts keep cents."""
    if not _ok(amount):
        return DASH
    assert amount is not None
    sign = _CURRENCY_SIGNS.get(currency)
    text = f"{abs(amount):,.0f}" if abs(amount) >= 100 else f"{abs(amount):,.2f}"
    neg = "-" if amount < 0 else ""
    return f"{neg}{sign}{text}" if sign else f"{neg}{text} {currency}"


def duration(seconds: float | None) -> str:
    """3725 -> '1 h 02 min'."""
    if not _ok(seconds):
        return DASH
    assert seconds is not None
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def count(value: float | None, unit: str = "") -> str:
    """Large counts with SI prefixes: 1.2e9 tokens -> '1.20 G tokens'."""
    if not _ok(value):
        return DASH
    assert value is not None
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:,.2f} {prefix}{unit}".rstrip()
    return f"{value:,.0f} {unit}".rstrip()


def per(value: float | None, unit: str) -> str:
    """Work per joule with its unit (tokens/J); three significant digits."""
    if not _ok(value):
        return DASH
    assert value is not None
    if value >= 1000 or value < 0.01:
        return f"{value:.3g} {unit}"
    return f"{value:,.2f} {unit}"


def per3(value: float | None, unit: str) -> str:
    """PER in three significant digits, for cards: '238 tokens/J'."""
    if not _ok(value):
        return DASH
    assert value is not None
    return f"{value:,.3g} {unit}" if value < 1000 else f"{value:.3g} {unit}"


def pue(value: float | None) -> str:
    return f"{value:.2f}" if _ok(value) else DASH


def change_pct(now: float | None, before: float | None) -> float | None:
    """Relative change in percent, None when either side is unknown or the base is zero."""
    if not _ok(now) or not _ok(before) or not before:
        return None
    assert now is not None and before is not None
    return 100.0 * (now / before - 1.0)


def signed_pct(value: float | None) -> str:
    """+3.2 % / −1.0 % (a real minus sign); '–' when unknown."""
    if not _ok(value):
        return DASH
    assert value is not None
    if abs(value) < 0.05:
        return "±0.0 %"
    return f"{'+' if value > 0 else '−'}{abs(value):.1f} %"


def scale_for(values: list[float], unit: str) -> tuple[float, str]:
    """A power of 1000 to multiply per-unit quantities by, and the label: (1e6, 'per 1M tokens').

    Chosen so the largest value lands between 0.1 and 1000, which keeps axis ticks readable.
    """
    finite = [abs(v) for v in values if _ok(v) and v]
    top = max(finite) if finite else 1.0
    one = _SINGULAR.get(unit, unit)
    for factor, label in ((1.0, ""), (1e3, "1k "), (1e6, "1M "), (1e9, "1G "), (1e12, "1T ")):
        if top * factor >= 0.1:
            return factor, f"per {label}{unit}" if label else f"per {one}"
    return 1e12, f"per 1T {unit}"


_SINGULAR = {"samples": "sample", "tokens": "token", "flops": "FLOP", "steps": "step"}
