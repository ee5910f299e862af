"""Trade-off page: a η slider that re-ranks jobs by cost(η), and the Pareto chart of time vs energy over caps."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboard import components, figures, views
from dashboard.pages import Deps, anchor

LAMBDA_MARKS = {0: "0", 0.25: "0.25", 0.5: "0.5", 0.75: "0.75", 1: "1"}


def layout(lam: float) -> list[Any]:
    return [
        anchor("tradeoff"),
        components.section(
            "The trade-off weight η (0 to 1)",
            html.P(className="wl-explain", children=[
                "cost(η) = η·E + (1 − η)·P", html.Sub("max"), "·T  —  E is the energy a job used, "
                "T its GPU-seconds and P", html.Sub("max"), " the GPU model's highest power limit, so "
                "both terms are joules. η = 1 minimises energy, η = 0 minimises time. Moving η "
                "re-ranks the jobs below and moves the recommended cap."]),
            html.Div(className="wl-slider", children=[
                dcc.Slider(id="lam-slider", min=0, max=1, step=0.05, value=lam, marks=LAMBDA_MARKS,
                           updatemode="mouseup"),
                html.Div(className="wl-slider-ends", children=[
                    html.Span("← time first (η = 0)"), html.Span("energy first (η = 1) →")]),
            ]),
            id="card-lambda"),
        html.Div(className="wl-grid-2", children=[
            components.section(
                "Time vs energy over power caps", html.Div(id="tradeoff-summary", className="wl-summary"),
                components.graph("tradeoff-pareto"),
                note="per unit of work, per workload class",
                tools=dcc.Dropdown(id="tradeoff-class", options=[], value=None, clearable=True,
                                   placeholder="largest class with several caps",
                                   className="wl-class-picker"),
                id="card-pareto"),
            components.section("cost(η) at each cap", components.graph("tradeoff-cost"),
                               note="the lowest is the recommended cap", id="card-cost"),
        ]),
        components.section(
            "Jobs ranked by cost(η) over their best cap",
            dcc.Loading(components.RANK_TABLE, delay_show=400, type="dot"),
            note="how many joules of cost(η) each job would save at its class's best cap; "
                 "click a row to open the job", id="card-rank"),
    ]


def register(app: Dash, deps: Deps) -> None:
    store = deps.store

    @app.callback(Output("lam", "data"), Input("lam-slider", "value"), prevent_initial_call=True)
    def keep_lambda(lam: float | None) -> Any:
        return no_update if lam is None else float(lam)

    @app.callback(Output("tradeoff-pareto", "figure"), Output("tradeoff-cost", "figure"),
                  Output("tradeoff-summary", "children"), Output("rank-table", "data"),
                  Output("tradeoff-class", "options"),
                  Input("lam-slider", "value"), Input("tradeoff-class", "value"),
                  Input("range", "value"), Input("tick", "n_intervals"), Input("view", "data"))
    def update(lam: float | None, selected: str | None, range_key: str,
               _n: int | None, view: dict[str, Any] | None) -> tuple[Any, ...]:
        lam = float(lam if lam is not None else 0.5)
        if views.data_end_ns(store) is None:
            msg = "No data yet"
            return (figures.empty(msg), figures.empty(msg), msg, [], [])
        t = views.tradeoff(deps.context(range_key, view), lam, selected)
        options = [{"label": label, "value": key} for key, label in t.classes]
        pareto = figures.pareto(t.points, unit=t.unit, best_cap_w=t.best_cap_w, lam=lam,
                                p_max_w=t.p_max_w)
        cost = figures.cost_by_cap(t.points, unit=t.unit, lam=lam, best_cap_w=t.best_cap_w)
        label = next((lbl for key, lbl in t.classes if key == t.selected), "")
        summary = [html.Strong(label.split(" · ")[0]), html.Br(), t.summary] if label else t.summary
        return pareto, cost, summary, t.rows, options

    @app.callback(Output("url", "pathname", allow_duplicate=True),
                  Input("rank-table", "active_cell"), State("rank-table", "data"),
                  prevent_initial_call=True)
    def open_job(cell: dict[str, Any] | None, _rows: Any) -> Any:
        if not cell or not cell.get("row_id"):
            return no_update
        return f"/jobs/{quote(str(cell['row_id']), safe='')}"
