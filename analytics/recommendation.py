"""A recommendation, and how its saved energy is valued: kWh, kg CO2 and cost per day."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from analytics import carbon
from analytics.context import HOUR_NS, Context
from analytics.timeutil import fmt_time

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Recommendation:
    """One thing to change, why (evidence), what it would save per day, and how that was estimated.

    Savings are None where they cannot be computed (kg CO2 without carbon data):
    ``estimate_method`` says so. ``gpus`` are "host/index" strings and ``jobs``
    job ids the recommendation concerns; ``action`` is machine-readable.
    """

    id: str
    kind: str
    target: str
    title: str
    detail: str
    evidence: Mapping[str, Any]
    savings_kwh_per_day: float
    savings_kg_co2_per_day: float | None
    savings_cost_per_day: float
    estimate_method: str
    action: Mapping[str, Any] | None = None
    currency: str = "USD"
    measured: bool = True  # False: the gain is an assumption, not measured in this fleet
    gpus: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples and sets become lists)."""
        return {"id": self.id, "kind": self.kind, "target": self.target, "title": self.title,
                "detail": self.detail, "evidence": _plain(self.evidence),
                "savings_kwh_per_day": self.savings_kwh_per_day,
                "savings_kg_co2_per_day": self.savings_kg_co2_per_day,
                "savings_cost_per_day": self.savings_cost_per_day, "currency": self.currency,
                "estimate_method": self.estimate_method, "measured": self.measured,
                "action": _plain(self.action) if self.action is not None else None,
                "gpus": list(self.gpus), "jobs": list(self.jobs)}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items]
    return value


def _sig(x: float, digits: int = 3) -> float:
    """Round to significant digits: savings are estimates, and rounding keeps the ranking stable."""
    if x == 0 or not math.isfinite(x):
        return 0.0 if not math.isfinite(x) else x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


# --- valuing saved energy ------------------------------------------------------------------
@dataclass(frozen=True)
class Savings:
    kwh_per_day: float
    kg_co2_per_day: float | None
    cost_per_day: float
    note: str


def value_energy(ctx: Context, saved_by_hour: Mapping[int, float], *, at_meter: bool = False) -> Savings:
    """Per-day kWh, kg CO2 and cost of IT energy saved (J per hour over the window).

    kWh are IT energy (what the GPUs would not draw); CO2 and cost add the
    facility overhead (× the hour's PUE) where the facility measurement exists,
    and use the hour's grid intensity and tariff. ``at_meter``: the energy is
    already facility energy (no PUE applied).
    """
    scale = 86400 / ctx.span_s
    grid: dict[int, float] = {}
    for t, e in saved_by_hour.items():
        pue = 1.0 if at_meter else (ctx.pue_at(t) or 1.0)
        grid[t] = e * pue
    kwh = sum(saved_by_hour.values()) / J_PER_KWH * scale
    em = carbon.emissions(grid, ctx.carbon)
    kg = em.kg_co2 * scale if em.kg_co2 is not None else None
    cost = sum(e / J_PER_KWH * ctx.settings.tariff.price_at(t) for t, e in grid.items()) * scale
    notes = [f"scaled to a day from {ctx.span_s / 3600:.1f} h of data" if ctx.span_s >= 360
             else f"scaled to a day from {ctx.span_s:.0f} s of data"]
    notes.append("CO2 and cost include facility overhead (× PUE)" if ctx.fac.pue and not at_meter
                 else "CO2 and cost on IT energy (no PUE known)" if not at_meter else
                 "facility energy")
    if kg is None:
        notes.append(f"kg CO2 unknown: {em.message}")
    elif em.message:
        notes.append(em.message)
    return Savings(_sig(kwh), _sig(kg) if kg is not None else None, _sig(cost), "; ".join(notes))


def _by_hour(items: Iterable[tuple[int, float]]) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    for t, e in items:
        out[t // HOUR_NS * HOUR_NS] += e
    return dict(out)


def _worth(ctx: Context, s: Savings) -> bool:
    st = ctx.settings
    return s.kwh_per_day >= st.min_kwh_per_day or (s.kg_co2_per_day or 0.0) >= st.min_kg_co2_per_day


def _window_evidence(ctx: Context) -> dict[str, str]:
    return {"window": f"{fmt_time(ctx.window.start_ns)} .. {fmt_time(ctx.window.end_ns)}",
            "bucket_s": str(ctx.bucket_s)}
