"""`wattlens dashboard`: serve the Dash app over a store, on loopback unless told otherwise (then with a token)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

from collector.auth import MIN_TOKEN_CHARS
from wattlens.config import default_store_url, option, parse_bool, port_number, positive_float

log = logging.getLogger("wattlens.dashboard")

TOKEN_ENV = "WATTLENS_DASHBOARD_TOKEN"  # noqa: S105 - the name of the variable, not a secret
AGENT_TOKEN_ENV = "WATTLENS_AGENT_TOKEN"  # noqa: S105 - a variable name
AUTH_MODES = ("auto", "token", "none")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="serve the web dashboard over a store",
                       description="Serve the wattlens dashboard (fleet, jobs, trade-off, carbon, "
                                   "recommendations, alerts) on http://127.0.0.1:PORT. Binding any "
                                   f"other address needs {TOKEN_ENV}. See docs/dashboard.md.")
    add_dashboard_options(p)
    option(p, "--store", default=default_store_url(), help="store URL to read")
    option(p, "--tradeoff-weight", "--lambda", dest="lambda", type=_unit_lambda, default=0.5,
           help="initial trade-off weight η in [0, 1] (1 minimises energy, 0 time; --lambda is "
                "its old name)")
    option(p, "--enable-actuation", action="store_true", default=False,
           help=f"show 'apply' on power-cap recommendations; needs {AGENT_TOKEN_ENV} and agents "
                "started with --enable-actuation")
    option(p, "--agent-url", default="http://{host}:9464",
           help="each node's agent, {host} is replaced by the host tag")
    from wattlens.commands.report import add_carbon_cost_options

    add_carbon_cost_options(p)
    p.add_argument("--config", help="TOML config file; settings under [dashboard]")
    p.set_defaults(func=run, _parser=p, _section="dashboard")


def add_dashboard_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `dashboard` and `demo`."""
    option(p, "--port", type=port_number, default=8050, help="dashboard port")
    option(p, "--dashboard-bind", default="127.0.0.1",
           help=f"address the dashboard listens on; anything but loopback needs {TOKEN_ENV}")
    option(p, "--refresh", type=positive_float, default=10.0,
           help="live refresh interval of the pages, seconds")
    option(p, "--auth", default="auto",
           help=f"auto: require {TOKEN_ENV} when it is set; token: always require it; "
                "none: no authentication (loopback only)")


def _unit_lambda(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def resolve_auth(bind: str, mode: str, env: dict[str, str] | None = None) -> str | None:
    """The token the dashboard must require, or None; ConfigError when the combination is unsafe.

    A dashboard reachable from other machines (any non-loopback bind) refuses
    to start without a token. The token itself never appears in a message.
    """
    from collector.errors import ConfigError
    from dashboard.auth import is_loopback

    environ = os.environ if env is None else env
    if mode not in AUTH_MODES:
        raise ConfigError(f"--auth: expected one of {', '.join(AUTH_MODES)}, got {mode!r}")
    token = (environ.get(TOKEN_ENV) or "").strip()
    loopback = is_loopback(bind)
    if mode == "none":
        if not loopback:
            raise ConfigError(f"--dashboard-bind {bind}: --auth none is only allowed on a loopback "
                              f"address (127.0.0.1); set {TOKEN_ENV} and use --auth token")
        return None
    if mode == "token" and not token:
        raise ConfigError(f"--auth token: {TOKEN_ENV} is not set; export it from your secret store "
                          f"(never pass it as a flag)")
    if not loopback and not token:
        raise ConfigError(f"--dashboard-bind {bind}: the dashboard would be reachable from other "
                          f"machines without authentication; set {TOKEN_ENV} (the password for "
                          f"HTTP basic auth, or a bearer token) or bind 127.0.0.1")
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{TOKEN_ENV}: must be at least {MIN_TOKEN_CHARS} characters, got "
                          f"{len(token)}")
    return token or None


def check_port_free(bind: str, port: int) -> None:
    """ConfigError naming --port when ``bind:port`` cannot be listened on; checked before long work."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug's server does
        try:
            probe.bind((bind, port))
        except OSError as exc:
            from collector.errors import ConfigError

            raise ConfigError(f"--port: cannot serve on {bind}:{port}: {exc.strerror}; choose "
                              f"another port with --port") from None


def serve_until_signal(app: Any, bind: str, port: int, on_start: str = "", auth: str = "auto") -> None:
    """Serve ``app`` until SIGINT/SIGTERM; returns after a clean shutdown.

    Checks the bind address against the token first (see :func:`resolve_auth`)
    and installs token authentication on the app when a token is set.
    """
    from dashboard.server import DashboardServer

    token = resolve_auth(bind, auth)
    if token:
        from dashboard.auth import install

        install(app.server, token)
        log.info("dashboard: token required (HTTP basic auth password, or Authorization: Bearer)")
    try:
        server = DashboardServer(app, bind, port)
    except OSError as exc:
        from collector.errors import ConfigError

        raise ConfigError(f"--port: cannot serve on {bind}:{port}: {exc.strerror}; "
                          f"choose another port with --port") from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from wattlens.runtime import settle

    settle()  # the app, its layouts and the store live as long as the server
    server.start()
    from dashboard.auth import is_loopback

    if not is_loopback(bind):
        log.warning("dashboard: listening on %s:%d, reachable from other machines (token auth on)",
                    bind, server.port)
    print(f"{on_start}dashboard: {server.url}  (Ctrl-C to stop)", flush=True)
    stop.wait()
    server.stop()


def build_actuation(args: argparse.Namespace) -> Any:
    """The agent client when --enable-actuation is given; ConfigError without the agent token."""
    if not parse_bool(str(args.enable_actuation)):
        return None
    from collector.errors import ConfigError
    from dashboard.actuation import AgentClient

    token = (os.environ.get(AGENT_TOKEN_ENV) or "").strip()
    if not token:
        raise ConfigError(f"--enable-actuation: {AGENT_TOKEN_ENV} is not set; the agents refuse "
                          f"power-cap changes without their token")
    try:
        client = AgentClient(str(args.agent_url), token)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    log.warning("dashboard: actuation enabled: 'apply' sends power caps to the agents at %s",
                args.agent_url)
    return client


def run(args: argparse.Namespace) -> int:
    from collector.store import open_store, redact_url
    from dashboard.app import create_app
    from wattlens.commands.report import build_settings

    resolve_auth(args.dashboard_bind, args.auth)  # fail before opening anything
    settings = build_settings(args)
    actuation = build_actuation(args)
    store = open_store(args.store)
    log.info("reading %s", redact_url(store.url))
    app = create_app(store, refresh_s=args.refresh, settings=settings, actuation=actuation,
                     lam=float(getattr(args, "lambda")), prewarm=True)
    try:
        serve_until_signal(app, args.dashboard_bind, args.port, auth=args.auth)
    finally:
        store.close()
    return 0
