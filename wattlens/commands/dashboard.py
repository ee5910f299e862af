"""`wattlens dashboard`: serve the Dash app over a store."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from wattlens.config import default_store_url, option, port_number, positive_float

log = logging.getLogger("wattlens.dashboard")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="serve the web dashboard over a store",
                       description="Serve the wattlens dashboard on http://127.0.0.1:PORT.")
    add_dashboard_options(p)
    option(p, "--store", default=default_store_url(), help="store URL to read")
    p.add_argument("--config", help="TOML config file; settings under [dashboard]")
    p.set_defaults(func=run, _parser=p, _section="dashboard")


def add_dashboard_options(p: argparse.ArgumentParser) -> None:
    option(p, "--port", type=port_number, default=8050, help="dashboard port")
    option(p, "--dashboard-bind", default="127.0.0.1",
           help="address the dashboard listens on")
    option(p, "--refresh", type=positive_float, default=10.0,
           help="live refresh interval of the pages, seconds")


def serve_until_signal(app: object, bind: str, port: int, on_start: str = "") -> None:
    """Serve ``app`` until SIGINT/SIGTERM; returns after a clean shutdown."""
    from dashboard.server import DashboardServer

    server = DashboardServer(app, bind, port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.start()
    print(f"{on_start}dashboard: {server.url}  (Ctrl-C to stop)", flush=True)
    stop.wait()
    server.stop()


def run(args: argparse.Namespace) -> int:
    from collector.store import open_store, redact_url
    from dashboard.app import create_app

    store = open_store(args.store)
    log.info("reading %s", redact_url(store.url))
    app = create_app(store, refresh_s=args.refresh)
    serve_until_signal(app, args.dashboard_bind, args.port)
    store.close()
    return 0
