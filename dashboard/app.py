"""The Dash app: a shared header, time range and filters kept in the URL, seven pages, thin callbacks."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import unquote

import dash
from dash import Input, Output, State, ctx, dcc, html, no_update

from analytics import queries
from analytics.context import Settings
from collector.store.base import Store
from dashboard import components, urlstate, views
from dashboard.actuation import AgentClient
from dashboard.pages import (
    Deps,
    alerts,
    autopilot,
    carbon,
    fleet,
    gpus,
    jobs,
    recommendations,
    tradeoff,
)

log = logging.getLogger("wattlens.dashboard")


def create_app(store: Store, *, refresh_s: float = 10.0, settings: Settings | None = None,
               actuation: AgentClient | None = None, auth_token: str | None = None,
               cache: bool = True, lam: float = 0.5, prewarm: bool = False,
               full_plotly: bool = False) -> dash.Dash:
    """Build the dashboard over ``store`` (any wattlens store).

    Reads go through the store layer's rollup cache (:func:`analytics.queries.cached`)
    unless ``cache`` is False. ``actuation`` enables the "apply" buttons; ``auth_token``
    requires the token on every request (basic-auth password or bearer). ``prewarm`` fills the
    cache for the Fleet page and the analysis pages on a background thread, so the first
    visitor does not wait for a cold 24 h read.

    Charts are drawn by plotly.js's cartesian bundle in ``assets/`` (every trace type the
    dashboard uses; a third of the full bundle, whose parsing was the largest part of a first
    page load). ``full_plotly`` leaves it out, so Dash loads plotly.py's full bundle: the
    reference of ``benchmarks/bench_page_load.py``.
    """
    if not refresh_s > 0:
        raise ValueError(f"refresh_s: must be positive, got {refresh_s!r}")
    _import_numpy_now()
    reader: Store = queries.cached(store) if cache else store
    deps = Deps(reader, settings or Settings(), refresh_s, actuation)
    app = dash.Dash(__name__, title="wattlens", update_title="",
                    suppress_callback_exceptions=True, serve_locally=True,
                    assets_ignore=r"plotly-.*\.js" if full_plotly else "",
                    meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}])
    app.layout = html.Div(className="wl-app", children=[
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="lam", data=lam, storage_type="session"),
        dcc.Store(id="view", data=urlstate.ViewState(eta=lam).to_dict()),
        dcc.Store(id="zoom"),  # the last chart zoom, [start, end] (register_url_sync)
        dcc.Interval(id="tick", interval=int(refresh_s * 1000)),
        components.header(views.DEFAULT_RANGE),
        components.filter_bar(),
        html.Div(id="banners"),
        html.Main(id="page", className="wl-main"),
        html.Footer("wattlens · useful work per joule · all times UTC · "
                    "Prometheus /metrics on every agent", className="wl-footer"),
    ])

    @app.callback(Output("page", "children"), Input("url", "pathname"), State("lam", "data"),
                  State("url", "search"))
    def route(pathname: str | None, lam_now: float | None, search: str | None) -> Any:
        eta = lam_now if lam_now is not None else lam
        if search and "eta=" in search:  # a shared link's η wins over this tab's last one
            try:
                eta = urlstate.parse(search).eta
            except ValueError:
                pass  # the URL error line says what is wrong
        return page_for(pathname or "/", deps, eta)

    @app.callback(Output("banners", "children"), Output("freshness", "children"),
                  Output("nav", "children"),
                  Input("tick", "n_intervals"), Input("range", "value"), Input("url", "pathname"),
                  Input("url", "search"))
    def header_status(_n: int | None, range_key: str, pathname: str | None,
                      search: str | None) -> tuple[Any, ...]:
        st = views.status(reader, range_key, time.time_ns())
        return (components.banners(st), components.freshness(st),
                components.nav_links(pathname or "/", st.firing, search or ""))

    register_url_sync(app, reader)
    for page in (fleet, jobs, tradeoff, carbon, recommendations, alerts, gpus, autopilot):
        page.register(app, deps)  # type: ignore[attr-defined]
    if auth_token:
        from dashboard.auth import install

        install(app.server, auth_token)
    app._wattlens_deps = deps  # type: ignore[attr-defined]  # for tests and the benchmark
    if prewarm and cache:
        quiet = Quiet()
        app.server.before_request(quiet.begin)
        app.server.teardown_request(quiet.end)
        threading.Thread(target=_prewarm, args=(deps, quiet), name="wattlens-prewarm",
                         daemon=True).start()
    return app


class Quiet:
    """How many requests the server is answering, and since when none: the prewarm's slower part
    waits for a pause, so it does not share the two cores with a first visitor's callbacks."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0
        self._since = time.monotonic()

    def begin(self) -> None:
        from flask import g

        g.wattlens_counted = True  # a request an earlier hook answered (a 401) was not counted
        with self._cond:
            self._busy += 1

    def end(self, _exc: BaseException | None = None) -> None:
        from flask import g

        if not g.pop("wattlens_counted", False):
            return
        with self._cond:
            self._busy -= 1
            self._since = time.monotonic()
            self._cond.notify_all()

    def wait(self, pause_s: float, limit_s: float) -> bool:
        """Wait until no request has been answered for ``pause_s`` (at most ``limit_s``); True
        if such a pause came."""
        deadline = time.monotonic() + limit_s
        with self._cond:
            while True:
                now = time.monotonic()
                idle = 0.0 if self._busy else now - self._since
                if idle >= pause_s:
                    return True
                if now >= deadline:
                    return False
                self._cond.wait(min(deadline - now, pause_s - idle))  # woken when one ends


