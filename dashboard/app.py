"""The Dash app: layout from component builders, one thin callback that refreshes the page."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, dcc, html

from collector.store.base import Store
from dashboard import components, figures, views


def create_app(store: Store, *, refresh_s: float = 10.0) -> dash.Dash:
    """Build the dashboard over ``store`` (any wattlens store)."""
    app = dash.Dash(__name__, title="wattlens", update_title="",
                    suppress_callback_exceptions=True)
    app.layout = html.Div(className="wl-app", children=[
        components.header(),
        html.Div(id="banners"),
        html.Main(className="wl-main", children=[
            html.Div(id="kpis", className="wl-kpis"),
            components.section(
                "Fleet GPU power",
                dcc.RadioItems(id="power-by", options=[
                    {"label": "by node", "value": "host"},
                    {"label": "by GPU model", "value": "model"},
                ], value="host", inline=True, className="wl-radio"),
                dcc.Loading(dcc.Graph(id="fleet-power", config={"displaylogo": False})),
                note="average power per time bucket, stacked",
            ),
            components.section("Jobs", components.job_table(),
                               note="energy, work and PER (work per GPU joule) in the range"),
        ]),
        dcc.Interval(id="refresh", interval=int(refresh_s * 1000)),
    ])

    @app.callback(
        Output("fleet-power", "figure"),
        Output("kpis", "children"),
        Output("jobs", "data"),
        Output("banners", "children"),
        Input("range", "value"),
        Input("power-by", "value"),
        Input("refresh", "n_intervals"),
    )
    def refresh(range_key: str, by: str, _n: int | None) -> tuple[Any, ...]:
        view = views.fleet_view(store, range_key or "24h", by or "host")
        label = "node" if by == "host" else "GPU model"
        return (figures.power_over_time(view.power, stacked_by=label),
                components.kpi_cards(view.kpis), view.jobs,
                components.banner(view.simulated, view.estimated))

    return app
