"""The Autopilot page's view model: analytics.autopilot's summary of the range (the report's figures)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from analytics import autopilot, queries
from analytics.timeutil import Window
from collector.store.base import Store
from dashboard.views.common import range_window


def autopilot_view(store: Store, range_key: str | None, node: str = "", job: str = "",
                   groups: Collection[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The timeline of limit changes and the savings in the range (of the node/job filter and the
    (host, job) groups a model or team filter keeps, analytics.autopilot.filter_groups), plus its
    window: the range to the last settled five minutes, as every analysis page."""
    window = range_window(store, range_key)
    data = autopilot.summary(store, window, node, job, groups)
    data["window"] = (window.start_ns, window.end_ns)
    data["pending_ns"] = None
    if not data["groups"] and not data["timeline"]:
        data["pending_ns"] = newest_unsettled_point(store, window, node, job, groups)
    return data


def newest_unsettled_point(store: Store, window: Window, node: str = "", job: str = "",
                           groups: Collection[tuple[str, str]] | None = None) -> int | None:
    """The autopilot's newest point, when it is after ``window`` (in the five minutes not settled
    yet) and of a group the filter keeps; else None. An autopilot that just started is running,
    not absent."""
    newest = queries.newest_time_ns(store, ("autopilot",))
    if newest is None or newest < window.end_ns:
        return None
    after = Window(window.end_ns, newest + 1)
    seen = {(t.get("host", ""), t.get("job", "")) for _time, t, _v in
            queries.autopilot_events(store, after)} | set(queries.autopilot_windows(store, after))
    kept = [(h, j) for h, j in seen if (not node or h == node) and (not job or j == job)
            and (groups is None or (h, j) in groups)]
    return newest if kept else None
