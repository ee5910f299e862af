"""Webhook signatures: HMAC-SHA256 over timestamp and body, checked by receivers with a replay cache."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from email.message import Message

SIGNATURE_HEADER = "X-Wattlens-Signature"
DEFAULT_TOLERANCE_S = 300.0


class SignatureError(ValueError):
    """A request whose signature is missing, wrong, too old, or already seen."""


def sign(secret: bytes, body: bytes, timestamp_s: int) -> str:
    """The X-Wattlens-Signature value: ``t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    mac = hmac.new(secret, str(timestamp_s).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={mac}"


class ReplayCache:
    """Signatures seen within the tolerance window; a second request with the same one is a replay."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def add(self, mac: str, timestamp_s: int, now_s: float, tolerance_s: float) -> bool:
        """Remember ``mac``; False if it was already seen (a replay)."""
        with self._lock:
            while self._seen and (len(self._seen) >= self._max or
                                  next(iter(self._seen.values())) < now_s - tolerance_s):
                self._seen.popitem(last=False)
            if mac in self._seen:
                return False
            self._seen[mac] = timestamp_s
            return True


def _header(headers: Mapping[str, str] | Message, name: str) -> str | None:
    if isinstance(headers, Message):
        return headers.get(name)
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify_signature(secret: bytes | str, headers: Mapping[str, str] | Message, body: bytes,
                     tolerance_s: float = DEFAULT_TOLERANCE_S, *, now_s: float | None = None,
                     replay_cache: ReplayCache | None = None) -> int:
    """Check a wattlens webhook request; return its signed timestamp or raise SignatureError.

    For receivers: pass the raw body bytes as received. The signature covers
    the timestamp and the body, so a changed body fails; a timestamp more than
    ``tolerance_s`` from ``now_s`` (default: the wall clock) fails, so an old
    request replayed later is rejected; and with a ``replay_cache`` the same
    request replayed inside the tolerance window is rejected too. Several
    ``v1=`` values are accepted (secret rotation: sign with old and new).
    """
    key = secret.encode() if isinstance(secret, str) else secret
    raw = _header(headers, SIGNATURE_HEADER)
    if not raw:
        raise SignatureError(f"{SIGNATURE_HEADER}: header missing")
    timestamp: int | None = None
    macs: list[str] = []
    for part in raw.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"{SIGNATURE_HEADER}: bad timestamp t={value!r}") from None
        elif name == "v1":
            macs.append(value)
    if timestamp is None or not macs:
        raise SignatureError(f"{SIGNATURE_HEADER}: expected t=<unix seconds>,v1=<hex>, got {raw!r}")
    now = time.time() if now_s is None else now_s
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"{SIGNATURE_HEADER}: timestamp {timestamp} is {now - timestamp:+.0f} s "
                             f"from now, outside the {tolerance_s:g} s tolerance (replayed or clock skew)")
    expected = sign(key, body, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, m) for m in macs):
        raise SignatureError(f"{SIGNATURE_HEADER}: signature does not match the body")
    if replay_cache is not None and not replay_cache.add(expected, timestamp, now, tolerance_s):
        raise SignatureError(f"{SIGNATURE_HEADER}: signature already used (replayed request)")
    return timestamp
