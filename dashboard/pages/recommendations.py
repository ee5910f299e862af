"""Recommendations page: ranked, with evidence and savings; "apply" only with actuation on, after a confirmation."""

from __future__ import annotations

from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from analytics import units
from analytics.recommend import Recommendation
from dashboard import actuation, components, views
from dashboard.pages import Deps, anchor

KIND_LABELS = {
    "idle_gpu": "idle GPUs", "power_cap": "power cap", "clock_lock": "clock lock",
    "consolidate": "consolidate", "mixed_precision": "precision", "low_precision": "precision",
    "carbon_window": "carbon window", "high_pue": "facility",
}


def layout(actuation_enabled: bool) -> list[Any]:
    note = ("apply sends the cap to the agents, after you confirm" if actuation_enabled else
            "read-only: start the dashboard with --enable-actuation and WATTLENS_AGENT_TOKEN to "
            "apply power caps from here")
    return [
        anchor("recs"),
        html.Div(id="recs-summary", className="wl-kpis wl-kpis-4",
                 children=[html.Div(className="wl-kpi wl-kpi-loading") for _ in range(4)]),
        components.section("Recommendations", html.Div(id="recs-window"), html.Div(id="recs-messages"),
                           dcc.Loading(html.Div(id="recs-list", className="wl-recs"), delay_show=400,
                                       type="dot"),
                           note=note, id="card-recs"),
        dcc.ConfirmDialog(id="apply-confirm", message=""),
        dcc.Store(id="apply-pending"),
        dcc.Store(id="recs-signature"),
        html.Div(id="apply-result", className="wl-toast-area"),
    ]


def _savings(r: Recommendation) -> list[Any]:
    kg = (units.mass_co2(r.savings_kg_co2_per_day * 1000) if r.savings_kg_co2_per_day is not None
          else "CO₂ unknown")
    return [
        html.Span(f"{r.savings_kwh_per_day:,.1f} kWh/day", className="wl-chip wl-chip-energy"),
        html.Span(f"{kg}/day", className="wl-chip wl-chip-co2"),
        html.Span(f"{units.money(r.savings_cost_per_day, r.currency)}/day", className="wl-chip wl-chip-cost"),
    ]


def _evidence(r: Recommendation) -> html.Details:
    rows = []
    for k, text in views.evidence_rows(r.evidence):
        if len(text) > 400:
            text = text[:400] + " …"
        rows.append(html.Tr([html.Th(k.replace("_", " ")), html.Td(text)]))
    return html.Details(className="wl-evidence", id=f"evidence-{r.id}", children=[
        html.Summary("Evidence and how it was estimated"),
        html.Table(html.Tbody(rows), className="wl-evidence-table"),
        html.P(["How: ", r.estimate_method], className="wl-note"),
    ])


def _how(r: Recommendation, enabled: bool) -> Any:
    steps = actuation.plan(r.action)
    if steps and enabled:
        return html.Button("Apply…", id={"type": "apply-rec", "index": r.id}, n_clicks=0,
                           className="wl-button wl-button-primary")
    if steps:
        return html.Div([html.Code(c, className="wl-cmd") for c in views.cap_commands(steps)],
                        className="wl-cmds", title=f"{len(steps)} GPU(s); dry run without --apply")
    return None


def rec_card(i: int, r: Recommendation, enabled: bool) -> html.Article:
    return html.Article(className=f"wl-rec wl-rec-{r.kind}", id=f"rec-{i}", children=[
        html.Div(className="wl-rec-rank", children=str(i)),
        html.Div(className="wl-rec-body", children=[
            html.Div(className="wl-rec-head", children=[
                html.Span(KIND_LABELS.get(r.kind, r.kind), className=f"wl-tag wl-tag-{r.kind}"),
                html.Span("measured" if r.measured else "estimate",
                          className="wl-tag " + ("wl-tag-measured" if r.measured else "wl-tag-estimate")),
                html.H3(r.title, className="wl-rec-title"),
            ]),
            html.Div(r.target, className="wl-rec-target"),
            html.P(r.detail, className="wl-rec-detail"),
            html.Div(className="wl-rec-foot", children=[
                html.Div(_savings(r), className="wl-chips"), _how(r, enabled)]),
            _evidence(r),
        ]),
    ])


