"""The header: simulated or estimated data, freshness, alerts firing."""

from __future__ import annotations

from dataclasses import dataclass

from analytics import queries
from analytics.timeutil import NS, Window
from collector.store.base import Store
from dashboard.views.alerts import alert_lanes
from dashboard.views.common import (
    STALE_AFTER_S,
    data_end_ns,
    range_window,
)


@dataclass(frozen=True)
class Status:
    """What the header says about the data: simulated or estimated, how fresh, alerts firing."""

    simulated: bool
    estimated: bool
    newest_ns: int | None
    age_s: float | None
    firing: int

    @property
    def live(self) -> bool:
        return self.age_s is not None and self.age_s <= STALE_AFTER_S


def status(store: Store, range_key: str | None, now_ns: int) -> Status:
    end = data_end_ns(store)
    if end is None:
        return Status(False, False, None, None, 0)
    w = range_window(store, range_key, end)
    methods = queries.methods_seen(store, w, "gpu") | queries.methods_seen(store, w, "cpu")
    firing = sum(1 for a in alert_lanes(store, end) if a.firing)
    # jobs metered in-process carry their estimate on the job points, up to the newest one
    estimated = "estimated" in methods or queries.estimated_job_energy_j(store, Window(w.start_ns, end)) > 0
    return Status("simulated" in methods, estimated, end - 1,
                  max(0.0, (now_ns - end) / NS), firing)
