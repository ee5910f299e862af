"""Figure builders: data in, go.Figure out. No Dash import, so they are unit-tested without a browser."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import plotly.graph_objects as go

from analytics.queries import Series

MAX_POINTS_PER_TRACE = 5000
TEMPLATE = "plotly_white"
PALETTE = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
           "#65a30d", "#ea580c", "#4b5563")


def _times(times_ns: Sequence[int]) -> list[datetime]:
    return [datetime.fromtimestamp(t / 1e9, tz=UTC) for t in times_ns]


def _downsample(xs: list[int], ys: list[float], limit: int) -> tuple[list[int], list[float]]:
    """Keep a trace within the point budget by averaging neighbours (the store already aggregates)."""
    if len(xs) <= limit:
        return xs, ys
    step = -(-len(xs) // limit)
    out_x = [xs[i] for i in range(0, len(xs), step)]
    out_y = [sum(ys[i:i + step]) / len(ys[i:i + step]) for i in range(0, len(ys), step)]
    return out_x, out_y


def power_over_time(series: Sequence[Series], *, stacked_by: str, title: str = "") -> go.Figure:
    """Stacked area of average power (kW) per group over time."""
    fig = go.Figure()
    for i, s in enumerate(series):
        xs, ys = _downsample(list(s.times_ns), list(s.values), MAX_POINTS_PER_TRACE)
        fig.add_trace(go.Scatter(
            x=_times(xs), y=[v / 1000 for v in ys], name=s.name, mode="lines",
            stackgroup="power", line={"width": 0.5, "color": PALETTE[i % len(PALETTE)]},
            hovertemplate=f"{s.name}<br>%{{x|%H:%M}} UTC<br>%{{y:.2f}} kW<extra></extra>",
        ))
    fig.update_layout(
        template=TEMPLATE, title=title or None, margin={"l": 60, "r": 20, "t": 30, "b": 40},
        legend={"title": {"text": stacked_by}, "orientation": "h", "y": -0.2},
        yaxis={"title": {"text": "GPU power (kW)"}, "rangemode": "tozero"},
        xaxis={"title": {"text": "time (UTC)"}}, hovermode="x unified", height=380,
    )
    if not series:
        fig.add_annotation(text="No GPU data in this time range", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 16})
    return fig
