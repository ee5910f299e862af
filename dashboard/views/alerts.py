"""Alerts page view model: lanes of firing and resolved alerts from the `alert` measurement."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from analytics import queries
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


def alerts_view(store: Store, range_key: str) -> AlertsView:
    window = window_for(store, range_key)
    recorded = queries.has_data(store, "alert")
    lanes = alert_lanes(store, window.end_ns) if recorded else []
    shown = [a for a in lanes if a.firing or any(
        (end is None or end >= window.start_ns) for _s, end in a.spans)]
    spans = [AlertSpan(a.lane, a.severity, s, e) for a in shown for s, e in a.spans
             if e is None or e >= window.start_ns]
    return AlertsView(window, recorded, shown, spans)
