"""Optional HTTP authentication for the dashboard: a token as bearer header or basic-auth password."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from typing import Any

log = logging.getLogger("wattlens.dashboard.auth")

REALM = "wattlens"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token: ``Bearer TOKEN`` or basic auth with
    any user name and the token as password. Compared in constant time."""
    if not header or not token:
        return False
    scheme, _, value = header.partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    return hmac.compare_digest(given.encode(), token.encode())


def install(server: Any, token: str) -> None:
    """Require the token on every request of the Flask ``server`` (pages, assets and callbacks).

    A browser gets a basic-auth prompt (any user name, the token as password);
    scripts send ``Authorization: Bearer TOKEN``. Refusals are logged with the
    client address, never with what was sent.
    """
    if not token:
        raise ValueError("auth: the dashboard token is empty")
    from flask import Response, request

    @server.before_request
    def _require_token() -> Any:
        if token_matches(request.headers.get("Authorization"), token):
            return None
        log.warning("dashboard: refused %s %s from %s (missing or wrong token)", request.method,
                    request.path, request.remote_addr)
        return Response("wattlens dashboard: authentication required\n", 401,
                        {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
