"""Alerts page: firing and resolved alerts from the store's `alert` measurement, and their timeline."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, html

from analytics import units
from dashboard import components, figures, views
from dashboard.pages import Deps, anchor, view_filter


def layout() -> list[Any]:
    return [
        anchor("alerts"),
        html.Div(id="alerts-summary", className="wl-kpis wl-kpis-4",
                 children=[html.Div(className="wl-kpi wl-kpi-loading") for _ in range(2)]),
        components.section("Alerts", html.Div(id="alerts-body"),
                           html.Div(components.ALERTS_TABLE, id="alerts-table-box"),
                           note="from the `alert` measurement that `wattlens alerts run` writes",
                           id="card-alerts"),
        components.section("Timeline", components.graph("alerts-timeline"),
                           note="firing periods in the range; red while still firing",
                           id="card-alert-timeline"),
    ]


def _rows(v: views.AlertsView) -> list[dict[str, Any]]:
    out = []
    end = v.window.end_ns
    for a in v.lanes:
        start = a.spans[-1][0] if a.spans else a.since_ns
        out.append({"state": "FIRING" if a.firing else "resolved", "severity": a.severity,
                    "rule": a.rule, "target": a.target,
                    "since": figures.iso(a.since_ns if not a.firing else start)[:16],
                    "for": units.duration(((end if a.firing else a.since_ns) - start) / 1e9),
                    "value": None if a.value is None else round(a.value, 3)})
    return out


def register(app: Dash, deps: Deps) -> None:
    store = deps.store

    @app.callback(Output("alerts-summary", "children"), Output("alerts-body", "children"),
                  Output("alerts-table", "data"), Output("alerts-table-box", "style"),
                  Output("alerts-timeline", "figure"),
                  Input("page-alerts", "title"), Input("range", "value"), Input("tick", "n_intervals"),
                  Input("view", "data"))
    def update(_page: str, range_key: str, _n: int | None,
               view: dict[str, Any] | None) -> tuple[Any, ...]:
        flt = view_filter(view)
        keep = views.alert_scope(deps.context(range_key, view), flt) if flt.active else None
        v = views.alerts_view(store, range_key, keep)
        firing = sum(1 for a in v.lanes if a.firing)
        ended = sum(1 for sp in v.spans if sp.end_ns is not None)  # the timeline's closed bars
        of = f" · {flt.text()}" if flt.active else ""
        kpis = components.kpi_cards([
            views.Kpi("alerts-firing", "Firing now", str(firing), f"alerts in state firing{of}", None,
                      None, ""),
            views.Kpi("alerts-resolved", "Resolved in range", str(len(v.lanes) - firing),
                      f"alerts clear now · {ended} firing period{'' if ended == 1 else 's'} "
                      f"ended{of}", None, None, ""),
        ])
        for card in kpis:
            card.children = [c for c in card.children if "wl-delta" not in str(getattr(c, "className", ""))]
        table_style: dict[str, str] = {}
        if not v.recorded:
            body: Any = components.empty_state(
                "No alert has been recorded in this store",
                ["Alerting writes every firing and resolved transition to the ", html.Code("alert"),
                 " measurement. Start it with ", html.Code("wattlens alerts run --rules RULES.toml "
                                                            "--store URL"),
                 " (see docs/alerting.md); alerts appear here as they fire."], id="alerts-empty")
            table_style = {"display": "none"}
        elif not v.lanes:
            body = components.empty_state(
                "All quiet", "No alert fired or was firing in this range"
                + (f" for {flt.text()}." if flt.active else "."), id="alerts-quiet")
            table_style = {"display": "none"}
        else:
            body = None
        return (kpis, body, _rows(v), table_style,
                figures.alert_timeline(v.spans, v.window.start_ns, v.window.end_ns))
