"""Autopilot page: each opted-in group's power limit over time, every change with throughput, power
and PER before and after it, and the energy saved against the original limits (analytics.autopilot,
the same figures as `wattlens report`)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, html

from analytics import units
from analytics.autopilot import filter_groups, table_rows
from analytics.report import pct1
from dashboard import components, figures, views
from dashboard.pages import Deps, anchor, view_filter
from dashboard.views.autopilot import autopilot_view

# The report's rows as text, in tables built once at import (components.text_table: CSV export).
CHANGE_HEADERS, _, GROUP_HEADERS, _ = table_rows({"timeline": [], "groups": []})
CHANGES_TABLE = components.text_table("autopilot-changes-table", CHANGE_HEADERS,
                                      wrap=("before", "after"))
GROUPS_TABLE = components.text_table("autopilot-groups-table", GROUP_HEADERS)
SHOWN: dict[str, str] = {}
HIDDEN = {"display": "none"}


def layout() -> list[Any]:
    return [
        anchor("autopilot"),
        html.Div(id="autopilot-summary", className="wl-kpis wl-kpis-4",
                 children=[html.Div(className="wl-kpi wl-kpi-loading") for _ in range(3)]),
        components.section("Power limit per group", components.graph("autopilot-timeline"),
                           note="limits the autopilot set (`wattlens collect --autopilot`); dashed: "
                                "the original limit", id="card-autopilot-timeline"),
        components.section("Savings per group", html.Div(id="autopilot-groups"),
                           html.Div(GROUPS_TABLE, id="autopilot-groups-box"),
                           note="energy saved = work × J per unit of work measured at the original "
                                "limit − energy used", id="card-autopilot-groups"),
        components.section("Changes", html.Div(CHANGES_TABLE, id="autopilot-changes-box"),
                           note="before: measured at the limit it left; after: at the new limit",
                           id="card-autopilot-changes"),
    ]


def cap_figure(data: dict[str, Any]) -> go.Figure:
    """One step line per group: the limit over time, from the original to each change."""
    start_ns, end_ns = data["window"]
    if not data["timeline"]:
        return figures.empty("The autopilot changed no limit in this range", x_title="time (UTC)",
                             y_title="power limit (W)", height=320)
    fig = go.Figure()
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in data["timeline"]:
        groups.setdefault(f"{s['host']} {s['job']}", []).append(s)
    for name, steps in sorted(groups.items()):
        xs = [figures.iso(max(start_ns, steps[0]["time_ns"] - 1))]
        ys = [steps[0]["previous_w"]]
        for s in steps:
            xs.append(figures.iso(s["time_ns"]))
            ys.append(s["cap_w"])
        xs.append(figures.iso(end_ns))
        ys.append(steps[-1]["cap_w"])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, line_shape="hv",
                                 hovertemplate="%{y:.0f} W<br>%{x}<extra>" + name + "</extra>"))
        orig = steps[0]["original_w"]
        if orig is not None:
            fig.add_trace(go.Scatter(x=[xs[0], xs[-1]], y=[orig, orig], mode="lines",
                                     line={"dash": "dash", "width": 1}, showlegend=False,
                                     name=f"{name} original", hoverinfo="skip"))
    figures.base_layout(fig, x_title="time (UTC)", y_title="power limit (W)", height=360)
    fig.update_xaxes(type="date", range=[figures.iso(start_ns), figures.iso(end_ns)])
    return fig


def register(app: Dash, deps: Deps) -> None:
    store = deps.store

    @app.callback(Output("autopilot-summary", "children"), Output("autopilot-timeline", "figure"),
                  Output("autopilot-groups", "children"), Output("autopilot-groups-table", "data"),
                  Output("autopilot-changes-table", "data"), Output("autopilot-groups-box", "style"),
                  Output("autopilot-changes-box", "style"),
                  Input("page-autopilot", "title"), Input("range", "value"),
                  Input("tick", "n_intervals"), Input("view", "data"))
    def update(_page: str, range_key: str, _n: int | None,
               view: dict[str, Any] | None) -> tuple[Any, ...]:
        flt = view_filter(view)
        kept = filter_groups(deps.context(range_key, view), flt) if flt.model or flt.team else None
        data = autopilot_view(store, range_key, flt.node, flt.job, kept)
        heads, steps, gheads, groups = table_rows(data, max_rows=200)
        saved = data["saved_pct"]
        kpis = components.kpi_cards([
            views.Kpi("autopilot-saved", "Energy saved vs original limits",
                      units.energy(data["saved_j"]),
                      f"{pct1(saved)} of what the original limits would have used"
                      if saved is not None else "no measured window yet", None, None, ""),
            views.Kpi("autopilot-groups-n", "Groups steered", str(len(data["groups"])),
                      "opted-in jobs' GPU groups", None, None, ""),
            views.Kpi("autopilot-changes-n", "Limit changes", str(len(data["timeline"])),
                      "each audited with its measurements", None, None, ""),
        ])
        for card in kpis:
            card.children = [c for c in card.children if "wl-delta" not in str(getattr(c, "className", ""))]
        if data["pending_ns"] is not None:
            end = figures.iso(data["window"][1])[11:16]
            empty = components.empty_state(
                "The autopilot is running; its changes are newer than this range",
                [f"It wrote at {figures.iso(data['pending_ns'])[11:19]} UTC. "
                 f"This page, as every analysis page, ends at the last settled five minutes "
                 f"({end} UTC); the changes appear when the next five minutes settle."],
                id="autopilot-pending")
            return kpis, cap_figure(data), empty, [], [], HIDDEN, HIDDEN
        if not data["groups"] and not data["timeline"]:
            empty = components.empty_state(
                "The autopilot has not run in this range",
                ["Start the agent with ", html.Code("wattlens collect --autopilot --enable-actuation"),
                 " and opt jobs in (", html.Code("wattlens.job(..., autopilot=True)"),
                 " or --autopilot-jobs); see docs/autopilot.md. To watch it on simulated GPUs: ",
                 html.Code("wattlens demo --autopilot"), "."], id="autopilot-empty")
            return kpis, cap_figure(data), empty, [], [], HIDDEN, HIDDEN
        return (kpis, cap_figure(data), None, components.text_records(gheads, groups),
                components.text_records(heads, steps), SHOWN, SHOWN)
