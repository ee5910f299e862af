"""Component builders: functions that return Dash layout trees, shared by every page."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

from dash import dash_table, dcc, html
from dash.dash_table.Format import Format, Group, Scheme

from analytics import units
from dashboard.views import RANGES, Kpi, Status, range_label

NAV: tuple[tuple[str, str], ...] = (
    ("/", "Fleet"),
    ("/jobs", "Jobs"),
    ("/tradeoff", "Trade-off"),
    ("/carbon", "Carbon"),
    ("/recommendations", "Recommendations"),
    ("/alerts", "Alerts"),
    ("/gpus", "GPU health"),
    ("/autopilot", "Autopilot"),
)
GRAPH_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True, "displayModeBar": "hover",
                                "toImageButtonOptions": {"format": "png", "scale": 2},
                                "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def header(range_key: str) -> html.Header:
    """Brand, page navigation, the live indicator and the time-range picker every page shares."""
    return html.Header(className="wl-header", children=[
        html.Div(className="wl-brand", children=[
            html.Span("⚡", className="wl-logo"),
            html.Span("wattlens", className="wl-name"),
        ]),
        html.Nav(id="nav", className="wl-nav", children=nav_links("/", 0)),
        html.Div(className="wl-controls", children=[
            html.Span(id="freshness", className="wl-fresh", children="…"),
            html.Label("Time range", htmlFor="range", className="wl-range-label"),
            dcc.Dropdown(id="range", options=range_options(range_key),  # type: ignore[arg-type]
                         value=range_key, clearable=False, searchable=False, className="wl-range"),
        ]),
    ])


def range_options(range_key: str | None) -> list[dict[str, str]]:
    """The presets, plus the absolute range in use (from a link or a chart zoom)."""
    opts = [{"label": label, "value": key} for key, (label, _s) in RANGES.items()]
    if range_key and range_key not in RANGES:
        try:
            opts.append({"label": range_label(range_key), "value": range_key})
        except ValueError:
            pass
    return opts


def filter_bar() -> html.Div:
    """Node, GPU model, job and team filters under the header (kept in the URL with the range), and
    a custom absolute range ("from", "to": it sets the same ``range=START..END`` a chart zoom sets).

    ``team`` filters by the job points' ``team`` tag (analytics.filters); a click on the Jobs
    page's team table sets it too.
    """
    def pick(key: str, label: str) -> Any:
        return html.Div(className="wl-filter", children=[
            html.Label(label, htmlFor=f"filter-{key}"),
            dcc.Dropdown(id=f"filter-{key}", options=[], value=None, placeholder="all",
                         className="wl-filter-dd", clearable=True)])
    def when(key: str, label: str) -> Any:
        return html.Div(className="wl-filter", children=[
            html.Label(label, htmlFor=f"range-{key}"),
            dcc.Input(id=f"range-{key}", type="text", placeholder="YYYY-MM-DD hh:mm", debounce=True,
                      className="wl-when", autoComplete="off")])
    return html.Div(className="wl-filters", id="filters", children=[
        pick("node", "Node"), pick("model", "GPU model"), pick("job", "Job"), pick("team", "Team"),
        html.Div(className="wl-custom-range", title="an absolute time range, UTC", children=[
            when("start", "From (UTC)"), when("end", "to"),
            html.Button("Apply", id="range-apply", className="wl-button", n_clicks=0)]),
        html.Span(id="url-error", className="wl-url-error"),
    ])


def nav_links(pathname: str, firing: int, search: str = "") -> list[Any]:
    """The page links, the current one marked; the Alerts link carries the number firing."""
    out = []
    for path, label in NAV:
        active = pathname == path or (path != "/" and pathname.startswith(path + "/"))
        children: list[Any] = [label]
        if path == "/alerts" and firing:
            children.append(html.Span(str(firing), className="wl-badge", title=f"{firing} firing fleet-wide"))
        out.append(dcc.Link(children, href=path + search,
                            id=f"nav-{label.lower().replace('-', '').replace(' ', '')}",
                            className="wl-nav-link" + (" wl-nav-active" if active else "")))
    return out


def freshness(st: Status) -> list[Any]:
    """'● live · data to 12:03:10 UTC' or a stale warning with the age of the newest point."""
    if st.newest_ns is None:
        return [html.Span("●", className="wl-dot wl-dot-off"), " no data yet"]
    from dashboard.figures import iso

    when = iso(st.newest_ns)[11:19] + " UTC"
    if st.live:
        return [html.Span("●", className="wl-dot wl-dot-live"), f" live · data to {when}"]
    return [html.Span("●", className="wl-dot wl-dot-stale"),
            f" stale · newest point {units.duration(st.age_s)} ago ({iso(st.newest_ns)[:16]} UTC)"]


def banners(st: Status) -> list[html.Div]:
    """Say plainly when the numbers are simulated or partly estimated."""
    out = []
    if st.simulated:
        out.append(html.Div(className="wl-banner wl-banner-sim", id="banner-sim", children=[
            html.Strong("Simulated data. "),
            "This fleet comes from wattlens's simulator (wattlens demo), not from real sensors."]))
    if st.estimated:
        out.append(html.Div(className="wl-banner wl-banner-est", id="banner-est", children=[
            html.Strong("Estimated energy. "),
            "Some CPU or GPU energy is modelled from utilisation × TDP because those hosts have no "
            "RAPL, hwmon or NVML energy sensor; tables label the rows it affects."]))
    return out


NOTABLE_CHANGE_PCT = 1.0  # smaller day-to-day changes are noise: shown, but not coloured


def kpi_cards(kpis: Sequence[Kpi]) -> list[html.Div]:
    """One card per KPI: label, value with its unit, the change (green when it is the good way)."""
    cards = []
    for k in kpis:
        if k.change_pct is None:
            text = k.compare if k.compare.startswith("n/a") else f"{units.DASH} {k.compare}"
            delta = html.Span(text, className="wl-delta wl-delta-none")
        else:
            flat = abs(k.change_pct) < 0.05  # shown as ±0.0 %
            arrow = "■" if flat else "▲" if k.change_pct > 0 else "▼"
            tone = "none"
            if k.good_when is not None and abs(k.change_pct) >= NOTABLE_CHANGE_PCT:
                tone = "good" if (k.change_pct < 0) == (k.good_when == "down") else "bad"
            delta = html.Span(f"{arrow} {units.signed_pct(k.change_pct)} {k.compare}",
                              className=f"wl-delta wl-delta-{tone}")
        cards.append(html.Div(className="wl-kpi", id=f"kpi-{k.key}", children=[
            html.Div(k.label, className="wl-kpi-label"),
            html.Div(k.value, className="wl-kpi-value"),
            delta,
            html.Div(k.note, className="wl-kpi-note", title=k.note),
        ]))
    return cards


def window_caption(window: Any, id: str, prefix: str = "") -> html.Span:
    """The window a page's figures cover, in words; ``title`` carries it in ns for tools and tests."""
    from dashboard.views import window_text

    return html.Span(f"{prefix}{window_text(window)}", id=id, className="wl-note wl-range-caption",
                     title=f"{window.start_ns}/{window.end_ns}")


