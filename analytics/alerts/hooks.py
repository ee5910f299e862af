"""Alert delivery: signed webhooks, Slack and Alertmanager, each on its own thread with retries and a dead letter."""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from analytics.alerts.filehook import FileDelivery
from analytics.alerts.payloads import (
    AlertEvent,
    alertmanager_payload,
    event_json,
    iso,
    slack_payload,
    webhook_payload,
)
from analytics.alerts.rules import HookSpec, RuleSet
from analytics.alerts.signing import (
    DEFAULT_TOLERANCE_S,
    SIGNATURE_HEADER,
    ReplayCache,
    SignatureError,
    sign,
    verify_signature,
)

log = logging.getLogger("wattlens.alerts.hooks")

DELIVERY_HEADER = "X-Wattlens-Delivery"
USER_AGENT = "wattlens-alerts/1"


# --- delivery ------------------------------------------------------------------------
@dataclass
class DeliveryStats:
    """Counters of one hook's delivery thread."""

    submitted: int = 0
    attempts: int = 0
    retries: int = 0
    delivered: int = 0
    dead_lettered: int = 0


@dataclass
class _Message:
    id: str
    body: bytes
    created_ns: int
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    owed: bool = False  # carries a "resolved" notice: re-sent once the receiver is back
    dead_lettered: bool = False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error for a webhook: following it would resend the body to another place."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urlsplit(url).hostname or ""
    handlers: list[Any] = [_NoRedirect()]
    if host in ("127.0.0.1", "localhost", "::1"):
        handlers.append(urllib.request.ProxyHandler({}))  # never send loopback through a proxy
    return urllib.request.build_opener(*handlers)


