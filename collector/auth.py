"""The one set of token rules for every wattlens HTTP endpoint: agent, ingest, actuation, dashboard.

- A token is at least :data:`MIN_TOKEN_CHARS` characters (checked where it is configured).
- It travels as ``Authorization: Bearer TOKEN`` (scheme case-insensitive) or, for browsers
  only, as the password of basic auth. A raw token without a scheme is never accepted.
- Loopback is decided with :mod:`ipaddress` (127.0.0.0/8, ::1, ::ffff:127.x), never by text.
- Tokens are compared in constant time, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass

MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """A configured token breaks the rules (too short, whitespace inside)."""


def check_token(token: str | None, where: str = "WATTLENS_AGENT_TOKEN") -> str | None:
    """The token if it follows the rules, None if unset; raise :class:`TokenError` otherwise."""
    if token is None or token == "":
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"{where}: a token must be at least {MIN_TOKEN_CHARS} characters, "
                         f"this one has {len(token)} (make one with `openssl rand -hex 24`)")
    if any(c.isspace() for c in token):
        raise TokenError(f"{where}: a token must not contain whitespace")
    return token


def is_loopback(host: str | None) -> bool:
    """True for addresses no other machine can reach: 127.0.0.0/8, ::1, ::ffff:127.x, localhost."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def credential(header: str | None, *, allow_basic: bool = False) -> str | None:
    """The credential an Authorization header carries, or None: ``Bearer X`` (any case), and with
    ``allow_basic`` the password of ``Basic base64(user:password)``."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value
    if allow_basic and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def token_matches(header: str | None, token: str | None, *, allow_basic: bool = False) -> bool:
    """Whether the header carries ``token``; compared in constant time. False without a token."""
    if not token:
        return False
    given = credential(header, allow_basic=allow_basic)
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


@dataclass(frozen=True)
class Denied:
    """Why a request is refused: HTTP status and one line for the client (never the token)."""

    status: int
    message: str


def check_request(client: str | None, header: str | None, token: str | None, *,
                  loopback_free: bool = True, what: str = "this endpoint") -> Denied | None:
    """Decide one request. ``loopback_free``: loopback clients need no token. A header that is
    sent must be right wherever it comes from. Returns None when allowed."""
    if header is not None and header.strip():
        if token is None:
            if loopback_free and is_loopback(client):
                return None
            return Denied(403, f"{what}: this agent has no WATTLENS_AGENT_TOKEN, so it accepts "
                               "requests from loopback only")
        if token_matches(header, token):
            return None
        return Denied(401, f"{what}: wrong or malformed credentials; send "
                           "'Authorization: Bearer <token>'")
    if loopback_free and is_loopback(client):
        return None
    if token is None:
        return Denied(403, f"{what}: from {client or 'this client'} it needs WATTLENS_AGENT_TOKEN "
                           "on the agent and 'Authorization: Bearer <token>'")
    return Denied(401, f"{what}: credentials missing; send 'Authorization: Bearer <token>'")