def _import_numpy_now() -> None:
    """Import numpy (when installed) before any request. plotly imports it on its first figure;
    from several callback threads at once one of them saw it half-initialised ("partially
    initialized module 'numpy' has no attribute 'ndarray'") and that callback failed: a first
    page load with an empty chart."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        pass  # plotly then never imports it either


PICKED = urlstate.FILTER_KEYS  # every filter has a picker in the filter bar


def _filter_options(store: Store, state: urlstate.ViewState) -> list[Any]:
    """The picks for each filter over the state's range, then the job picker's placeholder. A
    value from a link is always among them (a picker drops a value missing from its options).
    A range with many jobs lists the largest (:func:`views.job_picks`); typing finds the rest."""
    try:
        found, placeholder = views.filter_options(store, views.range_window(store, state.range),
                                                  state.job)
    except ValueError:
        found, placeholder = {k: [] for k in PICKED}, "all"
    out: list[Any] = []
    for k in PICKED:
        values = list(found.get(k, []))
        if getattr(state, k) and getattr(state, k) not in values:
            values.insert(0, getattr(state, k))
        out.append(_options(values))
    out.append(placeholder)
    return out


def _options(values: list[str]) -> list[dict[str, str]]:
    return [{"label": v, "value": v} for v in values]


def register_url_sync(app: dash.Dash, store: Store) -> None:
    """Keep the URL query, the range picker, the filters and η in step, both ways: a link opens
    the view it names, and every change of the view rewrites the link (docs/dashboard.md)."""

    @app.callback(Output("url", "search"), Output("range", "value"), Output("range", "options"),
                  Output("lam", "data", allow_duplicate=True), Output("view", "data"),
                  Output("url-error", "children"),
                  *(Output(f"filter-{k}", "value") for k in urlstate.FILTER_KEYS),
                  *(Output(f"filter-{k}", "options") for k in PICKED),
                  Output("filter-job", "placeholder"),
                  Input("url", "search"), Input("range", "value"), Input("lam", "data"),
                  *(Input(f"filter-{k}", "value") for k in urlstate.FILTER_KEYS),
                  State("view", "data"), prevent_initial_call="initial_duplicate")
    def sync(search: str | None, range_key: str | None, lam_now: float | None,
             *rest: Any) -> tuple[Any, ...]:
        picked, current = rest[:-1], urlstate.from_dict(rest[-1])
        # Until the URL has been read once (a fresh load), the URL wins over whatever fired:
        # a tab's stored η arriving first must not overwrite a link's view.
        from_url = ctx.triggered_id in (None, "url") or not (rest[-1] or {}).get("loaded")
        error: Any = ""
        if from_url and search:
            try:
                state = urlstate.parse(search)
            except ValueError as exc:
                state, error = current, f"This link has a bad parameter, ignored: {exc}"
        elif from_url:
            state = current  # a bare page link (the menu): keep the view, write it into the URL
        else:
            fields = dict(zip(urlstate.FILTER_KEYS, (str(v or "") for v in picked), strict=True))
            state = urlstate.ViewState(range=range_key or current.range,
                                       eta=float(lam_now if lam_now is not None else current.eta),
                                       **fields)
        new_search = urlstate.to_search(state)

        def changed(new: Any, old: Any) -> Any:  # an unchanged value must not refire the pages
            return new if new != old else no_update
        return (changed(new_search, search), changed(state.range, range_key),
                components.range_options(state.range), changed(state.eta, lam_now),
                {**state.to_dict(), "loaded": True}, error,
                *(changed(getattr(state, k) or None, v or None)
                  for k, v in zip(urlstate.FILTER_KEYS, picked, strict=True)),
                *_filter_options(store, state))

    @app.callback(Output("filter-job", "options", allow_duplicate=True),
                  Input("filter-job", "search_value"), State("filter-job", "value"),
                  State("view", "data"), prevent_initial_call=True)
    def find_jobs(search: str | None, value: str | None, view: dict[str, Any] | None) -> Any:
        """What is typed into the job picker searches every job of the range, not only those
        listed (a range with more jobs than the picker lists)."""
        if search is None:
            return no_update
        try:
            window = views.range_window(store, urlstate.from_dict(view).range)
        except ValueError:
            return no_update
        return _options(views.job_picks(store, window, search, value)[0])

    # A zoom is caught in the browser and kept in the "zoom" store; only a new zoom reaches the
    # server. dcc.Graph follows a zoom with its own {'autosize': True} relayout (it re-plots the
    # zoomed figure); a server callback on relayoutData was re-requested by that follow-up while
    # the zoom's request was in flight, Dash dropped the in-flight result, and the follow-up
    # answered no_update: the zoom was lost whenever the server was slower than the re-plot.
    for graph_id in ZOOM_GRAPHS:
        app.clientside_callback(ZOOM_JS, Output("zoom", "data", allow_duplicate=True),
                                Input(graph_id, "relayoutData"), State(graph_id, "figure"),
                                State("zoom", "data"), prevent_initial_call=True)
    app.callback(Output("range", "value", allow_duplicate=True), Input("zoom", "data"),
                 prevent_initial_call=True)(zoom_to_range)
    app.callback(Output("range", "value", allow_duplicate=True),
                 Output("url-error", "children", allow_duplicate=True),
                 Input("range-apply", "n_clicks"), Input("range-start", "n_submit"),
                 Input("range-end", "n_submit"), State("range-start", "value"),
                 State("range-end", "value"), prevent_initial_call=True)(custom_range_applied)
    app.callback(Output("range-start", "value"), Output("range-end", "value"),
                 Input("range", "value"))(urlstate.range_fields)


def custom_range_applied(_n: int | None, _s: int | None, _e: int | None, start: str | None,
                         end: str | None) -> tuple[Any, Any]:
    """The filter bar's "from" and "to" become the page's range (START..END, as a zoom); a bad
    field is one red line naming it, and the range stays."""
    try:
        return urlstate.range_from_fields(start, end), ""
    except ValueError as exc:
        return no_update, f"Custom range not applied: {exc}"


# Every chart with a time x axis: a drag on it sets the page's range. (The Trade-off charts have
# none: GPU-seconds and joules per unit of work, cost against the cap.)
ZOOM_GRAPHS = ("fleet-power", *(f"gpus-{f}" for f in gpus.CHARTS), "job-graph", "carbon-intensity",
               "alerts-timeline", "autopilot-timeline")

# [start, end] of a zoom on any x axis (xaxis, or xaxis2.. of a chart with subplots sharing time):
# from the relayout itself, or, for the follow-up relayout that reports only `autosize`, from the
# zoomed axis dcc.Graph writes back into its figure.
ZOOM_JS = """
function (relayout, figure, last) {
    const r = relayout || {};
    let a, b;
    for (const k of Object.keys(r)) {
        const m = k.match(/^(xaxis\\d*)\\.range(\\[0\\])?$/);
        if (!m) { continue; }
        if (m[2]) { [a, b] = [r[k], r[m[1] + '.range[1]']]; } else if (Array.isArray(r[k])) { [a, b] = r[k]; }
        break;
    }
    if (a === undefined && r.autosize) {
        const layout = (figure || {}).layout || {};
        for (const k of Object.keys(layout).filter(k => /^xaxis\\d*$/.test(k)).sort()) {
            const x = layout[k] || {};
            if (x.autorange === false && Array.isArray(x.range)) { [a, b] = x.range; break; }
        }
    }
    if (typeof a !== 'string' || typeof b !== 'string') { return window.dash_clientside.no_update; }
    if (Array.isArray(last) && last[0] === a && last[1] === b) { return window.dash_clientside.no_update; }
    return [a, b];
}
"""


def zoom_to_range(zoom: list[Any] | None) -> Any:
    """A zoom on a time chart's x axis ([start, end] from ZOOM_JS) becomes the page's time range
    (START..END, to the second)."""
    a, b = zoom if isinstance(zoom, list) and len(zoom) == 2 else (None, None)
    if not (isinstance(a, str) and isinstance(b, str)):
        return no_update  # autoscale, a y-only zoom or a legend click: the range stays
    try:
        key = f"{a.replace(' ', 'T')[:19]}..{b.replace(' ', 'T')[:19]}"
        views.custom_range(key)
    except ValueError:
        return no_update
    return key


PREWARM_PAUSE_S = 1.0  # the analysis pages are warmed once the server has been idle this long
PREWARM_WAIT_S = 30.0  # ... or after this, busy or not


def _prewarm(deps: Deps, quiet: Quiet) -> None:
    t0 = time.perf_counter()
    try:
        if views.data_end_ns(deps.store) is None:
            return  # nothing collected yet
        views.fleet_view(deps.store, views.DEFAULT_RANGE, "host", deps.settings)
        views.status(deps.store, views.DEFAULT_RANGE, time.time_ns())
        # the filter bar's picks: every page's first callback reads them (register_url_sync)
        views.filter_options(deps.store, views.range_window(deps.store, views.DEFAULT_RANGE), "")
        log.info("dashboard: Fleet page warm in %.1f s", time.perf_counter() - t0)
        quiet.wait(PREWARM_PAUSE_S, PREWARM_WAIT_S)  # a first visitor's callbacks need the cores
        deps.memo.get(deps.store, views.DEFAULT_RANGE)
        log.info("dashboard: analysis pages warm in %.1f s", time.perf_counter() - t0)
        views.health_view(deps.store, views.window_for(deps.store, views.DEFAULT_RANGE))
        log.info("dashboard: GPU health page warm in %.1f s", time.perf_counter() - t0)
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
    if path == "/gpus":
        return gpus.layout()
    if path == "/autopilot":
        return autopilot.layout()
    return components.empty_state("Page not found", [
        f"There is no page at {pathname}. ", dcc.Link("Go to the fleet overview", href="/")],
        id="not-found")
