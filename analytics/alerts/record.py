"""The one place analytics writes to a store: the alert engine's transitions, as `alert` points.

Each point is one alert (rule x target) turning firing (state 1) or resolved (state 0) at an
evaluation time, tagged rule, severity and target, with the value that decided it.
``analytics.queries.alert_events`` reads them back (the dashboard's Alerts page).
"""

from __future__ import annotations

from collections.abc import Sequence

from collector.schema import Point, point
from collector.store.base import Store


def alert_point(rule: str, severity: str, target: str, firing: bool, value: float | None,
                time_ns: int) -> Point:
    """One transition as a point of the `alert` measurement."""
    return point("alert", {"rule": rule, "severity": severity, "target": target},
                 {"state": 1.0 if firing else 0.0, "value": value}, time_ns)


def record(store: Store, points: Sequence[Point]) -> None:
    """Write alert points; raises what the store raises (the caller decides what a failure means)."""
    if points:
        store.write(points)