def register(app: Dash, deps: Deps) -> None:
    store = deps.store
    enabled = deps.actuation is not None

    @app.callback(Output("recs-summary", "children"), Output("recs-list", "children"),
                  Output("recs-messages", "children"), Output("recs-signature", "data"),
                  Output("recs-window", "children"),
                  Input("page-recs", "title"), Input("range", "value"), Input("tick", "n_intervals"),
                  State("lam", "data"), State("recs-signature", "data"), Input("view", "data"))
    def update(_page: str, range_key: str, _n: int | None, lam: float | None,
               signature: Any, view: dict[str, Any] | None) -> tuple[Any, ...]:
        lam = float(lam if lam is not None else 0.5)
        if views.data_end_ns(store) is None:
            return ([], components.empty_state("No data yet", "Nothing has been collected."), "", None,
                    "")
        context = deps.context(range_key, view)
        v = views.recommendations_view(context, lam)
        sig = v.signature(f"{range_key}|{sorted((view or {}).items())}", lam)
        if ctx.triggered_id == "tick" and sig == signature:
            raise PreventUpdate  # nothing changed: keep open evidence panels open
        kpis = components.kpi_cards([
            views.Kpi("recs-count", "Recommendations", str(len(v.items)), f"at η = {lam:.2f}",
                      None, None, ""),
            views.Kpi("recs-kwh", "Energy saved", f"{v.kwh_per_day:,.1f} kWh/day",
                      f"{v.total_note}; scaled from {units.duration(v.span_s)} of data", None,
                      None, ""),
            views.Kpi("recs-co2", "CO₂ avoided",
                      units.mass_co2(v.kg_co2_per_day * 1000) + "/day" if v.kg_co2_per_day is not None
                      else units.DASH, "grid intensity × PUE", None, None, ""),
            views.Kpi("recs-cost", "Cost saved", units.money(v.cost_per_day, v.currency) + "/day",
                      "at the configured tariff", None, None, ""),
        ])
        for card in kpis:
            card.children = [c for c in card.children if "wl-delta" not in str(getattr(c, "className", ""))]
        if not v.items:
            body: Any = components.empty_state(
                "Nothing to recommend", "No idle GPUs, no cap or precision change that saves enough, "
                "no deferrable work at a carbon peak in this range. That is good news.",
                id="recs-empty")
        else:
            body = [rec_card(i, r, enabled) for i, r in enumerate(v.items, 1)]
        msgs = [html.Div(m, className="wl-banner wl-banner-est wl-inline") for m in v.messages]
        return kpis, body, msgs, sig, components.window_caption(context.window, "recs-window-text",
                                                                "from the data in ")

    @app.callback(Output("apply-confirm", "displayed"), Output("apply-confirm", "message"),
                  Output("apply-pending", "data"),
                  Input({"type": "apply-rec", "index": ALL}, "n_clicks"),
                  State("range", "value"), State("lam", "data"), State("view", "data"),
                  prevent_initial_call=True)
    def ask(clicks: list[int | None], range_key: str, lam: float | None,
            view: dict[str, Any] | None) -> tuple[Any, ...]:
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or not any(c for c in clicks if c):
            raise PreventUpdate
        rec = _find(deps, range_key, lam, str(trig["index"]), view)
        if rec is None:
            return False, "", None
        steps = actuation.plan(rec.action)
        return True, f"{rec.title}\n\n{actuation.describe(steps)}\n\nApply now?", rec.id

    @app.callback(Output("apply-result", "children"), Input("apply-confirm", "submit_n_clicks"),
                  State("apply-pending", "data"), State("range", "value"), State("lam", "data"),
                  State("view", "data"), prevent_initial_call=True)
    def apply(_n: int | None, rec_id: str | None, range_key: str, lam: float | None,
              view: dict[str, Any] | None) -> Any:
        if not rec_id or deps.actuation is None:
            return no_update
        rec = _find(deps, range_key, lam, rec_id, view)
        if rec is None:
            return html.Div("That recommendation is gone (the data moved on); nothing was changed.",
                            className="wl-toast wl-toast-bad")
        # The action comes from the server's own recommendation, never from the browser.
        results = deps.actuation.apply(actuation.plan(rec.action), who="dashboard")
        ok = sum(1 for r in results if r.ok)
        lines = [html.Li(f"{r.step.host} GPU {r.step.gpu}: {r.message}",
                         className="wl-ok" if r.ok else "wl-bad") for r in results]
        tone = "good" if ok == len(results) else "bad"
        return html.Div(className=f"wl-toast wl-toast-{tone}", id="apply-toast", children=[
            html.Strong(f"Applied to {ok} of {len(results)} GPU(s)."), html.Ul(lines)])


def _find(deps: Deps, range_key: str, lam: float | None, rec_id: str,
          view: dict[str, Any] | None = None) -> Recommendation | None:
    v = views.recommendations_view(deps.context(range_key, view),
                                   float(lam if lam is not None else 0.5))
    return next((r for r in v.items if r.id == rec_id), None)
