"""The Autopilot page's view model: analytics.autopilot's summary of the range (the report's figures)."""

from __future__ import annotations

from typing import Any

from analytics import autopilot
from collector.store.base import Store
from dashboard.views.common import window_for


def autopilot_view(store: Store, range_key: str | None, node: str = "",
                   job: str = "") -> dict[str, Any]:
    """The timeline of limit changes and the savings in the range (of the node/job filter), plus
    its window."""
    window = window_for(store, range_key)
    data = autopilot.summary(store, window, node, job)
    data["window"] = (window.start_ns, window.end_ns)
    return data