def section(title: str, *children: Any, note: str | None = None, tools: Any = None,
            id: str | None = None, class_name: str = "") -> html.Section:
    """A titled card; ``tools`` go to the right of the title (radio buttons, pickers)."""
    head: list[Any] = [html.H2(title)]
    if note:
        head.append(html.Span(note, className="wl-note"))
    if tools is not None:
        head.append(html.Div(tools, className="wl-tools"))
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Section(className=f"wl-card {class_name}".strip(), **kwargs,
                        children=[html.Div(head, className="wl-card-head"), *children])


def empty_state(title: str, body: Any, *, id: str | None = None) -> html.Div:
    """An honest empty state: what is missing and how to get it."""
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Div(className="wl-empty", **kwargs, children=[html.H3(title), html.Div(body)])


def graph(graph_id: str, figure: Any = None, height: int | None = None) -> dcc.Loading:
    """A chart with a loading spinner that only shows when an update takes longer than 0.4 s."""
    kwargs: dict[str, Any] = {"style": {"height": f"{height}px"}} if height else {}
    return dcc.Loading(dcc.Graph(id=graph_id, figure=figure or {}, config=GRAPH_CONFIG,  # type: ignore[arg-type]
                                 **kwargs), delay_show=400, type="dot", color="#2563eb")


def facts(items: Sequence[tuple[str, str]], id: str | None = None) -> html.Dl:
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Dl(className="wl-facts", **kwargs, children=[
        html.Div([html.Dt(k), html.Dd(v)], className="wl-fact") for k, v in items])


