"""Reads for the power-cap autopilot (analytics/autopilot.py): its change, settled and window events."""

from __future__ import annotations

from analytics.timeutil import Window
from collector.store.base import AggregateQuery, Store

AUTOPILOT_EVENT_FIELDS = ("cap_w", "previous_w", "original_w", "gpus", "slowdown_pct", "throughput",
                          "power_w", "per", "baseline_throughput", "baseline_power_w", "baseline_per")


def autopilot_events(store: Store, window: Window) -> list[tuple[int, dict[str, str], dict[str, float | None]]]:
    """(time ns, tags, fields) of every autopilot change and settled event (one-second buckets:
    a group changes at most once per interval)."""
    rows = store.query(AggregateQuery(
        "autopilot", tuple(("max", f) for f in AUTOPILOT_EVENT_FIELDS), window.start_ns,
        window.end_ns, group_by=("host", "job", "event", "reason"), bucket_s=1,
        where={"event": ("change", "settled")}))
    return sorted(((r.time_ns, dict(r.tags), {f: r.values.get(f"max_{f}") for f in AUTOPILOT_EVENT_FIELDS})
                   for r in rows if r.time_ns is not None), key=lambda e: (e[0], sorted(e[1].items())))


def autopilot_windows(store: Store, window: Window) -> dict[tuple[str, str], dict[str, float | None]]:
    """Per (host, job): the autopilot's summed window energy, work, seconds and energy saved."""
    rows = store.query(AggregateQuery(
        "autopilot", (("sum", "energy_j"), ("sum", "saved_j"), ("sum", "work"), ("sum", "seconds"),
                      ("max", "original_w"), ("min", "cap_w")), window.start_ns, window.end_ns,
        group_by=("host", "job"), where={"event": "window"}))
    return {(r.tags.get("host", ""), r.tags.get("job", "")): dict(r.values) for r in rows}
