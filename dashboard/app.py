"""The Dash app: a shared header and time range, URL routing to six pages, thin callbacks over views."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import unquote

import dash
from dash import Input, Output, State, dcc, html

from analytics import queries
from analytics.context import Settings
from collector.store.base import Store
from dashboard import components, views
from dashboard.actuation import AgentClient
from dashboard.pages import Deps, alerts, carbon, fleet, jobs, recommendations, tradeoff

log = logging.getLogger("wattlens.dashboard")


def create_app(store: Store, *, refresh_s: float = 10.0, settings: Settings | None = None,
               actuation: AgentClient | None = None, auth_token: str | None = None,
               cache: bool = True, lam: float = 0.5, prewarm: bool = False) -> dash.Dash:
    """Build the dashboard over ``store`` (any wattlens store).

    Reads go through the store layer's rollup cache (:func:`analytics.queries.cached`)
    unless ``cache`` is False. ``actuation`` enables the "apply" buttons; ``auth_token``
    requires the token on every request (basic-auth password or bearer). ``prewarm`` fills the
    cache for the Fleet page and the analysis pages on a background thread, so the first
    visitor does not wait for a cold 24 h read.
    """
    if not refresh_s > 0:
        raise ValueError(f"refresh_s: must be positive, got {refresh_s!r}")
    reader: Store = queries.cached(store) if cache else store
    deps = Deps(reader, settings or Settings(), refresh_s, actuation)
    app = dash.Dash(__name__, title="wattlens", update_title="",
                    suppress_callback_exceptions=True, serve_locally=True,
                    meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}])
    app.layout = html.Div(className="wl-app", children=[
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="lam", data=lam, storage_type="session"),
        dcc.Interval(id="tick", interval=int(refresh_s * 1000)),
        components.header(views.DEFAULT_RANGE),
        html.Div(id="banners"),
        html.Main(id="page", className="wl-main"),
        html.Footer("wattlens · useful work per joule · all times UTC · "
                    "Prometheus /metrics on every agent", className="wl-footer"),
    ])

    @app.callback(Output("page", "children"), Input("url", "pathname"), State("lam", "data"))
    def route(pathname: str | None, lam_now: float | None) -> Any:
        return page_for(pathname or "/", deps, lam_now if lam_now is not None else lam)

    @app.callback(Output("banners", "children"), Output("freshness", "children"),
                  Output("nav", "children"),
                  Input("tick", "n_intervals"), Input("range", "value"), Input("url", "pathname"))
    def header_status(_n: int | None, range_key: str, pathname: str | None) -> tuple[Any, ...]:
        st = views.status(reader, range_key, time.time_ns())
        return (components.banners(st), components.freshness(st),
                components.nav_links(pathname or "/", st.firing))

    for page in (fleet, jobs, tradeoff, carbon, recommendations, alerts):
        page.register(app, deps)  # type: ignore[attr-defined]
    if auth_token:
        from dashboard.auth import install

        install(app.server, auth_token)
    app._wattlens_deps = deps  # type: ignore[attr-defined]  # for tests and the benchmark
    if prewarm and cache:
        threading.Thread(target=_prewarm, args=(deps,), name="wattlens-prewarm", daemon=True).start()
    return app


def _prewarm(deps: Deps) -> None:
    t0 = time.perf_counter()
    try:
        if views.data_end_ns(deps.store) is None:
            return  # nothing collected yet
        views.fleet_view(deps.store, views.DEFAULT_RANGE, "host", deps.settings)
        views.status(deps.store, views.DEFAULT_RANGE, time.time_ns())
        log.info("dashboard: Fleet page warm in %.1f s", time.perf_counter() - t0)
        deps.memo.get(deps.store, views.DEFAULT_RANGE)
        log.info("dashboard: analysis pages warm in %.1f s", time.perf_counter() - t0)
    except Exception as exc:  # a store that is down now is reported by the page itself
        log.warning("dashboard: could not prewarm the cache: %s", exc)


def page_for(pathname: str, deps: Deps, lam: float) -> Any:
    """The layout of the page at ``pathname`` (data arrives through that page's callbacks)."""
    path = pathname.rstrip("/") or "/"
    if path == "/":
        return fleet.layout()
    if path == "/jobs":
        return jobs.layout()
    if path.startswith("/jobs/"):
        return jobs.detail_layout(unquote(path[len("/jobs/"):]))
    if path == "/tradeoff":
        return tradeoff.layout(float(lam))
    if path == "/carbon":
        return carbon.layout()
    if path == "/recommendations":
        return recommendations.layout(deps.actuation is not None)
    if path == "/alerts":
        return alerts.layout()
    return components.empty_state("Page not found", [
        f"There is no page at {pathname}. ", dcc.Link("Go to the fleet overview", href="/")],
        id="not-found")
