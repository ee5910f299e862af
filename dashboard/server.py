"""Serve the Dash (Flask) app with waitress, gzip-compressed, stopping cleanly when asked."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from waitress.server import create_server

from collector import http_server

log = logging.getLogger("wattlens.dashboard")

COMPRESSIBLE = ("text/", "application/json", "application/javascript", "image/svg+xml")
MIN_COMPRESS_BYTES = 1024
# Dash's component bundles have versioned URLs: their compressed bytes are kept, not redone.
CACHEABLE_PREFIXES = ("/_dash-component-suites/", "/assets/")
CACHE_ENTRIES = 64

StartResponse = Callable[..., Any]


class GzipMiddleware:
    """Compress responses for clients that accept gzip: text, JSON and JavaScript above 1 KiB.

    Dash's versioned bundles and assets are compressed once and cached (bounded);
    callback answers are compressed per request at a fast level. A browser keeps what it
    loaded: an asset whose URL carries its file's time (``?m=``) for a year, and Dash's
    unversioned chunks (``async-graph.js``) by their ETag, which a compressed answer keeps
    as a weak one (so a revisit gets 304, and the browser's compiled code stays usable).
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._cache: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if "gzip" not in str(environ.get("HTTP_ACCEPT_ENCODING", "")).lower():
            return self.app(environ, start_response)
        if "HTTP_IF_NONE_MATCH" in environ:  # our weak tag of a compressed body: the app's tag
            environ["HTTP_IF_NONE_MATCH"] = environ["HTTP_IF_NONE_MATCH"].replace("W/", "")
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None  # the legacy write() callable; Flask does not use it

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        status: str = captured["status"]
        headers: list[tuple[str, str]] = captured["headers"]
        names = {k.lower(): v for k, v in headers}
        if (not status.startswith("200") or len(body) < MIN_COMPRESS_BYTES
                or "content-encoding" in names
                or not names.get("content-type", "").startswith(COMPRESSIBLE)):
            start_response(status, headers)
            return [body]
        path, query = str(environ.get("PATH_INFO", "")), str(environ.get("QUERY_STRING", ""))
        packed = self._compress(f"{path}?{query}", body, cache=path.startswith(CACHEABLE_PREFIXES))
        out = [(k, v) for k, v in headers if k.lower() not in ("content-length", "etag")]
        if "etag" in names:
            out.append(("ETag", "W/" + names["etag"].removeprefix("W/")))
        if path.startswith("/assets/") and query.startswith("m="):  # the URL changes with the file
            out = [(k, v) for k, v in out if k.lower() != "cache-control"]
            out.append(("Cache-Control", "public, max-age=31536000, immutable"))
        out += [("Content-Encoding", "gzip"), ("Content-Length", str(len(packed))),
                ("Vary", "Accept-Encoding")]
        start_response(status, out)
        return [packed]

    def _compress(self, key: str, body: bytes, *, cache: bool) -> bytes:
        if not cache:
            return gzip.compress(body, compresslevel=5, mtime=0)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == len(body):
                self._cache.move_to_end(key)
                return hit[1]
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        with self._lock:
            self._cache[key] = (len(body), packed)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return packed


class DashboardServer:
    """waitress serving the dashboard; ``start`` returns, ``stop`` shuts it down.

    Same limits as the agent (collector.http_server): backlog 1024, idle
    connections closed after 30 s, bounded connections and threads, request
    bodies above 1 MiB refused before they are read.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8050, *,
                 threads: int = 8, channel_timeout_s: int = 30, connection_limit: int = 4096) -> None:
        self.host = "127.0.0.1" if host == "localhost" else host
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        wsgi = GzipMiddleware(getattr(app, "server", app))
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._server = create_server(
            wsgi, sockets=[sock], threads=threads, backlog=1024,
            connection_limit=http_server.connection_limit(connection_limit),
            channel_timeout=channel_timeout_s, cleanup_interval=max(1, channel_timeout_s // 2),
            max_request_header_size=16 * 1024, max_request_body_size=1024 * 1024,
            asyncore_use_poll=True, ident="wattlens", expose_tracebacks=False)
        http_server.deadline_requests(self._server, channel_timeout_s)
        self._thread = threading.Thread(target=self._server.run, name="wattlens-dashboard",
                                        daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`stop` (from another thread or a signal handler)."""
        self._server.run()

    def stop(self) -> None:
        self._server.task_dispatcher.shutdown(timeout=5)
        self._server.asyncore.close_all(self._server._map)
        if self._thread.is_alive():
            self._thread.join(10)
