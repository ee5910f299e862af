"""Teams view: the showback table (analytics.teams, the report's definition) shaped for the page."""

from __future__ import annotations

from typing import Any

from analytics import units
from analytics.context import Context
from analytics.per import primary_unit
from analytics.teams import idle_policy_summary, team_rows


def teams_rows(ctx: Context, *, filtered: bool = False, by: str = "team") -> list[dict[str, Any]]:
    """One row per team or namespace (analytics.teams.team_rows), in the table's units."""
    out = []
    for r in team_rows(ctx, filtered=filtered, by=by):
        unit = primary_unit(r.work)
        out.append({
            "team": r.team, "energy_kwh": r.energy_j / units.J_PER_KWH, "share_pct": 100 * r.share,
            "idle_kwh": r.idle_j / units.J_PER_KWH, "jobs": r.jobs,
            "per": r.per.get(unit) if unit else None, "per_unit": unit or "",
            "kg_co2": r.kg_co2, "cost": r.cost, "id": r.team,
        })
    return out


def teams_note(ctx: Context, rows: list[dict[str, Any]]) -> str:
    """What the table covers: the idle policy and the total it sums to."""
    total = sum(r["energy_kwh"] for r in rows)
    return (f"{idle_policy_summary(ctx)['text']} · the rows sum to {total:,.2f} kWh, the GPU + CPU "
            f"energy of the range · {ctx.settings.tariff.currency} at {ctx.settings.tariff.describe()}")
