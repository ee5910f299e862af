"""What the power-cap autopilot did: its timeline of limit changes and the energy it saved.

One definition for the report (``wattlens report``) and the dashboard's autopilot card. The agent
writes ``autopilot`` points (collector/autopilot_agent.py): each change with the measurements that
justified it (``event=change``: throughput, power and PER at the limit it left, and at the original
limit), the limit it settled on (``event=settled``, measured there), and per group and window the
GPU energy, the work and the energy saved against the original limit (``event=window``:
work x J per unit of work measured at the original limit - energy used).

- a change's *before* is what was measured at the limit it left; its *after* is what was measured
  at the new limit, by the group's next event (the next change, or the settle);
- ``saved_pct`` = saved / (used + saved): the share of the energy the original limit would have used.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from analytics import queries, units
from analytics.levels import job_totals
from analytics.per import primary_unit
from analytics.timeutil import Window, fmt_time
from collector.store.base import Store

if TYPE_CHECKING:
    from analytics.context import Context
    from analytics.filters import Filter


@dataclass(frozen=True)
class Measured:
    throughput: float | None  # work per second (the job's own unit)
    power_w: float | None
    per: float | None  # work per joule


@dataclass(frozen=True)
class CapStep:
    """One limit change of one group."""

    time_ns: int
    host: str
    job: str
    reason: str  # explore | settle | rollback | phase
    previous_w: float | None
    cap_w: float | None
    original_w: float | None
    gpus: int
    slowdown_pct: float | None  # measured at previous_w, against the original limit
    before: Measured
    after: Measured | None
    baseline: Measured


@dataclass(frozen=True)
class GroupSaving:
    host: str
    job: str
    original_w: float | None
    cap_w: float | None  # the latest limit the autopilot set or settled on
    seconds: float
    energy_j: float
    saved_j: float

    @property
    def saved_pct(self) -> float | None:
        total = self.energy_j + self.saved_j
        return 100 * self.saved_j / total if total > 0 else None


def _measured(f: dict[str, float | None], prefix: str = "") -> Measured:
    return Measured(f.get(f"{prefix}throughput"), f.get(f"{prefix}power_w"), f.get(f"{prefix}per"))


def timeline(events: list[tuple[int, dict[str, str], dict[str, float | None]]]) -> list[CapStep]:
    """The changes, each with what was measured before and after it (pure)."""
    out = []
    for i, (t, tags, f) in enumerate(events):
        if tags.get("event") != "change":
            continue
        key = (tags.get("host"), tags.get("job"))
        after = None
        for _t2, tags2, f2 in events[i + 1:]:
            if (tags2.get("host"), tags2.get("job")) != key:
                continue
            if (tags2.get("event") == "change" and f2.get("previous_w") == f.get("cap_w")) or (
                    tags2.get("event") == "settled" and f2.get("cap_w") == f.get("cap_w")):
                after = _measured(f2)
            break
        out.append(CapStep(t, tags.get("host", ""), tags.get("job", ""), tags.get("reason", ""),
                           f.get("previous_w"), f.get("cap_w"), f.get("original_w"),
                           int(f.get("gpus") or 0), f.get("slowdown_pct"), _measured(f), after,
                           _measured(f, "baseline_")))
    return out


def filter_groups(ctx: Context, flt: Filter) -> set[tuple[str, str]] | None:
    """The (host, job) groups a GPU-model or team filter keeps: those of the jobs the filtered
    Context holds (analytics.filters, the same filter as every other figure); None when neither
    is set (node and job are matched on the autopilot points' own tags)."""
    if not (flt.model or flt.team):
        return None
    return {(j.host, j.job) for j in ctx.jobs}


def summary(store: Store, window: Window, node: str = "", job: str = "",
            groups: Collection[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The autopilot's timeline and savings in the window (empty lists when it never ran), of one
    node and/or job when given, and of the (host, job) ``groups`` a model or team filter keeps
    (:func:`filter_groups`): the report's and dashboard's filters."""
    def keep(host: str | None, name: str | None) -> bool:
        return ((not node or host == node) and (not job or name == job)
                and (groups is None or (host, name) in groups))

    events = [e for e in queries.autopilot_events(store, window)
              if keep(e[1].get("host"), e[1].get("job"))]
    steps = timeline(events)
    # The unit the agent measures a group's throughput in (collector.autopilot_groups picks it
    # by the same rule): the job's primary unit, as everywhere else in the report.
    units = ({name: primary_unit(j.work) for name, j in job_totals(store, window).items()}
             if events else {})
    latest: dict[tuple[str, str], float | None] = {}
    for _t, tags, f in events:
        latest[(tags.get("host", ""), tags.get("job", ""))] = f.get("cap_w")
    saving = [GroupSaving(h, j, v.get("max_original_w"), latest.get((h, j), v.get("min_cap_w")),
                          v.get("sum_seconds") or 0.0, v.get("sum_energy_j") or 0.0,
                          v.get("sum_saved_j") or 0.0)
              for (h, j), v in sorted(queries.autopilot_windows(store, window).items()) if keep(h, j)]
    used = sum(g.energy_j for g in saving)
    saved = sum(g.saved_j for g in saving)
    return {
        "timeline": [{**asdict(s), "time": fmt_time(s.time_ns), "unit": units.get(s.job)}
                     for s in steps],
        "groups": [{**asdict(g), "saved_pct": g.saved_pct} for g in saving],
        "energy_j": used, "saved_j": saved,
        "saved_pct": 100 * saved / (used + saved) if used + saved > 0 else None,
    }


def table_rows(data: dict[str, Any], max_rows: int = 20) -> tuple[list[str], list[list[str]],
                                                                   list[str], list[list[str]]]:
    """(headers, rows) of the timeline and of the per-group savings, as text for report and dashboard.

    Throughput and PER carry the job's work unit (tokens/s, tokens/J, ...); a slowdown is a signed
    change (±0.0%, never -0.0)."""
    from analytics.report import pct1, signed_pct, work_rate  # the report's formats

    def m(x: dict[str, Any] | None, unit: str | None) -> str:
        if not x or x.get("throughput") is None:
            return "–"
        return (f"{work_rate(x['throughput'], unit, 's')}, {x['power_w']:.0f} W, "
                f"PER {work_rate(x.get('per'), unit)}")

    steps = [[s["time"], f"{s['host']} {s['job']}", s["reason"],
              f"{s['previous_w']:.0f} → {s['cap_w']:.0f} W", signed_pct(s["slowdown_pct"]),
              m(s["before"], s.get("unit")), m(s["after"], s.get("unit"))]
             for s in data["timeline"][-max_rows:]]
    groups = [[f"{g['host']} {g['job']}",
               f"{g['original_w']:.0f} W" if g["original_w"] is not None else "–",
               f"{g['cap_w']:.0f} W" if g["cap_w"] is not None else "–",
               units.energy(g["energy_j"]), units.energy(g["saved_j"]),
               pct1(g["saved_pct"])]
              for g in data["groups"]]
    return (["time", "group", "why", "limit", "slowdown", "before", "after"], steps,
            ["group", "original", "now", "used", "saved vs original", "saved %"], groups)
