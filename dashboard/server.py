"""Serve a Dash (Flask) app on a werkzeug server that stops cleanly when asked."""

from __future__ import annotations

import logging
import threading
from typing import Any

from werkzeug.serving import make_server

log = logging.getLogger("wattlens.dashboard")


class DashboardServer:
    """A threaded HTTP server for the dashboard; ``start`` returns, ``stop`` shuts it down."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8050) -> None:
        self._server = make_server(host, port, app.server, threaded=True)
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="wattlens-dashboard", daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)
