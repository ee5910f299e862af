"""The Autopilot page's view model: analytics.autopilot's summary of the range (the report's figures)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from analytics import autopilot
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
    return data
