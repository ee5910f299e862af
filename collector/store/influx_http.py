"""The HTTP client the InfluxDB stores share, and the mapping of answers to store errors."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from collector.errors import StoreRejected, StoreUnavailable

TOKEN_ENV = "WATTLENS_INFLUX_TOKEN"  # noqa: S105 - the variable's name, not a secret
_ERROR_TEXT_MAX = 400


# --- HTTP ----------------------------------------------------------------------


class HttpClient:
    """A small keep-alive HTTP client, one connection per thread, mapping failures to store errors.

    Connection refused, timeouts, 5xx and 429 raise StoreUnavailable (retry
    later); other 4xx raise StoreRejected with InfluxDB's own message. 401/403
    and "database not found" are configuration, not bad data, so they are
    StoreUnavailable too: points wait in the spool until the operator fixes it
    instead of being dropped. Credentials travel in a header and never appear
    in a message.
    """

    def __init__(self, base_url: str, *, display: str, timeout_s: float,
                 headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.display = display
        self.timeout_s = timeout_s
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._headers = dict(headers or {})
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout_s)
        self._local.conn = conn
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _discard(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()
            with self._lock:
                self._open.discard(conn)

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        """Send one request; (status, body, lower-cased headers) for any answer; raises if none came."""
        all_headers = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._discard()
                # A kept-alive connection the server closed while idle: one fresh try.
                # Writes are idempotent in InfluxDB (same series and time overwrite).
                stale = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                         BrokenPipeError, http.client.BadStatusLine))
                if reused and stale and attempt == 0:
                    continue
                raise StoreUnavailable(
                    f"cannot reach InfluxDB at {self.display}: {_reason(exc, self.timeout_s)}"
                ) from None
            if resp.will_close:
                self._discard()
            return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout_s:g} s (raise timeout_s in the store URL if it is slow)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is influxd running, and on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def error_text(data: bytes, headers_error: str | None = None) -> str:
    """InfluxDB's own error message from a response body, shortened for a log line."""
    text = headers_error or ""
    if not text:
        try:
            payload = json.loads(data.decode("utf-8", "replace"))
            text = str(payload.get("error") or payload.get("message") or payload) \
                if isinstance(payload, dict) else str(payload)
        except ValueError:
            text = data.decode("utf-8", "replace").strip()
    if len(text) > _ERROR_TEXT_MAX:
        text = text[:_ERROR_TEXT_MAX] + "…"
    return text or "(no message)"


def raise_for_status(status: int, data: bytes, *, what: str, display: str) -> None:
    """Map an HTTP status to the store errors (see :class:`HttpClient`)."""
    if 200 <= status < 300:
        return
    message = error_text(data)
    if status == 429 or status >= 500:
        raise StoreUnavailable(f"{what}: InfluxDB at {display} answered {status}: {message}")
    if status in (401, 403):
        raise StoreUnavailable(
            f"{what}: InfluxDB at {display} refused the credentials ({status}: {message}); "
            f"check the user and password in the store URL or ${TOKEN_ENV}")
    if status == 404 and "not found" in message:
        raise StoreUnavailable(
            f"{what}: InfluxDB at {display} answered 404: {message}; "
            f"run `wattlens store init --store URL` to create it")
    raise StoreRejected(f"{what}: InfluxDB at {display} rejected it ({status}): {message}")
