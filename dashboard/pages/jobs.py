"""Jobs page: a sortable, filterable table of every job; a row opens its detail view (power, throughput, PER)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboard import components, figures, views
from dashboard.pages import Deps, anchor, view_filter


def layout() -> list[Any]:
    return [
        anchor("jobs"),
        components.section(
            "Jobs", html.Div(id="jobs-summary", className="wl-summary"),
            dcc.Loading(components.JOBS_TABLE, delay_show=400, type="dot"),
            note="click a row for its power, throughput and PER over time · "
                 "filter with e.g. >10 or train · \"over best cap\" uses the η of the Trade-off page",
            id="card-jobs"),
        components.section(
            "Energy by team (showback)", html.Div(id="teams-summary", className="wl-summary"),
            components.TEAMS_TABLE,
            note="GPU + CPU energy, PER, CO₂ and cost per team (the job's team tag) or Kubernetes "
                 "namespace; energy no team claims has its own rows · Export gives the CSV for "
                 "chargeback",
            tools=dcc.RadioItems(id="teams-by", options=[
                {"label": "by team", "value": "team"},
                {"label": "by namespace", "value": "namespace"},
            ], value="team", inline=True, className="wl-radio"),
            id="card-teams"),
    ]


def detail_layout(job: str) -> list[Any]:
    return [
        anchor("job"),
        dcc.Store(id="job-id", data=job),
        html.Div(className="wl-crumbs", children=[dcc.Link("← all jobs", href="/jobs")]),
        html.H1(job, className="wl-h1", id="job-title"),
        html.Div(id="job-note", className="wl-summary"),
        html.Div(id="job-facts"),
        components.section("Power, throughput and PER", components.graph("job-graph"),
                           note="per time bucket, summed over the job's hosts; PER against the "
                                "job's baseline (dashed)", id="card-job"),
    ]


def register(app: Dash, deps: Deps) -> None:
    store = deps.store

    @app.callback(Output("jobs-table", "data"), Output("jobs-summary", "children"),
                  Input("page-jobs", "title"), Input("range", "value"), Input("tick", "n_intervals"),
                  State("lam", "data"), Input("view", "data"))
    def table(_page: str, range_key: str, _n: int | None, lam: float | None,
              view: dict[str, Any] | None) -> tuple[Any, Any]:
        if views.data_end_ns(store) is None:
            return [], "No data yet."
        ctx = deps.context(range_key, view)
        rows = sorted(views.jobs_rows(ctx, float(lam if lam is not None else 0.5)),
                      key=lambda r: (-r["energy_kwh"], r["job"]))
        running = sum(1 for r in rows if r["status"] == "running")
        energy = sum(r["energy_kwh"] for r in rows)
        return rows, [f"{len(rows)} jobs in the range · {running} running · "
                      f"{energy:,.1f} kWh of GPU energy · η = {float(lam or 0.5):.2f} · ",
                      components.window_caption(ctx.window, "jobs-window")]

    @app.callback(Output("teams-table", "data"), Output("teams-summary", "children"),
                  Output("teams-table", "columns"),
                  Input("page-jobs", "title"), Input("range", "value"), Input("tick", "n_intervals"),
                  Input("view", "data"), Input("teams-by", "value"))
    def teams(_page: str, range_key: str, _n: int | None,
              view: dict[str, Any] | None, by: str | None) -> tuple[Any, Any, Any]:
        columns = [{**components.TEAM_COLUMNS[0], "name": "Namespace" if by == "namespace"
                    else "Team"}, *components.TEAM_COLUMNS[1:]]
        if views.data_end_ns(store) is None:
            return [], "No data yet.", columns
        ctx = deps.context(range_key, view)
        rows = views.teams_rows(ctx, filtered=view_filter(view).active, by=by or "team")
        return rows, views.teams_note(ctx, rows), columns

    @app.callback(Output("filter-team", "value", allow_duplicate=True),
                  Input("teams-table", "active_cell"), State("teams-by", "value"),
                  prevent_initial_call=True)
    def pick_team(cell: dict[str, Any] | None, by: str | None) -> Any:
        """A click on a team's row filters every page to that team (?team=)."""
        team = str((cell or {}).get("row_id") or "")
        if by == "namespace" or not team or team.startswith("("):
            return no_update  # a namespace, or energy no team claims: not a team to filter on
        return team

    @app.callback(Output("url", "pathname", allow_duplicate=True),
                  Input("jobs-table", "active_cell"), prevent_initial_call=True)
    def open_job(cell: dict[str, Any] | None) -> Any:
        if not cell or not cell.get("row_id"):
            return no_update
        return f"/jobs/{quote(str(cell['row_id']), safe='')}"

    @app.callback(Output("job-facts", "children"), Output("job-graph", "figure"),
                  Output("job-note", "children"),
                  Input("job-id", "data"), Input("range", "value"), Input("tick", "n_intervals"))
    def detail(job: str, range_key: str, _n: int | None) -> tuple[Any, Any, Any]:
        d = views.job_detail(store, range_key, job)
        if not d.found:
            return (components.empty_state(
                "No data for this job in the range",
                f"No point of job {job!r} falls in the selected time range; pick a longer range "
                f"or go back to the job list.", id="job-empty"),
                figures.empty("No data for this job in the range", x_title="time (UTC)",
                              y_title="power (kW)"), "")
        from analytics.per import PER_UNITS

        note = []
        if d.change_pct is not None:
            note.append(f"PER now {views.units.signed_pct(d.change_pct)} against its baseline "
                        f"({d.baseline_source}). ")
        if d.started_before:
            note.append("The job started before this range: widen the time range to see all of it.")
        fig = figures.job_detail(d.times_ns, d.power_w, d.rate, d.per_values, unit=d.unit,
                                 per_unit=PER_UNITS[d.unit], baseline=d.baseline,
                                 baseline_source=d.baseline_source)
        return components.facts(d.facts, id="job-facts-list"), fig, "".join(note)