TABLE_STYLE: dict[str, Any] = {
    "style_table": {"overflowX": "auto"},
    "style_cell": {"fontFamily": "inherit", "fontSize": "13px", "padding": "5px 6px",
                   "textAlign": "left", "border": "none", "borderBottom": "1px solid #e2e8f0",
                   "whiteSpace": "nowrap", "maxWidth": "300px", "overflow": "hidden",
                   "textOverflow": "ellipsis"},
    "style_header": {"fontWeight": "600", "backgroundColor": "#f1f5f9", "color": "#334155",
                     "borderBottom": "2px solid #cbd5e1", "whiteSpace": "normal",
                     "height": "auto", "lineHeight": "16px", "verticalAlign": "bottom"},
    "style_cell_conditional": [{"if": {"column_id": "job"}, "maxWidth": "290px"},
                               {"if": {"column_type": "numeric"}, "textAlign": "right",
                                "fontVariantNumeric": "tabular-nums"}],
    "style_filter": {"backgroundColor": "#ffffff"},
    "style_as_list_view": True,
}

def _num(name: str, col: str, decimals: int) -> dict[str, Any]:
    """A numeric column: sorts and filters as a number, fixed decimals, unit in the header."""
    return {"name": name, "id": col, "type": "numeric",
            "format": Format(precision=decimals, scheme=Scheme.fixed, group=Group.yes)}


JOB_COLUMNS: list[dict[str, Any]] = [
    {"name": "Job", "id": "job"},
    {"name": "Status", "id": "status"},
    {"name": "Kind", "id": "kind_text"},
    {"name": "GPUs", "id": "gpus_text"},
    _num("Cap, W", "cap_w", 0),
    _num("Energy, kWh", "energy_kwh", 2),
    _num("Run, h", "runtime_h", 2),
    _num("Power, kW", "power_kw", 2),
    {"name": "Work unit", "id": "unit"},
    _num("Work, M units", "work_m", 2),
    _num("PER, units/J", "per_num", 2),
    _num("PER Δ, %", "per_trend_pct", 1),
    _num("Over best cap, MJ", "excess_mj", 2),
]



