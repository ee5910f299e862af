"""Team showback: the window's GPU + CPU energy, PER, carbon and cost per team, one definition for
the report, the CLI's CSV and the dashboard.

A job's team is the ``team`` tag of its points (the jobs API, the process environment's Slurm
account or user, or its Kubernetes namespace; collector.job_round.job_team). Energy no team
claims is listed as such, so the rows always sum to the fleet's GPU + CPU energy:

- ``(no team)``: jobs that carry no team;
- ``(unattributed)``: energy no job used (the agent's ``unattributed`` points: idle GPUs, other
  processes, idle power kept unattributed by the idle policy) and the GPU + CPU energy no job
  point covers at all (hosts without a job tracker, the hours before a job reported).

Carbon and cost of each row use the fleet's own rule per hour (analytics.headline.grid_energy):
the row's energy × that hour's grid ÷ IT energy, so the rows' carbon and cost sum to the
fleet's too.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics import carbon
from analytics.context import Context
from analytics.cost import energy_cost
from analytics.headline import hour_of
from analytics.per import per_by_unit, primary_unit
from collector.attribution import UNATTRIBUTED

NO_TEAM = "(no team)"
NO_NAMESPACE = "(no namespace)"
UNATTRIBUTED_TEAM = "(unattributed)"
REST_OF_HOSTS = "(rest of these hosts)"  # under a filter: what the filtered jobs did not use
J_PER_KWH = 3.6e6


@dataclass
class TeamRow:
    """One team's share of the window."""

    team: str
    energy_j: float
    idle_j: float = 0.0  # the part of energy_j that is idle power shared by the idle policy
    jobs: int = 0
    work: dict[str, float] = field(default_factory=dict)
    kg_co2: float | None = None
    cost: float = 0.0
    share: float = 0.0  # of the fleet's GPU + CPU energy

    @property
    def per(self) -> dict[str, float]:
        """Work ÷ the team's GPU + CPU energy, by unit (analytics.per)."""
        return per_by_unit(self.work, self.energy_j)

    def to_dict(self, currency: str = "") -> dict[str, Any]:
        unit = primary_unit(self.work)
        return {"team": self.team, "energy_j": self.energy_j, "kwh": self.energy_j / J_PER_KWH,
                "idle_j": self.idle_j, "share": self.share, "jobs": self.jobs,
                "work": dict(self.work), "per_unit": unit, "per": self.per,
                "kg_co2": self.kg_co2, "cost": self.cost, "currency": currency}


def _owner_of(ctx: Context, by: str, job: str, host: str) -> str:
    if job == UNATTRIBUTED:
        return UNATTRIBUTED_TEAM
    owners = ctx.job_teams if by == "team" else ctx.job_namespaces
    return owners.get((job, host)) or (NO_TEAM if by == "team" else NO_NAMESPACE)


def team_rows(ctx: Context, *, filtered: bool = False, by: str = "team") -> list[TeamRow]:
    """Per team (or Kubernetes namespace, ``by="namespace"``), largest first, then the rows no
    team claims; they sum to the GPU + CPU energy of ``ctx`` (the whole fleet, or the filtered
    part with ``filtered``: then what its jobs did not use on their hosts is one row,
    ``(rest of these hosts)``)."""
    if by not in ("team", "namespace"):
        raise ValueError(f"by: expected team or namespace, got {by!r}")
    rows: dict[str, TeamRow] = {}
    by_hour: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    jobs: dict[str, set[str]] = defaultdict(set)
    claimed_by_hour: dict[int, float] = defaultdict(float)
    for b in ctx.jobs:
        team = _owner_of(ctx, by, b.job, b.host)
        row = rows.setdefault(team, TeamRow(team, 0.0))
        row.energy_j += b.energy_j
        for unit, w in b.work.items():
            if w:
                row.work[unit] = row.work.get(unit, 0.0) + w
        if b.job != UNATTRIBUTED:
            jobs[team].add(b.job)
        by_hour[team][hour_of(b.time_ns)] += b.energy_j
        claimed_by_hour[hour_of(b.time_ns)] += b.energy_j
    for job, host in {(b.job, b.host) for b in ctx.jobs}:
        rows[_owner_of(ctx, by, job, host)].idle_j += ctx.job_idle.get((job, host), 0.0)
    rest = REST_OF_HOSTS if filtered else UNATTRIBUTED_TEAM
    for hour, it_j in ctx.it_by_hour.items():
        left = it_j - claimed_by_hour.get(hour, 0.0)
        if abs(left) > 1e-9 * max(it_j, 1.0):
            row = rows.setdefault(rest, TeamRow(rest, 0.0))
            row.energy_j += left
            by_hour[rest][hour] += left
    fleet_j = sum(ctx.it_by_hour.values())
    for team, row in rows.items():
        row.jobs = len(jobs.get(team, ()))
        row.share = row.energy_j / fleet_j if fleet_j > 0 else 0.0
        grid = _grid_by_hour(ctx, by_hour[team])
        row.kg_co2 = carbon.emissions(grid, ctx.carbon).kg_co2
        row.cost = energy_cost(grid, ctx.settings.tariff)
    unclaimed = (NO_TEAM, NO_NAMESPACE, UNATTRIBUTED_TEAM, REST_OF_HOSTS)
    return sorted(rows.values(), key=lambda r: (r.team in unclaimed, -r.energy_j, r.team))


def _grid_by_hour(ctx: Context, it_by_hour: dict[int, float]) -> dict[int, float]:
    """A row's grid energy per hour: its IT energy × the fleet's grid ÷ IT energy that hour."""
    out: dict[int, float] = {}
    for hour, e in it_by_hour.items():
        it = ctx.it_by_hour.get(hour, 0.0)
        ratio = ctx.grid_by_hour.get(hour, it) / it if it > 0 else 1.0
        out[hour] = e * ratio
    return out


def idle_policy_summary(ctx: Context) -> dict[str, Any]:
    """Which idle policy the job points were attributed under (collector.idle), and how much idle
    energy each shared: the report names it. ``policies`` empty: no agent-attributed job points."""
    policies = {p: {"energy_j": e, "idle_j": i} for p, (e, i) in sorted(ctx.idle_policies.items())}
    names = sorted(policies)
    text = (f"idle power shared by {names[0]}" if len(names) == 1 else
            f"idle power shared by several policies in this window: {', '.join(names)}" if names else
            "no agent-attributed job points in this window: no idle policy applied")
    return {"policies": policies, "text": text}


CSV_COLUMNS = ("team", "energy_kwh", "share_pct", "idle_kwh", "jobs", "per", "per_unit", "kg_co2",
               "cost", "currency")


def to_csv(rows: Sequence[TeamRow], currency: str) -> str:
    """The chargeback CSV: one line per row of :func:`team_rows`, the same figures."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        unit = primary_unit(r.work)
        w.writerow([r.team, f"{r.energy_j / J_PER_KWH:.6g}", f"{100 * r.share:.4g}",
                    f"{r.idle_j / J_PER_KWH:.6g}", r.jobs,
                    f"{r.per[unit]:.6g}" if unit and unit in r.per else "", unit or "",
                    "" if r.kg_co2 is None else f"{r.kg_co2:.6g}", f"{r.cost:.6g}", currency])
    return out.getvalue()
