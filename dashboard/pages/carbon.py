"""Carbon page: grid intensity measured and forecast, suggested low-carbon windows, emissions by job and node."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, html

from analytics import units
from dashboard import components, figures, views
from dashboard.pages import Deps, anchor


def layout() -> list[Any]:
    return [
        anchor("carbon"),
        html.Div(id="carbon-kpis", className="wl-kpis wl-kpis-4",
                 children=[html.Div(className="wl-kpi wl-kpi-loading") for _ in range(4)]),
        html.Div(className="wl-grid-main", children=[
            components.section("Grid carbon intensity", components.graph("carbon-intensity"),
                               note="measured (solid) and forecast for the next 24 h (dotted); "
                                    "the best 4 h window shaded blue", id="card-intensity"),
            components.section("Suggested low-carbon windows", html.Div(id="carbon-windows"),
                               note="for deferrable work, from the forecast", id="card-windows"),
        ]),
        html.Div(className="wl-grid-2", children=[
            components.section("Emissions by job", components.graph("carbon-jobs"),
                               note="job energy × hourly intensity × PUE", id="card-carbon-jobs"),
            components.section("Emissions by node", components.graph("carbon-nodes"),
                               note="GPU + CPU energy × hourly intensity × PUE",
                               id="card-carbon-nodes"),
        ]),
        components.section("Carbon per unit of work (SCI)", components.graph("carbon-sci"),
                           note="(E·I + M) / R per job: operational and embodied, g CO₂e per 1,000 "
                                "tokens or samples; see docs/carbon.md", id="card-carbon-sci"),
    ]


def _windows(v: views.CarbonView) -> Any:
    if not v.windows:
        return components.empty_state(
            "No forecast", v.message or "No grid intensity to forecast from: collect the `carbon` "
            "measurement, or start the dashboard with --carbon-csv or --country.", id="carbon-no-windows")
    items = []
    for w in v.windows:
        start, end = figures.iso(w["start_ns"]), figures.iso(w["end_ns"])
        items.append(html.Li(className="wl-window", children=[
            html.Div(f"Best {w['hours']} h", className="wl-window-h"),
            html.Div(f"{start[5:16]} → {end[11:16]} UTC", className="wl-window-t"),
            html.Div([units.intensity(w["mean_g_per_kwh"]), " · ",
                      html.Span(f"{units.signed_pct(w['vs_mean_pct'])} vs the next 24 h",
                                className="wl-delta-good")], className="wl-window-v"),
        ]))
    recs = [html.Li([html.Strong(r.title), html.Br(), r.detail]) for r in v.recs]
    extra: list[Any] = []
    if recs:
        extra = [html.H3("Deferrable work to move", className="wl-h3"), html.Ul(recs, className="wl-list")]
    elif v.deferrable:
        extra = [html.P(f"Deferrable jobs in range: {', '.join(v.deferrable[:6])}"
                        + (" …" if len(v.deferrable) > 6 else ""), className="wl-note")]
    return [html.Ul(items, className="wl-windows", id="carbon-window-list"), *extra]


def register(app: Dash, deps: Deps) -> None:
    store = deps.store

    @app.callback(Output("carbon-kpis", "children"), Output("carbon-intensity", "figure"),
                  Output("carbon-windows", "children"), Output("carbon-jobs", "figure"),
                  Output("carbon-nodes", "figure"), Output("carbon-sci", "figure"),
                  Input("page-carbon", "title"), Input("range", "value"), Input("tick", "n_intervals"),
                  State("lam", "data"), Input("view", "data"))
    def update(_page: str, range_key: str, _n: int | None, lam: float | None,
               view: dict[str, Any] | None) -> tuple[Any, ...]:
        if views.data_end_ns(store) is None:
            msg = "No data yet"
            return ([components.empty_state(msg, "Nothing has been collected.")], figures.empty(msg),
                    "", figures.empty(msg), figures.empty(msg), figures.empty(msg))
        v = views.carbon_view(deps.context(range_key, view), float(lam if lam is not None else 0.5))
        kpis = [
            views.Kpi("co2", "Emissions in range", units.mass_co2(v.total_g),
                      f"on {v.grid_basis}", None, None, ""),
            views.Kpi("intensity", "Mean intensity", units.intensity(v.mean_g_per_kwh),
                      "energy-weighted over the range", None, None, ""),
            views.Kpi("renewable", "Renewable share",
                      f"{v.renewable_pct:.0f} %" if v.renewable_pct is not None else units.DASH,
                      "of the energy used, energy-weighted", None, None, ""),
            views.Kpi("source", "Intensity source", (v.source or "none").split(" (")[0],
                      v.source or (v.message or ""), None, None, ""),
        ]
        cards = components.kpi_cards(kpis)
        for card in cards:  # these compare nothing: drop the empty change line
            card.children = [c for c in card.children if "wl-delta" not in str(getattr(c, "className", ""))]
        return (cards, figures.carbon_intensity(v.hist, v.forecast, v.shade, v.window.end_ns),
                _windows(v), figures.emissions_bar(v.by_job, what="job"),
                figures.emissions_bar(v.by_node, what="node"), figures.sci_bars(v.sci.get("jobs", [])))
