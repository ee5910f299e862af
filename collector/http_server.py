"""The agent's HTTP server: a route table served by waitress, on TCP and optionally a Unix socket.

waitress parses HTTP (chunked bodies, one Content-Length or a 400), refuses bodies
above the limit before reading them, closes idle connections after a timeout, and
runs handlers on a small fixed thread pool while one event loop holds the
connections (see docs/decisions.md, "HTTP server"). This module adds the routes,
the token rule for other hosts (collector.auth) and, on the Unix socket, the
poster's credentials (SO_PEERCRED) for the handlers.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import WSGITask

from collector.auth import check_request, check_token

log = logging.getLogger("wattlens.http")

# Server limits (docs/decisions.md): generous for Prometheus and job clients, bounded for attackers.
BACKLOG = 1024
CONNECTION_LIMIT = 4096
THREADS = 4
CHANNEL_TIMEOUT_S = 30.0
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a Unix-socket connection, from the kernel (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Request:
    """What a route handler gets: path parameters from ``{name}`` segments, query, headers, body.

    ``peer`` is set for requests over the Unix socket, None over TCP.
    """

    method: str
    path: str
    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    client: str
    peer: Peer | None = None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def peer_of(sock: socket.socket) -> Peer | None:
    """The kernel's credentials of a Unix-socket peer; None where SO_PEERCRED does not exist."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None or sock.family != getattr(socket, "AF_UNIX", None):
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class _Channel(HTTPChannel):  # type: ignore[misc]
    """Notes when each request starts to arrive, so one that trickles in can be cut off."""

    wattlens_started = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:  # the first bytes of a new request
            self.wattlens_started = time.time()  # waitress's own activity clock
        return bool(super().received(data))


def deadline_requests(server: Any, deadline_s: float) -> None:
    """Make ``server`` close any connection whose request has not arrived whole within
    ``deadline_s`` of its first byte: waitress's own timeout only counts silence, so a client
    sending a header line every few seconds (slowloris) would otherwise be kept forever."""
    servers = getattr(server, "map", None)
    targets = [s for s in servers.values() if hasattr(s, "maintenance")] if servers else [server]
    for target in targets:
        if target.channel_class is HTTPChannel:
            target.channel_class = _Channel
        waitress_maintenance = target.maintenance

        def maintenance(now: float, _target: Any = target, _inner: Any = waitress_maintenance) -> None:
            _inner(now)
            cutoff = now - deadline_s
            for channel in list(_target.active_channels.values()):
                if channel.request is not None and getattr(channel, "wattlens_started", now) < cutoff:
                    channel.will_close = True

        target.maintenance = maintenance


class _PeerTask(WSGITask):
    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ["wattlens.peer"] = getattr(self.channel, "wattlens_peer", None)
        return environ


class _PeerChannel(_Channel):
    task_class = _PeerTask

    def __init__(self, server: Any, sock: socket.socket, addr: Any, adj: Any, map: Any = None) -> None:
        self.wattlens_peer = peer_of(sock)
        super().__init__(server, sock, addr, adj, map)


