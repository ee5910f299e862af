"""Serve the Dash (Flask) app with waitress, gzip-compressed, stopping cleanly when asked."""

from __future__ import annotations

import gzip
import logging
import re
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
# The scripts and styles a Dash page loads (the href of its CSS links, the src of its scripts).
STATIC_REF = re.compile(r'(?:src|href)="(/[^"?]+\.(?:js|css)(?:\?[^"]*)?)"')

StartResponse = Callable[..., Any]


class GzipMiddleware:
    """Compress responses for clients that accept gzip: text, JSON and JavaScript above 1 KiB.

    Dash's versioned bundles and assets are compressed once and cached (bounded);
    callback answers are compressed per request at a fast level. A browser keeps what it
    loaded: an asset whose URL carries its file's time (``?m=``) for a year, as Dash keeps its
    versioned bundles (a reload still revalidates), and Dash's unversioned chunks
    (``async-graph.js``) by their ETag, weak for a client that accepts gzip, on 200s and 304s
    alike (so a revisit gets 304, and the browser's compiled code stays usable).
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._cache: OrderedDict[str, tuple[tuple[int, str], bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, query = str(environ.get("PATH_INFO", "")), str(environ.get("QUERY_STRING", ""))
        gzip_ok = "gzip" in str(environ.get("HTTP_ACCEPT_ENCODING", "")).lower()
        asked = str(environ.get("HTTP_IF_NONE_MATCH", ""))
        if asked:  # our weak tag of the app's strong one: the app's
            environ["HTTP_IF_NONE_MATCH"] = asked.replace("W/", "")
        if not gzip_ok:
            def plain(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                return start_response(status, _cache_headers(
                    path, query, _matched(status, headers, asked), weak=False), exc_info)

            return self.app(environ, plain)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None  # the legacy write() callable; Flask does not use it

        body = _drain(self.app(environ, capture))
        status: str = captured["status"]
        headers = _cache_headers(path, query, _matched(status, captured["headers"], asked),
                                 weak=True)
        names = {k.lower(): v for k, v in headers}
        if (not status.startswith("200") or len(body) < MIN_COMPRESS_BYTES
                or "content-encoding" in names
                or not names.get("content-type", "").startswith(COMPRESSIBLE)):
            start_response(status, headers)
            return [body]
        packed = self._compress(f"{path}?{query}", body, names.get("etag", ""),
                                cache=path.startswith(CACHEABLE_PREFIXES))
        out = [(k, v) for k, v in _vary(headers) if k.lower() != "content-length"]
        out += [("Content-Encoding", "gzip"), ("Content-Length", str(len(packed)))]
        start_response(status, out)
        return [packed]

    def holds(self, target: str) -> bool:
        """Whether the compressed copy of ``target`` (a path, with its query if any) is kept."""
        with self._lock:
            return (target if "?" in target else f"{target}?") in self._cache

    def _compress(self, key: str, body: bytes, etag: str, *, cache: bool) -> bytes:
        if not cache:
            return gzip.compress(body, compresslevel=5, mtime=0)
        same = (len(body), etag)  # an edited file of the same length has another ETag
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == same:
                self._cache.move_to_end(key)
                return hit[1]
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        with self._lock:
            self._cache[key] = (same, packed)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return packed


def _drain(chunks: Iterable[bytes]) -> bytes:
    """A WSGI answer's body, its iterable closed after (PEP 3333)."""
    try:
        return b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()


def _cache_headers(path: str, query: str, headers: list[tuple[str, str]], *,
                   weak: bool) -> list[tuple[str, str]]:
    """The app's headers, for any answer (200, 304, HEAD) of a path a browser may keep: its ETag
    weak where a compressed copy may be what the client holds, a year's freshness for an asset
    whose URL names its file's time, and ``Accept-Encoding`` in its Vary."""
    if not path.startswith(CACHEABLE_PREFIXES):
        return headers
    out = []
    for k, v in headers:
        if k.lower() == "etag" and weak:
            v = "W/" + v.removeprefix("W/")
        elif k.lower() == "cache-control":
            continue
        out.append((k, v))
    cache = next((v for k, v in headers if k.lower() == "cache-control"), None)
    if path.startswith("/assets/") and query.startswith("m="):  # the URL changes with the file
        cache = "public, max-age=31536000"
    if cache is not None:
        out.append(("Cache-Control", cache))
    return _vary(out)


def _matched(status: str, headers: list[tuple[str, str]], asked: str) -> list[tuple[str, str]]:
    """A 304 names the tag the client holds (RFC 9110 15.4.5); Dash's carries none, so the one
    the client asked with, which matched, is added."""
    if (status.startswith("304") and asked and "," not in asked
            and not any(k.lower() == "etag" for k, _v in headers)):
        return [*headers, ("ETag", asked.strip())]
    return headers


def _vary(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers with ``Accept-Encoding`` in their Vary (once, whatever else it names)."""
    names = [n.strip() for k, v in headers if k.lower() == "vary" for n in v.split(",") if n.strip()]
    if "accept-encoding" not in (n.lower() for n in names):
        names.append("Accept-Encoding")
    return [(k, v) for k, v in headers if k.lower() != "vary"] + [("Vary", ", ".join(names))]


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
        wsgi = self.gzip = GzipMiddleware(getattr(app, "server", app))
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
        """Serve on a thread, and compress the page's scripts on another (:meth:`warm`)."""
        self._thread.start()
        self._warm_in_background()

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`stop` (from another thread or a signal handler)."""
        self._warm_in_background()
        self._server.run()

    def _warm_in_background(self) -> None:
        threading.Thread(target=self.warm, name="wattlens-dashboard-warm", daemon=True).start()

    def warm(self) -> int:
        """Ask the app for the page and every script and style it loads, as a browser accepting
        gzip would, so they are compressed before the first visitor comes (plotly.js at gzip
        level 9 held a fresh server's first page load 0.15-0.3 s). Returns how many it compressed.
        """
        done = 0
        for src in dict.fromkeys(STATIC_REF.findall(self._page())):
            try:
                done += self._ask(src, gzip=True)[:2] == b"\x1f\x8b"
            except Exception as exc:  # only a first load's speed depends on it
                log.info("dashboard: could not compress %s ahead: %s", src, exc)
        return done

    def _page(self) -> str:
        try:
            return self._ask("/", gzip=False).decode("utf-8", "replace")
        except Exception as exc:
            log.info("dashboard: could not read the page to compress its scripts ahead: %s", exc)
            return ""

    def _ask(self, path: str, *, gzip: bool) -> bytes:
        """The body of a GET of ``path`` through the app and the middleware, in this process;
        empty unless it answers 200."""
        from werkzeug.test import EnvironBuilder

        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        token = getattr(self.gzip.app, "extensions", {}).get("wattlens.token")  # dashboard.auth
        if token:
            headers["Authorization"] = f"Bearer {token}"
        environ = EnvironBuilder(path=path, headers=list(headers.items()),
                                 environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
        status: list[str] = []
        body = _drain(self.gzip(environ, lambda s, _h, _e=None: status.append(s)))
        return body if status and status[0].startswith("200") else b""

    def stop(self) -> None:
        self._server.task_dispatcher.shutdown(timeout=5)
        self._server.asyncore.close_all(self._server._map)
        if self._thread.is_alive():
            self._thread.join(10)