class HookDelivery:
    """One hook's queue and delivery thread: timeouts, retries with exponential backoff and jitter, a dead-letter file.

    ``submit`` never blocks: the evaluation loop hands over a body and goes on.
    A full queue dead-letters the new message instead of waiting. Retries
    re-sign each attempt with a fresh timestamp (the body, and so the
    ``X-Wattlens-Delivery`` id, stay the same: receivers de-duplicate on it).
    A dead-lettered message marked ``owed`` (it tells that an alert resolved) is
    also kept in memory and sent again, with the same id, after the next delivery
    that succeeds or every ``backoff_max_s`` while idle: otherwise the receiver
    would think the alert still fires. The dead-letter file keeps its record.
    """

    def __init__(self, spec: HookSpec, url: str, dead_letter: Path, *, secret: bytes | None = None,
                 token: str | None = None, rng: random.Random | None = None,
                 content_type: str = "application/json") -> None:
        self.spec = spec
        self.url = url
        self.dead_letter = dead_letter
        self.stats = DeliveryStats()
        self._secret = secret
        self._token = token
        self._rng = rng or random.Random()
        self._content_type = content_type
        self._opener = _opener(url)
        self._queue: deque[_Message] = deque()
        self._owed: deque[_Message] = deque(maxlen=max(1, spec.queue_max))
        self._cond = threading.Condition()
        self._busy = False
        self._closing = threading.Event()
        self._dl_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"wattlens-hook-{spec.name}",
                                        daemon=True)
        self._thread.start()

    # --- producer side -----------------------------------------------------------
    def submit(self, body: bytes, *, owed: bool = False) -> str:
        """Queue one request body; returns its delivery id. Never blocks. ``owed``: re-send it
        after a dead letter once the receiver answers again (resolved notices)."""
        msg = _Message(uuid.uuid4().hex, body, time.time_ns(), owed=owed)
        with self._cond:
            self.stats.submitted += 1
            full = len(self._queue) >= self.spec.queue_max or self._closing.is_set()
            if not full:
                self._queue.append(msg)
                self._cond.notify()
        if full:
            reason = "shut down" if self._closing.is_set() else f"queue full ({self.spec.queue_max})"
            self._dead_letter(msg, reason)
        return msg.id

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued was delivered or dead-lettered; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float | None = None) -> None:
        """Stop retrying; dead-letter what is left. Waits for an attempt in flight (bounded by timeout_s)."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(self.spec.timeout_s + 1 if timeout_s is None else timeout_s)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    @property
    def owed(self) -> int:
        """Dead-lettered resolved notices waiting for the receiver to come back."""
        with self._cond:
            return len(self._owed)

    def _requeue_owed(self) -> None:
        """Put the owed notices back in the queue (caller holds ``_cond``)."""
        while self._owed:
            msg = self._owed.popleft()
            msg.attempts, msg.errors = 0, []
            self._queue.append(msg)
        self._cond.notify()

    # --- the thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    if self._owed:  # idle with notices owed: probe the receiver now and then
                        if not self._cond.wait(self.spec.backoff_max_s):
                            self._requeue_owed()
                    else:
                        self._cond.wait()
                if not self._queue:
                    return
                msg = self._queue.popleft()
                self._busy = True
            try:
                if self._closing.is_set():
                    self._dead_letter(msg, "shut down before delivery")
                else:
                    self._deliver(msg)
            except Exception as exc:  # the thread must survive anything one message does
                log.exception("hook %s: unexpected delivery error", self.spec.name)
                self._dead_letter(msg, f"internal error: {type(exc).__name__}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def backoff_s(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based): exponential, capped, with equal jitter."""
        base = min(self.spec.backoff_max_s, self.spec.backoff_s * 2 ** (attempt - 1))
        return base / 2 + self._rng.uniform(0, base / 2)

    def _deliver(self, msg: _Message) -> None:
        while msg.attempts < self.spec.max_attempts:
            msg.attempts += 1
            with self._cond:
                self.stats.attempts += 1
            ok, retryable, detail, retry_after = self._post(msg)
            if ok:
                with self._cond:
                    self.stats.delivered += 1
                    if self._owed:  # the receiver is back: what it missed goes next
                        self._requeue_owed()
                if msg.dead_lettered:
                    log.info("hook %s: delivery %s (a resolved notice) delivered now that the "
                             "receiver is back; its dead-letter record can be ignored",
                             self.spec.name, msg.id)
                if msg.attempts > 1:
                    log.info("hook %s: delivery %s succeeded on attempt %d", self.spec.name,
                             msg.id, msg.attempts)
                return
            msg.errors.append(detail)
            if not retryable:
                self._dead_letter(msg, detail, refused=True)
                return
            if msg.attempts >= self.spec.max_attempts:
                break
            delay = self.backoff_s(msg.attempts)
            if retry_after is not None:
                delay = min(max(delay, retry_after), self.spec.backoff_max_s)
            log.debug("hook %s: attempt %d of %s failed (%s); retrying in %.2f s", self.spec.name,
                      msg.attempts, msg.id, detail, delay)
            with self._cond:
                self.stats.retries += 1
            if self._closing.wait(delay):
                self._dead_letter(msg, f"shut down while retrying (last error: {detail})")
                return
        self._dead_letter(msg, msg.errors[-1] if msg.errors else "no attempt made")

    def _post(self, msg: _Message) -> tuple[bool, bool, str, float | None]:
        """One attempt: (delivered, worth retrying, what happened, Retry-After seconds)."""
        headers = {"Content-Type": self._content_type, "User-Agent": USER_AGENT,
                   DELIVERY_HEADER: msg.id}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, msg.body, int(time.time()))
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        # The URL was checked to be http(s) when the rule file was read.
        req = urllib.request.Request(self.url, data=msg.body, headers=headers,  # noqa: S310
                                     method="POST")
        try:
            with self._opener.open(req, timeout=self.spec.timeout_s) as resp:
                resp.read(65536)
                return True, False, f"HTTP {resp.status}", None
        except urllib.error.HTTPError as exc:
            code = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            if 300 <= code < 400:
                return False, False, f"HTTP {code} redirect refused", None
            return False, code >= 500 or code in (408, 425, 429), f"HTTP {code}", retry_after
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return False, True, f"{type(reason).__name__}: {reason}", None

    def _dead_letter(self, msg: _Message, reason: str, *, refused: bool = False) -> None:
        """Record a failed delivery; keep an owed one for a re-send unless the receiver
        ``refused`` it (a 4xx or redirect: sending it again would not help)."""
        keep = msg.owed and not refused and not self._closing.is_set()
        if keep:
            with self._cond:
                self._owed.append(msg)
        if msg.dead_lettered:  # a re-send that failed again: its record is already there
            log.debug("hook %s: owed delivery %s failed again: %s", self.spec.name, msg.id, reason)
            return
        msg.dead_lettered = True
        try:
            payload: Any = json.loads(msg.body)
        except ValueError:
            payload = msg.body.decode("utf-8", "replace")
        record = {"hook": self.spec.name, "type": self.spec.type, "delivery_id": msg.id,
                  "failed_at": iso(time.time_ns()), "queued_at": iso(msg.created_ns),
                  "attempts": msg.attempts, "error": reason, "payload": payload}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._dl_lock:
            self.stats.dead_lettered += 1
            try:
                self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.dead_letter, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError as exc:
                log.error("hook %s: cannot write dead-letter file %s: %s", self.spec.name,
                          self.dead_letter, exc)
                return
        log.warning("hook %s (%s): delivery %s failed after %d attempt(s): %s; kept in %s%s",
                    self.spec.name, self.spec.display_url(), msg.id, msg.attempts, reason,
                    self.dead_letter, "; this resolved notice is sent again once the receiver "
                    "answers" if keep else "")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Dispatcher:
    """All hooks of a rule file: formats each batch of events for its hook type and queues it."""

    def __init__(self, ruleset: RuleSet, deliveries: Mapping[str, Any]) -> None:
        self.ruleset = ruleset
        self.deliveries = dict(deliveries)

    @classmethod
    def from_ruleset(cls, ruleset: RuleSet, state_dir: Path, env: Mapping[str, str] | None = None,
                     rng: random.Random | None = None) -> Dispatcher:
        """Start one delivery thread per hook; URLs, secrets and tokens are read from the environment."""
        deliveries: dict[str, Any] = {}
        try:
            for spec in ruleset.hooks:
                if spec.type == "file":
                    deliveries[spec.name] = FileDelivery(spec, Path(spec.path) if spec.path else (
                        state_dir / f"alerts-{spec.name}.jsonl"))
                    continue
                url = spec.resolve_url(env)
                if spec.type == "alertmanager":
                    url = url.rstrip("/") + "/api/v2/alerts"
                dead = Path(spec.dead_letter) if spec.dead_letter else (
                    state_dir / f"dead-letter-{spec.name}.jsonl")
                deliveries[spec.name] = HookDelivery(
                    spec, url, dead, secret=spec.secret(env), token=spec.token(env), rng=rng)
        except BaseException:
            for d in deliveries.values():
                d.close(0)
            raise
        return cls(ruleset, deliveries)

    def wants_resend_s(self, hook: str, repeat_interval_s: float) -> float:
        """How often a firing alert is sent again to ``hook``."""
        spec = self.deliveries[hook].spec
        if spec.resend_interval_s is not None:
            return min(spec.resend_interval_s, repeat_interval_s)
        return repeat_interval_s

    def sends_resolved(self, hook: str) -> bool:
        return self.deliveries[hook].spec.send_resolved

    def submit(self, hook: str, events: Sequence[AlertEvent], now_ns: int) -> str | None:
        """Format ``events`` for the hook's type and queue them; returns the delivery id."""
        if not events:
            return None
        delivery = self.deliveries[hook]
        spec = delivery.spec
        payload: Any
        if spec.type == "alertmanager":
            payload = alertmanager_payload(events, now_ns, spec.resend_interval_s or 60.0)
        elif spec.type == "slack":
            payload = slack_payload(events, now_ns)
        else:
            payload = webhook_payload(events, now_ns)
        resolved = any(e.status == "resolved" for e in events)
        return delivery.submit(json.dumps(payload, separators=(",", ":")).encode(), owed=resolved)

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(d.flush(max(0.0, deadline - time.monotonic())) for d in self.deliveries.values())

    def close(self, timeout_s: float | None = None) -> None:
        for d in self.deliveries.values():
            d._closing.set()
        for d in self.deliveries.values():
            d.close(timeout_s)


# Signatures and payloads live in their own modules; these names stay importable from here.
__all__ = ["DEFAULT_TOLERANCE_S", "DELIVERY_HEADER", "SIGNATURE_HEADER", "AlertEvent", "DeliveryStats",
           "Dispatcher", "HookDelivery", "ReplayCache", "SignatureError", "alertmanager_payload",
           "event_json", "iso", "sign", "slack_payload", "verify_signature", "webhook_payload"]
