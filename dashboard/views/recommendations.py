"""Recommendations page view model: ranked items, the all-applied total (each joule once), cap commands."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from analytics import units
from analytics.context import Context
from analytics.recommend import Recommendation, recommend_from
from analytics.savings import combined


@dataclass
class RecommendationsView:
    """Ranked recommendations with the total they would save per day, each joule counted once."""

    items: list[Recommendation]
    messages: list[str]
    kwh_per_day: float
    kg_co2_per_day: float | None
    cost_per_day: float
    currency: str
    total_note: str = "if all were applied"
    span_s: float = 86400.0

    def signature(self, range_key: str, lam: float) -> Any:
        """What the page shows, as the JSON the browser hands back (lists, not tuples; savings at
        display precision), so that an unchanged list is recognised and not sent again."""
        return json.loads(json.dumps([range_key, round(lam, 4), [
            [r.id, round(r.savings_kwh_per_day, 1), r.title] for r in self.items]]))


def recommendations_view(ctx: Context, lam: float) -> RecommendationsView:
    rs = recommend_from(ctx, lam)
    total = combined(rs.items)
    return RecommendationsView(rs.items, rs.messages, total.kwh_per_day, total.kg_co2_per_day,
                               total.cost_per_day, ctx.settings.tariff.currency, total.note,
                               ctx.span_s)


def cap_commands(steps: list[Any]) -> list[str]:
    """The shell commands that apply a cap, naming every GPU: one line per host."""
    hosts: dict[str, list[int]] = defaultdict(list)
    watts = 0.0
    for s in steps:
        hosts[s.host].append(s.gpu)
        watts = s.watts
    out = []
    for host, gpus in sorted(hosts.items()):
        cmd = f"wattlens cap apply --host {host} --gpu $g --watts {watts:.0f} --apply"
        out.append(f"for g in {' '.join(str(g) for g in sorted(gpus))}; do {cmd}; done"
                   if len(gpus) > 1 else cmd.replace("$g", str(gpus[0])))
    return out


def evidence_rows(evidence: Any, digits: int = 4) -> list[tuple[str, str]]:
    """Evidence as (name, readable value) rows: numbers rounded to ``digits`` significant digits,
    lists of records as 'a: 1, b: 2; …', nested mappings flattened with dotted names."""
    rows: list[tuple[str, str]] = []
    for key, value in (evidence or {}).items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in evidence_rows(value, digits)]
        else:
            rows.append((str(key), readable(value, digits)))
    return rows


def readable(value: Any, digits: int = 4) -> str:
    """One evidence value as text, numbers rounded (no 291.80000000000047)."""
    if isinstance(value, bool) or value is None:
        return units.DASH if value is None else ("yes" if value else "no")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return units.DASH
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) < 1e-3 or abs(value) >= 1e6:
            return f"{value:.{digits}g}"
        r = round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))
        return f"{int(r):,}" if r == int(r) else f"{r:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {readable(v, digits)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(readable(v, digits) for v in value)
    return str(value)
