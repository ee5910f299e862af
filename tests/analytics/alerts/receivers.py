"""Local webhook receivers for the alert tests: a verifying HTTP server, and one that never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from analytics.alerts.hooks import ReplayCache, SignatureError, verify_signature


@dataclass
class Received:
    """One request as the receiver saw it and what it answered."""

    headers: dict[str, str]
    body: bytes
    status: int
    reason: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An http.server on 127.0.0.1 in a thread that verifies wattlens signatures.

    ``script`` lists statuses to answer first (before verifying), e.g. [500, 500];
    after that every request is verified: 200 when good, 401 naming why not.
    ``clock_offset_s`` moves the receiver's clock, to replay a request "later".
    """

    secret: bytes | None = None
    script: list[int] = field(default_factory=list)
    tolerance_s: float = 300.0
    clock_offset_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    cache: ReplayCache = field(default_factory=ReplayCache)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reason = receiver._answer(self.headers, body)
                # Recorded before answering: once the sender has its answer, the test sees it.
                with receiver._cond:
                    receiver.requests.append(Received(dict(self.headers.items()), body, status,
                                                      reason))
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", str(len(reason)))
                self.end_headers()
                self.wfile.write(reason.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _answer(self, headers: Any, body: bytes) -> tuple[int, str]:
        with self._cond:
            if self.script:
                return self.script.pop(0), "scripted"
        if self.secret is None:
            return 200, "ok"
        try:
            verify_signature(self.secret, headers, body, self.tolerance_s,
                             now_s=time.time() + self.clock_offset_s, replay_cache=self.cache)
        except SignatureError as exc:
            return 401, str(exc)
        return 200, "ok"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def accepted(self) -> list[Received]:
        with self._cond:
            return [r for r in self.requests if r.status == 200]

    def wait_for(self, n: int, timeout_s: float = 30.0) -> list[Received]:
        """Wait until ``n`` requests arrived; returns them (fails the test if they do not)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"receiver got {len(self.requests)} requests, expected {n}"
                self._cond.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


class SilentReceiver:
    """Accepts connections and reads requests but never answers, until closed."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.events = events if events is not None else []
        self.connected = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)  # so the accept loop notices close()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self.events.append("receiver: connection accepted, never answering")
            self.connected.set()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def close(self) -> None:
        """Drop every held connection: the client's pending read fails at once."""
        self._closed.set()
        self._thread.join(10)
        with self._lock:
            for c in self._conns:
                c.close()
        self._sock.close()
