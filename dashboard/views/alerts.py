"""Alerts page view model: lanes of firing and resolved alerts from the `alert` measurement."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from analytics import queries
from analytics.alerts.conditions import gpu_target
from analytics.context import Context
from analytics.filters import Filter
from analytics.timeutil import NS, Window
from collector.store.base import Store
from dashboard.figures import AlertSpan
from dashboard.views.common import (
    window_for,
)

ALERT_LOOKBACK_S = 30 * 86400  # how far back to look for the transition that set an alert's state


@dataclass(frozen=True)
class AlertLane:
    """One alert (rule, severity, target): its state now and its firing periods."""

    rule: str
    severity: str
    target: str
    firing: bool
    since_ns: int
    value: float | None
    spans: tuple[tuple[int, int | None], ...]

    @property
    def lane(self) -> str:
        return f"{self.rule} · {self.target}"


def alert_lanes(store: Store, end_ns: int) -> list[AlertLane]:
    """Every alert with a transition in the lookback, firing ones first, newest first."""
    if not queries.has_data(store, "alert"):
        return []
    events = queries.alert_events(store, Window(end_ns - ALERT_LOOKBACK_S * NS, end_ns))
    by_lane: dict[tuple[str, str, str], list[queries.AlertEvent]] = defaultdict(list)
    for e in events:
        by_lane[(e.rule, e.severity, e.target)].append(e)
    lanes = []
    for (rule, sev, target), evs in by_lane.items():
        spans: list[tuple[int, int | None]] = []
        start: int | None = None
        for e in evs:
            if e.state == 1 and start is None:
                start = e.time_ns
            elif e.state == 0 and start is not None:
                spans.append((start, e.time_ns))
                start = None
        if start is not None:
            spans.append((start, None))
        last = evs[-1]
        lanes.append(AlertLane(rule, sev, target, last.state == 1, last.time_ns, last.value,
                               tuple(spans)))
    return sorted(lanes, key=lambda a: (not a.firing, -a.since_ns, a.rule, a.target))


@dataclass
class AlertsView:
    """The Alerts page: whether alerting ever wrote to this store, lanes and timeline spans."""

    window: Window
    recorded: bool
    lanes: list[AlertLane]
    spans: list[AlertSpan]


def alert_scope(ctx: Context, flt: Filter) -> Callable[[str], bool]:
    """Whether an alert's target lies in the part of the fleet a filter keeps (``ctx`` is the
    Context narrowed by analytics.filters): a job it keeps, a host it keeps, or a GPU it keeps (any
    GPU of a kept host unless a GPU model is picked). A fleet-wide target (``fleet``) belongs to no
    part, so a filter hides it."""
    jobs = {j.job for j in ctx.jobs}
    hosts = {g.host for g in ctx.gpus} | {j.host for j in ctx.jobs}
    if flt.node and not flt.model:
        hosts.add(flt.node)  # a node that fell silent (an absence alert) has no data to keep
    gpus = {gpu_target(g.host, g.gpu) for g in ctx.gpus}

    def keep(target: str) -> bool:
        host, slash, _gpu = target.partition("/")
        if target in jobs:
            return True
        if slash:
            return target in gpus or (not flt.model and host in hosts)
        return target in hosts
    return keep


def alerts_view(store: Store, range_key: str, keep: Callable[[str], bool] | None = None) -> AlertsView:
    """The Alerts page over the range; ``keep`` (:func:`alert_scope`) narrows it to a filter's
    targets."""
    window = window_for(store, range_key)
    recorded = queries.has_data(store, "alert")
    lanes = alert_lanes(store, window.end_ns) if recorded else []
    if keep is not None:
        lanes = [a for a in lanes if keep(a.target)]
    shown = [a for a in lanes if a.firing or any(
        (end is None or end >= window.start_ns) for _s, end in a.spans)]
    spans = [AlertSpan(a.lane, a.severity, s, e) for a in shown for s, e in a.spans
             if e is None or e >= window.start_ns]
    return AlertsView(window, recorded, shown, spans)