class RouteServer:
    """A route table served by waitress; routes may be added before or after start.

    Patterns are paths with ``{name}`` segments, e.g. ``/v1/jobs/{id}/progress``;
    the handler receives them in ``request.params``. Unknown paths answer 404,
    known paths with another method 405, bodies above ``max_body_bytes`` 413
    (before they are read). Requests from other hosts need the bearer token.
    ``unix_socket`` adds a Unix-socket listener (mode 0666; handlers see ``request.peer``);
    with ``unix_optional`` one that cannot be bound is logged and skipped.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 max_body_bytes: int = MAX_BODY_BYTES, token: str | None = None,
                 unix_socket: str | Path | None = None, channel_timeout_s: float = CHANNEL_TIMEOUT_S,
                 connection_limit: int = CONNECTION_LIMIT, threads: int = THREADS,
                 unix_optional: bool = False) -> None:
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.unix_socket = Path(unix_socket) if unix_socket else None
        self.unix_optional = unix_optional  # a socket that cannot be bound is skipped, not fatal
        self.channel_timeout_s = channel_timeout_s
        self.connection_limit = connection_limit
        self.threads = threads
        self._token = check_token(token or None)
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._servers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._bound_unix: Path | None = None

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.compile(
            "".join(f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") and part.endswith("}")
                    else re.escape(part) for part in re.split(r"(\{[A-Za-z_]\w*\})", pattern)))
        self._routes.append((method.upper(), regex, handler))

    def dispatch(self, request_line: tuple[str, str], make: Callable[[dict[str, str]], Request]
                 ) -> Response:
        method, path = request_line
        allowed: list[str] = []
        for m, regex, handler in self._routes:
            match = regex.fullmatch(path)
            if match is None:
                continue
            if m != method and not (method == "HEAD" and m == "GET"):
                allowed.append(m)
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            try:
                return handler(make(params))
            except Exception:
                log.exception("HTTP %s %s failed", method, path[:200])
                return Response(500, b"internal error; see the agent's log\n")
        if allowed:
            return Response(405, f"method {method[:16]} not allowed; use {', '.join(allowed)}\n"
                            .encode(), headers={"Allow": ", ".join(sorted(set(allowed)))})
        return Response(404, f"no such path: {path[:200]}\n".encode())

    # --- WSGI ---------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        # Routes match the raw path, so an encoded "/" stays inside its {param}.
        raw = str(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/")
        path = urlsplit(raw).path or "/"
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items()
                   if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        peer: Peer | None = environ.get("wattlens.peer")
        client = "unix" if peer is not None else str(environ.get("REMOTE_ADDR", ""))
        resp = self._answer(environ, method, path, headers, peer, client)
        reason = HTTPStatus(resp.status).phrase if resp.status in HTTPStatus._value2member_map_ else ""
        out = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body))),
               *resp.headers.items()]
        start_response(f"{resp.status} {reason}", out)
        return [b"" if method == "HEAD" else resp.body]

    def _answer(self, environ: Mapping[str, Any], method: str, path: str,
                headers: dict[str, str], peer: Peer | None, client: str) -> Response:
        if peer is None:
            denied = check_request(client, headers.get("authorization"), self._token,
                                   what="this agent")
            if denied is not None:
                return Response(denied.status, (denied.message + "\n").encode(),
                                headers={"WWW-Authenticate": "Bearer"} if denied.status == 401 else {})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return Response(400, b"Content-Length: not a non-negative integer\n")
        if length > self.max_body_bytes:  # waitress refuses these first; kept for direct callers
            return Response(413, f"body of {length} bytes is above the limit of "
                                 f"{self.max_body_bytes}\n".encode())
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        query = parse_qs(str(environ.get("QUERY_STRING", "")))

        def make(params: dict[str, str]) -> Request:
            return Request(method, path, params, query, headers, body, client, peer)

        return self.dispatch((method, path), make)

    # --- serving --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self, sock: socket.socket, name: str, *, peers: bool) -> None:
        server = create_server(
            self, sockets=[sock], threads=self.threads, backlog=BACKLOG,
            connection_limit=connection_limit(self.connection_limit),
            channel_timeout=int(max(1, self.channel_timeout_s)),
            cleanup_interval=max(1, int(self.channel_timeout_s // 2) or 1),
            max_request_header_size=MAX_HEADER_BYTES, max_request_body_size=self.max_body_bytes,
            asyncore_use_poll=True, ident="wattlens", expose_tracebacks=False)
        if peers:
            server.channel_class = _PeerChannel
        deadline_requests(server, self.channel_timeout_s)
        self._servers.append(server)
        thread = threading.Thread(target=server.run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def start(self) -> None:
        """Listen (TCP, and the Unix socket if one is set) and serve on background threads."""
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "queue depth" per request
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self._serve(sock, "wattlens-http", peers=False)
        if self.unix_socket is not None:
            try:
                unix = bind_unix_socket(self.unix_socket)
            except OSError as exc:
                if not self.unix_optional:
                    self.stop()
                    raise
                log.warning("no local job ingest: cannot listen on %s (%s); set --ingest-socket",
                            self.unix_socket, exc.strerror or exc)
                self.unix_socket = None
            else:
                self._bound_unix = self.unix_socket
                self._serve(unix, "wattlens-http-unix", peers=True)

    def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.task_dispatcher.shutdown(timeout=2)
            server.asyncore.close_all(server._map)
        for thread in self._threads:
            thread.join(5)
        self._threads = []
        bound, self._bound_unix = self._bound_unix, None
        if bound is not None:  # only the socket this server made: never another agent's
            bound.unlink(missing_ok=True)


def connection_limit(wanted: int) -> int:
    """``wanted`` open connections, raising this process's open-file limit toward it (never past
    the hard limit); fewer when the limit cannot be raised, keeping 64 descriptors spare."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = wanted + 256
        if soft != resource.RLIM_INFINITY and soft < need:
            new = need if hard == resource.RLIM_INFINITY else min(need, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    except (ImportError, ValueError, OSError):
        return wanted
    return max(16, min(wanted, int(soft) - 64)) if soft != resource.RLIM_INFINITY else wanted


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening-ready Unix socket at ``path`` that every local user may connect to.

    A stale socket file (no listener) is replaced; a live one or any other file is an error.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    folder = path.parent.lstat()
    if (not stat.S_ISDIR(folder.st_mode) or folder.st_uid != os.geteuid()
            or folder.st_mode & 0o022):
        # Someone else's folder (a /tmp squatter) could swap the socket for their own.
        raise OSError(1, f"{path.parent} must be a folder owned by this user and writable by "
                         "no one else")
    if path.exists() or path.is_symlink():
        mode = path.lstat().st_mode
        if not stat.S_ISSOCK(mode):
            raise OSError(17, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise OSError(98, f"another agent is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)  # noqa: S103 - anyone may post; SO_PEERCRED says who they are
    return sock


SYSTEM_SOCKET = Path("/run/wattlens/ingest.sock")


def user_socket() -> Path:
    """The socket an agent not run by root listens on: $XDG_RUNTIME_DIR, else /tmp/wattlens-UID."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "wattlens" if runtime else Path(f"/tmp/wattlens-{os.getuid()}")  # noqa: S108
    return base / "ingest.sock"


def agent_socket() -> Path:
    """Where the agent listens for local job reports: WATTLENS_AGENT_SOCKET, else /run/wattlens
    for root, else :func:`user_socket`."""
    explicit = os.environ.get("WATTLENS_AGENT_SOCKET", "").strip()
    if explicit:
        return Path(explicit)
    return SYSTEM_SOCKET if os.geteuid() == 0 else user_socket()


def client_socket() -> Path | None:
    """The agent socket a job reports to: WATTLENS_AGENT_SOCKET, else the system agent's, else
    one run by this user; None when no agent socket exists."""
    explicit = os.environ.get("WATTLENS_AGENT_SOCKET", "").strip()
    if explicit:
        return Path(explicit)
    for path in (SYSTEM_SOCKET, user_socket()):
        if path.exists():
            return path
    return None