def _data_table(**kwargs: Any) -> Any:
    """A DataTable built once, at import (layouts reuse it; callbacks fill its ``data``).

    Dash 4 marks DataTable deprecated in favour of dash-ag-grid, which is not a
    dependency yet; the warning is silenced here, where it is known, and nowhere else.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*The dash_table.DataTable will be removed",
                                category=DeprecationWarning)
        # Every table exports what it shows (filtered and sorted) as CSV, headers as displayed.
        kwargs.setdefault("export_format", "csv")
        kwargs.setdefault("export_headers", "display")
        return dash_table.DataTable(**kwargs)  # type: ignore[attr-defined]


JOB_TABLE_STYLES: list[dict[str, Any]] = [
    {"if": {"column_id": "job"}, "color": "#1d4ed8", "fontWeight": "500", "cursor": "pointer"},
    {"if": {"filter_query": "{status} = running", "column_id": "status"},
     "color": "#15803d", "fontWeight": "600"},
    {"if": {"filter_query": "{per_trend_pct} < -5", "column_id": "per_trend_pct"},
     "color": "#b91c1c", "fontWeight": "600"},
    {"if": {"filter_query": "{excess_mj} > 0", "column_id": "excess_mj"},
     "color": "#b45309", "fontWeight": "600"},
    {"if": {"state": "active"}, "backgroundColor": "#eff6ff", "border": "none"},
]


def job_table(table_id: str, *, page_size: int = 20, columns: list[dict[str, Any]] | None = None) -> Any:
    """Sortable, filterable job table; clicking a row opens the job (row ids are job ids)."""
    return _data_table(
        id=table_id, columns=columns or JOB_COLUMNS, data=[], sort_action="native",
        filter_action="native", page_size=page_size, cell_selectable=True,
        style_data_conditional=JOB_TABLE_STYLES, **TABLE_STYLE)


RANK_COLUMNS: list[dict[str, Any]] = [
    _num("#", "rank", 0),
    {"name": "Job", "id": "job"},
    {"name": "GPUs", "id": "gpus_text"},
    _num("Cap, W", "cap_w", 0),
    _num("Best cap at η, W", "best_cap_w", 0),
    _num("Trade-off cost, MJ", "cost_mj", 2),
    _num("Over best, MJ", "excess_mj", 2),
    _num("Over best, %", "excess_pct", 1),
    _num("Energy, kWh", "energy_kwh", 2),
    {"name": "Work unit", "id": "unit"},
    _num("PER, units/J", "per_num", 2),
]

ALERT_COLUMNS: list[dict[str, Any]] = [
    {"name": "State", "id": "state"}, {"name": "Severity", "id": "severity"},
    {"name": "Rule", "id": "rule"}, {"name": "Target", "id": "target"},
    {"name": "Since (UTC)", "id": "since"}, {"name": "For", "id": "for"},
    {"name": "Value", "id": "value", "type": "numeric"},
]

# Built once at import: see _data_table.
JOBS_TABLE = job_table("jobs-table")
RANK_TABLE = job_table("rank-table", columns=RANK_COLUMNS, page_size=15)
ALERTS_TABLE = _data_table(
    id="alerts-table", columns=ALERT_COLUMNS, data=[], sort_action="native", page_size=20,
    style_data_conditional=[{"if": {"filter_query": "{state} = FIRING"},
                             "backgroundColor": "#fef2f2", "color": "#991b1b", "fontWeight": "600"}],
    **TABLE_STYLE)

TEAM_COLUMNS: list[dict[str, Any]] = [
    {"name": "Team", "id": "team"}, _num("Energy, kWh", "energy_kwh", 2),
    _num("Share, %", "share_pct", 1), _num("Of it idle, kWh", "idle_kwh", 2),
    _num("Jobs", "jobs", 0), _num("PER, units/J", "per", 2), {"name": "Unit", "id": "per_unit"},
    _num("CO₂, kg", "kg_co2", 2), _num("Cost", "cost", 2),
]
# The chargeback table: its CSV export (the button above it) is the showback in a spreadsheet.
TEAMS_TABLE = _data_table(id="teams-table", columns=TEAM_COLUMNS, data=[], sort_action="native",
                          page_size=20, **TABLE_STYLE)

def text_columns(headers: Sequence[str]) -> list[dict[str, Any]]:
    """Columns of a table of preformatted text (the report's rows): the header shown, a slug id."""
    return [{"name": h, "id": re.sub(r"\W+", "_", h).strip("_")} for h in headers]


def text_records(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[dict[str, str]]:
    """The rows of :func:`text_columns`'s table, as DataTable data."""
    ids = [c["id"] for c in text_columns(headers)]
    return [dict(zip(ids, row, strict=True)) for row in rows]


def text_table(table_id: str, headers: Sequence[str], page_size: int = 20,
               wrap: Sequence[str] = ()) -> Any:
    """A table of preformatted text rows with the same CSV export as every other table; the
    ``wrap`` columns (long text) wrap instead of being cut."""
    ids = {c["name"]: c["id"] for c in text_columns(headers)}
    wide = [{"if": {"column_id": ids[h]}, "whiteSpace": "normal", "minWidth": "220px", "maxWidth": "340px"}
            for h in wrap]
    return _data_table(id=table_id, columns=text_columns(headers), data=[], page_size=page_size,
                       **{**TABLE_STYLE, "style_cell_conditional": [
                           *TABLE_STYLE["style_cell_conditional"], *wide]})


HEALTH_COLUMNS: list[dict[str, Any]] = [
    {"name": "GPU", "id": "gpu"}, {"name": "Model", "id": "model"},
    _num("Temp, °C", "temp_c", 1), _num("Peak temp, °C", "temp_peak_c", 1),
    _num("SM clock, MHz", "sm_clock_mhz", 0), _num("Mem clock, MHz", "mem_clock_mhz", 0),
    _num("Mem use, %", "mem_util_pct", 1), _num("Util, %", "util_pct", 1),
    _num("Power, W", "power_w", 0), _num("Limit, W", "power_limit_w", 0),
    _num("Power ÷ limit, %", "power_pct", 1), _num("Throttled, %", "throttle_pct", 1),
    _num("Node PER, units/J", "node_per", 3), {"name": "Unit", "id": "per_unit"},
    {"name": "Stands out", "id": "flags"},
]
HEALTH_TABLE = _data_table(
    id="health-table", columns=HEALTH_COLUMNS, data=[], sort_action="native", filter_action="native",
    page_size=16, style_data_conditional=[
        {"if": {"filter_query": "{n_flags} > 0"}, "backgroundColor": "#fff7ed"},
        {"if": {"filter_query": "{n_flags} > 0", "column_id": "flags"}, "color": "#b45309",
         "fontWeight": "600"}],
    **{**TABLE_STYLE, "style_cell_conditional": [
        *TABLE_STYLE["style_cell_conditional"],
        {"if": {"column_id": "flags"}, "whiteSpace": "normal", "minWidth": "240px", "maxWidth": "420px"}]})
