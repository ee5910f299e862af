"""Power-cap actuation on the agent: off by default, token-guarded, range-checked, audited, revertible."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from collector.auth import check_request, check_token, is_loopback
from collector.errors import DeviceLost, SourceUnavailable
from collector.http_server import Request, Response
from collector.sources import nvml as nvml_source

log = logging.getLogger("wattlens.actuation")

MAX_BODY_BYTES = 4096


class ActuationRefused(Exception):
    """A cap change was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # machine-readable reason, e.g. "actuation_disabled"


DISABLED = ("actuation is not enabled on this agent: start it with --enable-actuation "
            "(root and a token needed)")


@dataclass(frozen=True)
class CapChange:
    """One audited change (or dry run) of a GPU's power limit."""

    time_s: float
    who: str
    action: str  # apply | revert
    host: str
    gpu: int
    before_w: float
    after_w: float
    min_w: float
    max_w: float
    dry_run: bool
    detail: dict[str, Any] | None = None  # what justified it (the autopilot's measurements)


class PowerCapActuator:
    """Sets NVML power limits for the agent, and only when every guard agrees.

    A real change needs all of: actuation enabled in the agent's config, the
    agent's token on the request (collector.auth), and root. A dry run reports
    what would change; from loopback it needs no token, from elsewhere the token. Every change and dry
    run is appended to a JSON-lines audit log (who, what, before, after), from
    which :meth:`revert` restores the limit a GPU had before its latest change.
    ``nvml`` is the binding module (a fake in tests); ``is_root`` the privilege check.
    """

    def __init__(self, *, host: str, enabled: bool, token: str | None, audit_path: Path,
                 nvml: Any = None, is_root: Callable[[], bool] | None = None) -> None:
        self.host = host
        self.enabled = enabled
        self._token = check_token(token or None) or ""
        self.audit_path = Path(audit_path)
        self._nvml = nvml
        self._is_root = is_root or (lambda: os.geteuid() == 0)
        self._lock = threading.Lock()
        if enabled and not self._token:
            raise ValueError("--enable-actuation needs WATTLENS_AGENT_TOKEN set: power-cap "
                             "changes are refused without a token")

    # --- guards ----------------------------------------------------------------
    def authorize(self, authorization: str | None, client: str = "", *, dry_run: bool = False) -> None:
        """Raise ActuationRefused(401/403) unless the request may go on: a dry run from
        loopback always may; anything else needs the agent's token."""
        if dry_run and is_loopback(client):
            return
        if not self._token:
            raise ActuationRefused(403, DISABLED if not dry_run else
                                   "dry runs from other hosts need WATTLENS_AGENT_TOKEN on the "
                                   "agent and 'Authorization: Bearer <token>'",
                                   "actuation_disabled" if not dry_run else "no_token")
        denied = check_request(client, authorization, self._token, loopback_free=False,
                               what="power-cap actuation")
        if denied is not None:
            raise ActuationRefused(denied.status, denied.message)

    def _check_can_change(self) -> None:
        if not self.enabled:
            raise ActuationRefused(403, DISABLED + "; dry runs still work", "actuation_disabled")
        if not self._is_root():
            raise ActuationRefused(403, "setting a GPU power limit needs root: run the agent as "
                                        "root (or in a privileged container) to apply caps")

    # --- actions ---------------------------------------------------------------
    def apply(self, gpu: int, watts: float, *, who: str, dry_run: bool = True,
              detail: dict[str, Any] | None = None) -> CapChange:
        """Set (or, with ``dry_run``, plan) GPU ``gpu``'s limit to ``watts``; ``detail`` goes into
        the audit line with it."""
        with self._lock:
            min_w, max_w, current_w, _default_w = nvml_source.get_power_limits(gpu, nvml=self._nvml)
            if not min_w <= watts <= max_w:
                raise ActuationRefused(400, f"watts: {watts:g} W is outside gpu {gpu}'s allowed "
                                            f"range {min_w:g}-{max_w:g} W")
            change = CapChange(time.time(), who, "apply", self.host, gpu, current_w, watts, min_w,
                               max_w, dry_run, detail)
            if not dry_run:
                self._check_can_change()
                nvml_source.set_power_limit_w(gpu, watts, nvml=self._nvml)
            self._audit(change)
            return change

    def revert(self, gpu: int, *, who: str, dry_run: bool = True) -> CapChange:
        """Restore the limit GPU ``gpu`` had before its latest applied change."""
        with self._lock:
            previous = self._last_applied(gpu)
            if previous is None:
                raise ActuationRefused(409, f"gpu {gpu}: no applied change in the audit log "
                                            f"{self.audit_path} to revert")
            min_w, max_w, current_w, _ = nvml_source.get_power_limits(gpu, nvml=self._nvml)
            target = previous["before_w"]
            change = CapChange(time.time(), who, "revert", self.host, gpu, current_w, target,
                               min_w, max_w, dry_run)
            if not dry_run:
                self._check_can_change()
                nvml_source.set_power_limit_w(gpu, target, nvml=self._nvml)
            self._audit(change)
            return change

    def limits(self, gpu: int) -> tuple[float, float, float, float]:
        """(min_w, max_w, current_w, default_w) of GPU ``gpu``."""
        with self._lock:
            return nvml_source.get_power_limits(gpu, nvml=self._nvml)

    def _audit(self, change: CapChange) -> None:
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        entry = asdict(change)
        if entry.get("detail") is None:
            entry.pop("detail", None)
        line = json.dumps(entry, sort_keys=True)
        with self.audit_path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        verb = "planned (dry run)" if change.dry_run else "APPLIED"
        log.warning("power cap %s: %s gpu %d on %s: %g W -> %g W by %s", change.action, verb,
                    change.gpu, change.host, change.before_w, change.after_w, change.who)

    def _last_applied(self, gpu: int) -> dict[str, Any] | None:
        """The latest real change of ``gpu`` not yet undone by a revert."""
        if not self.audit_path.exists():
            return None
        stack: list[dict[str, Any]] = []
        for line in self.audit_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("gpu") != gpu or entry.get("dry_run") or entry.get("host",
                                                                              self.host) != self.host:
                continue
            if entry.get("action") == "apply":
                stack.append(entry)
            elif entry.get("action") == "revert" and stack:
                stack.pop()
        return stack[-1] if stack else None

    # --- HTTP ------------------------------------------------------------------
    def mount(self, server: Any) -> None:
        """Mount POST /v1/cap and POST /v1/cap/revert for this one host (see :class:`CapEndpoint`)."""
        CapEndpoint({self.host: self}).mount(server)


