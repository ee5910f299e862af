"""Fleet page: KPI cards against yesterday, power stacked by node or model (patched live), GPU heatmap."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, Patch, State, ctx, dcc, html

from dashboard import components, figures, views
from dashboard.pages import Deps, anchor, view_filter

REDRAW_EVERY = 60  # refreshes between full redraws of the power chart (re-ranks the top groups)
BY_LABEL = {"host": "node", "model": "GPU model"}


def layout() -> list[Any]:
    return [
        anchor("fleet"),
        html.Div(id="fleet-window", className="wl-range-line"),
        html.Div(id="fleet-kpis", className="wl-kpis",
                 children=[html.Div(className="wl-kpi wl-kpi-loading") for _ in range(6)]),
        html.Div(className="wl-grid-main", children=[
            components.section(
                "Fleet GPU power", components.graph("fleet-power",
                                                    height=figures.POWER_CHART_HEIGHT),
                note="average power per time bucket, stacked; live",
                tools=dcc.RadioItems(id="fleet-by", options=[
                    {"label": "by node", "value": "host"},
                    {"label": "by GPU model", "value": "model"},
                ], value="host", inline=True, className="wl-radio", persistence=True,
                    persistence_type="session"),
                id="card-fleet-power"),
            components.section(
                "GPU heatmap", components.graph("fleet-heat"),
                note="mean over the time range (to the last settled five minutes) · one cell per GPU",
                tools=dcc.RadioItems(id="heat-metric", options=[
                    {"label": "utilisation", "value": "util_pct"},
                    {"label": "power", "value": "power_w"},
                    {"label": "power ÷ limit", "value": "power_pct"},
                ], value="util_pct", inline=True, className="wl-radio", persistence=True,
                    persistence_type="session"),
                id="card-fleet-heat"),
        ]),
        dcc.Store(id="fleet-power-state"),
    ]


def power_patch(update: views.PowerUpdate, names: list[str]) -> Patch:
    """The Patch that turns the browser's chart into the new one: drop, replace, append."""
    p = Patch()
    xs = [figures.iso(t) for t in update.times_ns]
    for i, name in enumerate(names):
        trace = p["data"][i]
        for _ in range(update.replace):
            del trace["x"][-1]
            del trace["y"][-1]
        for _ in range(update.drop):
            del trace["x"][0]
            del trace["y"][0]
        trace["x"].extend(xs)
        trace["y"].extend([None if v is None else v / 1000 for v in update.values[name]])
    return p


def register(app: Dash, deps: Deps) -> None:
    store = deps.store

    @app.callback(Output("fleet-kpis", "children"), Output("fleet-window", "children"),
                  Input("page-fleet", "title"), Input("range", "value"), Input("tick", "n_intervals"),
                  Input("view", "data"))
    def kpis(_page: str, range_key: str | None, _n: int | None,
             view: dict[str, Any] | None) -> tuple[list[Any], Any]:
        end = views.data_end_ns(store)
        if end is None:
            return [components.empty_state(
                "No data yet", "Start an agent (`wattlens collect --store …`) or run `wattlens demo`; "
                "this page fills in as soon as the first points arrive.", id="fleet-empty")], ""
        window = views.range_window(store, range_key, end)
        flt = view_filter(view)
        scope = f"{flt.text()}; " if flt.active else ""
        return (components.kpi_cards(views.fleet_kpis(store, range_key, end, deps.settings, flt)),
                components.window_caption(window, "fleet-window-text",
                                          f"cards cover {scope}to the last settled five minutes: "))

    @app.callback(Output("fleet-power", "figure"), Output("fleet-power-state", "data"),
                  Input("range", "value"), Input("fleet-by", "value"), Input("tick", "n_intervals"),
                  State("fleet-power-state", "data"), Input("view", "data"))
    def power(range_key: str, by: str, n: int | None, state: dict[str, Any] | None,
              view: dict[str, Any] | None) -> tuple[Any, Any]:
        by = by or "host"
        if (ctx.triggered_id == "tick" and state and state.get("range") == range_key
                and state.get("by") == by and (n or 0) % REDRAW_EVERY
                and views.custom_range(range_key) is None):  # an absolute range never slides
            update = views.fleet_power_update(store, range_key, state)
            if update is not None:
                return power_patch(update, list(state["names"])), update.state
        window = views.window_for(store, range_key)
        chart = views.fleet_power(store, window, by, where=_where(store, window, view))
        fig = figures.power_over_time(chart.series, stacked_by=BY_LABEL[by])
        fig.update_layout(uirevision=f"{range_key}/{by}/{sorted(chart.where.items())}")  # kept until these change
        return fig, chart.state(range_key)

    @app.callback(Output("fleet-heat", "figure"),
                  Input("range", "value"), Input("heat-metric", "value"), Input("tick", "n_intervals"),
                  Input("view", "data"))
    def heat(range_key: str, metric: str, _n: int | None, view: dict[str, Any] | None) -> Any:
        window = views.range_window(store, range_key)
        fig = figures.gpu_heatmap(views.gpu_heat(store, window, _where(store, window, view)),
                                  metric or "util_pct")
        fig.update_layout(uirevision=f"{range_key}/{metric}")
        return fig


def _where(store: Any, window: Any, view: dict[str, Any] | None) -> dict[str, Any]:
    """The store tags of the view's filter for the gpu measurement ({} for the whole fleet)."""
    flt = view_filter(view)
    return views.filter_wheres(store, window, flt)[0] if flt.active else {}
