"""GPU health page (/gpus): temperature, clocks, memory use, power against the limit and throttling per
GPU over time, with the node's PER beside them so a throttled, hot or over-capped GPU stands out."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, html

from dashboard import components, health_figures, views
from dashboard.pages import Deps, anchor

CHARTS = ("temp_c", "sm_clock_mhz", "power_pct", "mem_util_pct", "mem_clock_mhz", "throttle_pct")
CHART_TITLES = {
    "temp_c": "Temperature", "sm_clock_mhz": "SM clock", "power_pct": "Power against the limit",
    "mem_util_pct": "Memory use", "mem_clock_mhz": "Memory clock", "throttle_pct": "Throttle reasons",
}
CHART_NOTES = {
    "temp_c": "bucket means; dotted: 83 °C, near where data-centre GPUs slow down",
    "sm_clock_mhz": "bucket means", "power_pct": "mean power ÷ power limit; dotted: the cap",
    "mem_util_pct": "memory controller busy, %", "mem_clock_mhz": "bucket means",
    "throttle_pct": "share of samples with a power or thermal clock-event reason (NVML)",
}


def layout() -> list[Any]:
    return [
        anchor("gpus"),
        html.Div(id="gpus-window", className="wl-range-line"),
        components.section(
            "GPUs at a glance", html.Div(id="gpus-summary", className="wl-summary"),
            components.HEALTH_TABLE,
            note="means over the range, peak: the hottest sample; node PER = work of the node's "
                 "jobs ÷ their energy; flagged GPUs first", id="card-gpus-table"),
        html.Div(className="wl-grid-2", children=[
            components.section(CHART_TITLES[f], components.graph(f"gpus-{f}"), note=CHART_NOTES[f],
                               id=f"card-gpus-{f}") for f in CHARTS]),
    ]


def register(app: Dash, deps: Deps) -> None:
    store = deps.store

    @app.callback(Output("health-table", "data"), Output("gpus-summary", "children"),
                  Output("gpus-window", "children"),
                  *(Output(f"gpus-{f}", "figure") for f in CHARTS),
                  Input("page-gpus", "title"), Input("range", "value"), Input("tick", "n_intervals"),
                  Input("filter-node", "value"), Input("filter-model", "value"),
                  Input("filter-job", "value"), Input("filter-team", "value"))
    def update(_page: str, range_key: str, _n: int | None, node: str | None, model: str | None,
               job: str | None, team: str | None) -> tuple[Any, ...]:
        window = views.window_for(store, range_key)
        v = views.health_view(store, window, node or "", model or "", job or "", team or "")
        rows = views.health_rows(v)
        flagged = sum(1 for r in rows if r["n_flags"])
        summary = (f"{len(rows)} GPUs · {flagged} flagged" if rows else
                   "No GPU matches these filters in this range.")
        if len(rows) > health_figures.MAX_LINES:
            summary += (f" · the charts draw the table's first {health_figures.MAX_LINES} "
                        f"(flagged first) and the mean of all {len(rows)}")
        figs = []
        order = [r["gpu"] for r in rows]  # the table's: flagged first
        for f in CHARTS:
            fig = health_figures.health_lines(v.times_ns, v.series, f, order=order,
                                              mean=(v.mean_times_ns, v.mean_series), total=len(rows))
            fig.update_layout(uirevision=f"{range_key}/{node}/{model}/{job}/{team}")
            figs.append(fig)
        return (rows, summary, components.window_caption(window, "gpus-window-text", "covers: "),
                *figs)