class CapEndpoint:
    """POST /v1/cap and /v1/cap/revert for every host an agent speaks for.

    A real agent has one actuator (its own GPUs); a simulated agent one per simulated host, each
    on that host's simulated NVML. The request's optional ``host`` picks one; without it, a single
    actuator answers. ``any_name``: a single actuator also answers whatever name the caller knows
    its node by (a real agent: the URL chose the node); a simulated agent names its hosts exactly.
    The actuators of one agent share its token: the guard is the first one's.
    """

    def __init__(self, actuators: dict[str, PowerCapActuator], *, any_name: bool = True) -> None:
        if not actuators:
            raise ValueError("actuators: need at least one host")
        self.actuators = dict(actuators)
        self.any_name = any_name

    def mount(self, server: Any) -> None:
        server.route("POST", "/v1/cap", self._handle_apply)
        server.route("POST", "/v1/cap/revert", self._handle_revert)

    def _handle_apply(self, request: Request) -> Response:
        return self._handle(request, revert=False)

    def _handle_revert(self, request: Request) -> Response:
        return self._handle(request, revert=True)

    def _pick(self, host: str | None) -> PowerCapActuator:
        if host in self.actuators:
            return self.actuators[host]
        if len(self.actuators) == 1 and (host is None or self.any_name):
            return next(iter(self.actuators.values()))
        names = sorted(self.actuators)
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        what = "required" if host is None else f"{host!r} is not a host of this agent"
        raise ActuationRefused(400, f"host: {what}; it answers for {shown}; name one of them",
                               "unknown_host")

    def _handle(self, request: Request, *, revert: bool) -> Response:
        try:
            body = _parse_body(request.body, need_watts=not revert)
            guard = next(iter(self.actuators.values()))
            guard.authorize(request.headers.get("authorization"), request.client,
                            dry_run=body["dry_run"])
            actuator = self._pick(body["host"])
            who = f"{body['who']}@{request.client}"
            if revert:
                change = actuator.revert(body["gpu"], who=who, dry_run=body["dry_run"])
            else:
                change = actuator.apply(body["gpu"], body["watts"], who=who,
                                        dry_run=body["dry_run"])
        except ActuationRefused as exc:
            if exc.status in (401, 403):
                log.warning("power cap request from %s refused: %s", request.client, exc)
            return _json(exc.status, {"error": str(exc), **({"code": exc.code} if exc.code else {})})
        except (SourceUnavailable, DeviceLost, ImportError) as exc:
            return _json(503, {"error": f"power limits unavailable on this host: {exc}",
                               "code": "no_nvml"})
        except (ValueError, PermissionError) as exc:
            return _json(400 if isinstance(exc, ValueError) else 403, {"error": str(exc)})
        return _json(200, {k: v for k, v in asdict(change).items() if k != "detail" or v})


def _parse_body(raw: bytes, *, need_watts: bool) -> dict[str, Any]:
    if len(raw) > MAX_BODY_BYTES:
        raise ActuationRefused(413, f"body: {len(raw)} bytes is above {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ActuationRefused(400, f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ActuationRefused(400, "body: expected a JSON object")
    gpu = body.get("gpu")
    if isinstance(gpu, bool) or not isinstance(gpu, int) or not 0 <= gpu < 1024:
        raise ActuationRefused(400, f"gpu: expected a GPU index 0..1023, got {gpu!r}")
    out: dict[str, Any] = {"gpu": gpu, "dry_run": body.get("dry_run", True)}
    if not isinstance(out["dry_run"], bool):
        raise ActuationRefused(400, f"dry_run: expected true or false, got {out['dry_run']!r}")
    who = body.get("who", "unknown")
    if not isinstance(who, str) or len(who) > 64:
        raise ActuationRefused(400, "who: expected a string of at most 64 characters")
    out["who"] = who
    host = body.get("host")
    if host is not None and (not isinstance(host, str) or not 0 < len(host) <= 253):
        raise ActuationRefused(400, f"host: expected a host name of 1-253 characters, got {host!r}")
    out["host"] = host
    if need_watts:
        watts = body.get("watts")
        if isinstance(watts, bool) or not isinstance(watts, (int, float)) or not (
                0 < watts < 100_000):
            raise ActuationRefused(400, f"watts: expected a power limit in watts, got {watts!r}")
        out["watts"] = float(watts)
    return out


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, (json.dumps(body) + "\n").encode(), "application/json")
