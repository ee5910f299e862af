"""Component builders: functions that return Dash layout trees."""

from __future__ import annotations

from typing import Any

from dash import dash_table, dcc, html


def header(range_key: str = "24h") -> html.Header:
    return html.Header(className="wl-header", children=[
        html.Div(className="wl-brand", children=[
            html.Span("⚡", className="wl-logo"),
            html.Span("wattlens", className="wl-name"),
            html.Span("work per joule, fleet-wide", className="wl-tagline"),
        ]),
        html.Div(className="wl-controls", children=[
            html.Label("Time range", htmlFor="range"),
            dcc.Dropdown(id="range", options=[
                {"label": "Last hour", "value": "1h"},
                {"label": "Last 6 hours", "value": "6h"},
                {"label": "Last 24 hours", "value": "24h"},
                {"label": "Last 7 days", "value": "7d"},
            ], value=range_key, clearable=False, className="wl-range"),
        ]),
    ])


def banner(simulated: bool, estimated: bool) -> list[html.Div]:
    out = []
    if simulated:
        out.append(html.Div("Simulated data: this fleet comes from wattlens's simulator "
                            "(wattlens demo), not from real sensors.",
                            className="wl-banner wl-banner-sim"))
    if estimated:
        out.append(html.Div("Some CPU energy is estimated from utilisation × TDP "
                            "(no RAPL or hwmon sensor on those hosts).",
                            className="wl-banner wl-banner-est"))
    return out


def kpi_cards(kpis: list[tuple[str, str, str]]) -> list[html.Div]:
    return [html.Div(className="wl-kpi", children=[
        html.Div(label, className="wl-kpi-label"),
        html.Div(value, className="wl-kpi-value"),
        html.Div(note, className="wl-kpi-note"),
    ]) for label, value, note in kpis]


JOB_COLUMNS: list[dict[str, Any]] = [
    {"name": "Job", "id": "job"},
    {"name": "Kind", "id": "kind"},
    {"name": "Precision", "id": "precision"},
    {"name": "GPUs", "id": "gpus", "type": "numeric"},
    {"name": "GPU model", "id": "gpu_model"},
    {"name": "Energy (kWh)", "id": "energy_kwh", "type": "numeric"},
    {"name": "Mean power (kW)", "id": "power_kw", "type": "numeric"},
    {"name": "Work", "id": "work"},
    {"name": "PER", "id": "per"},
]


def job_table(table_id: str = "jobs") -> Any:
    return dash_table.DataTable(  # type: ignore[attr-defined]
        id=table_id, columns=JOB_COLUMNS, data=[], sort_action="native",
        filter_action="native", page_size=15, style_as_list_view=True,
        style_table={"overflowX": "auto"},
        style_cell={"fontFamily": "inherit", "fontSize": "14px", "padding": "6px 10px",
                    "textAlign": "left"},
        style_header={"fontWeight": "600", "backgroundColor": "#f1f5f9"},
    )


def section(title: str, *children: Any, note: str | None = None) -> html.Section:
    head: list[Any] = [html.H2(title)]
    if note:
        head.append(html.Span(note, className="wl-note"))
    return html.Section(className="wl-card", children=[html.Div(head, className="wl-card-head"),
                                                       *children])
