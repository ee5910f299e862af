"""GPU health charts: one line per GPU over time for a health field (data in, go.Figure out); past
:data:`MAX_LINES` GPUs, the first ones in the table's order and the mean of all of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from dashboard.figures import PALETTE, base_layout, empty, iso

# field -> (axis title with unit, reference line or None)
HEALTH_CHARTS: dict[str, tuple[str, float | None]] = {
    "temp_c": ("temperature (°C)", 83.0),
    "sm_clock_mhz": ("SM clock (MHz)", None),
    "power_pct": ("power, % of the limit", 100.0),
    "mem_util_pct": ("memory utilisation (%)", None),
    "mem_clock_mhz": ("memory clock (MHz)", None),
    "throttle_pct": ("throttled (% of the time)", None),
}

EMPTY = {"throttle_pct": "No throttle reasons stored (NVML agents record them)"}
# Lines a chart draws one GPU each: 1,000 lines (a fleet) are neither readable nor light (six
# charts of 1,000 traces took the page 22 s to send and draw).
MAX_LINES = 16
MEAN_NAME = "mean of all {n} GPUs"


def health_lines(times_ns: Mapping[str, Sequence[int]], series: Mapping[str, Mapping[str, Sequence[float | None]]],
                 field: str, *, height: int = 300, order: Sequence[str] | None = None,
                 mean: tuple[Sequence[int], Mapping[str, Sequence[float | None]]] | None = None,
                 total: int = 0) -> go.Figure:
    """One line per GPU for ``field``; a dotted reference (83 °C slowdown, 100 % of the cap) where
    one helps. Legend on the right, inside the card; the hover names the GPU. Past
    :data:`MAX_LINES` GPUs (``total`` of them), the first ones of ``order`` (the table's: flagged
    first) and a thick line, ``mean``: the mean of all of them per bucket (times, {field: values},
    as analytics.health gives it)."""
    y_title, ref = HEALTH_CHARTS[field]
    names = [n for n in (order or series) if n in series
             and any(v is not None for v in series[n].get(field, []))]
    if not names:
        return empty(EMPTY.get(field, "Nothing stored for these GPUs"), x_title="time (UTC)",
                     y_title=y_title, height=height)
    fig = go.Figure()
    for i, name in enumerate(names[:MAX_LINES]):
        fig.add_trace(go.Scatter(
            x=[iso(t) for t in times_ns[name]], y=list(series[name][field]), name=name, mode="lines",
            line={"width": 1.3, "color": PALETTE[i % len(PALETTE)]},
            hovertemplate=f"{name}<br>%{{x}}<br>%{{y:.1f}}<extra></extra>"))
    if mean is not None and total > MAX_LINES and any(v is not None for v in mean[1].get(field, [])):
        label = MEAN_NAME.format(n=total)
        fig.add_trace(go.Scatter(
            x=[iso(t) for t in mean[0]], y=list(mean[1][field]), name=label, mode="lines",
            line={"width": 3, "color": "#0f172a"},
            hovertemplate=f"{label}<br>%{{x}}<br>%{{y:.1f}}<extra></extra>"))
    if ref is not None:
        fig.add_hline(y=ref, line={"dash": "dot", "color": "#94a3b8", "width": 1})
    base_layout(fig, x_title="time (UTC)", y_title=y_title, height=height)
    fig.update_layout(legend={"orientation": "v", "x": 1.01, "y": 1, "xanchor": "left",
                              "yanchor": "top", "font": {"size": 11}},
                      margin={"l": 64, "r": 8, "t": 12, "b": 44})
    return fig


