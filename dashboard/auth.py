"""Optional HTTP authentication for the dashboard: a token as bearer header or basic-auth password."""

from __future__ import annotations

import logging
from typing import Any

from collector.auth import check_token, is_loopback
from collector.auth import token_matches as _token_matches

log = logging.getLogger("wattlens.dashboard.auth")

REALM = "wattlens"
__all__ = ["REALM", "install", "is_loopback", "token_matches"]


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token: ``Bearer TOKEN`` (any case) or basic
    auth with any user name and the token as password (collector.auth's rules)."""
    return _token_matches(header, token, allow_basic=True)


def install(server: Any, token: str) -> None:
    """Require the token on every request of the Flask ``server`` (pages, assets and callbacks).

    A browser gets a basic-auth prompt (any user name, the token as password);
    scripts send ``Authorization: Bearer TOKEN``. Refusals are logged with the
    client address, never with what was sent.
    """
    check_token(token, "dashboard token")
    from flask import Response, request

    server.extensions["wattlens.token"] = token  # for the server's own warm-up (server.py)

    @server.before_request
    def _require_token() -> Any:
        if token_matches(request.headers.get("Authorization"), token):
            return None
        log.warning("dashboard: refused %s %s from %s (missing or wrong token)", request.method,
                    request.path, request.remote_addr)
        return Response("wattlens dashboard: authentication required\n", 401,
                        {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
