"""The parsed alert rule file: hooks (where notifications go), rules, and the rule set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from analytics.alerts.fields import KIND_UNITS
from collector.errors import ConfigError


@dataclass(frozen=True)
class HookSpec:
    """Where notifications go. Secrets and secret URLs are named by environment variable, never stored here."""

    name: str
    type: str
    url: str | None = None
    url_env: str | None = None
    secret_env: str | None = None
    token_env: str | None = None
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    dead_letter: str | None = None
    queue_max: int = 1000
    resend_interval_s: float | None = None  # alertmanager: re-push firing alerts this often
    send_resolved: bool = True
    path: str | None = None  # file hooks: the JSON-lines file (default: next to the state file)
    line: int | None = None

    def resolve_url(self, env: Mapping[str, str] | None = None) -> str:
        """The hook's URL, read from ``url_env`` when set; ConfigError naming the variable if unset."""
        if self.url is not None:
            return self.url
        value = _env(env, self.url_env, self.name, "url_env")
        _check_url(value, f"hook {self.name!r}: url_env {self.url_env}")
        return value

    def secret(self, env: Mapping[str, str] | None = None) -> bytes | None:
        """The HMAC signing secret from ``secret_env`` (webhook hooks), or None."""
        if self.secret_env is None:
            return None
        return _env(env, self.secret_env, self.name, "secret_env").encode()

    def token(self, env: Mapping[str, str] | None = None) -> str | None:
        """A bearer token from ``token_env``, or None."""
        if self.token_env is None:
            return None
        return _env(env, self.token_env, self.name, "token_env")

    def display_url(self) -> str:
        """The URL as safe to log: scheme and host only when it comes from the environment."""
        if self.type == "file":
            return self.path or "(next to the state file)"
        if self.url is None:
            return f"${self.url_env}"
        return redact(self.url)


def redact(url: str) -> str:
    """scheme://host[:port]/… : paths may hold tokens (Slack), so they are never logged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    tail = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def _env(env: Mapping[str, str] | None, name: str | None, hook: str, fld: str) -> str:
    source = os.environ if env is None else env
    value = source.get(name or "")
    if not value:
        raise ConfigError(f"hook {hook!r}: {fld}: environment variable {name} is not set")
    return value


def _check_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url if where.endswith(": url") else "(value hidden)"
        raise ConfigError(f"{where}: expected an http(s) URL with a host, got {shown}")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: credentials in the URL are not allowed; "
                          f"use token_env for a bearer token")


@dataclass(frozen=True)
class Rule:
    """One alert rule: its kind, kind parameters, timing (``for``, repeat), severity, labels and hooks."""

    name: str
    kind: str
    for_s: float
    hysteresis: float
    severity: str
    labels: Mapping[str, str]
    hooks: tuple[str, ...]
    repeat_interval_s: float
    summary: str | None
    params: Mapping[str, Any]
    line: int | None = None

    def param(self, key: str) -> Any:
        return self.params.get(key)

    @property
    def unit(self) -> str:
        if self.kind == "budget" and self.params.get("max_kg_co2") is not None:
            return "kg"
        return KIND_UNITS[self.kind]

    @property
    def threshold(self) -> float | None:
        """The value that makes the rule fire (None for a threshold relative to the power cap)."""
        p = self.params
        if self.kind in ("threshold", "idle_waste"):
            return p.get("above_w")
        if self.kind == "trend":
            return float(p["drop_pct"])
        if self.kind == "absence":
            return self.for_s
        if self.kind == "carbon":
            return float(p["above_g_per_kwh"])
        return p.get("max_kwh") if p.get("max_kwh") is not None else p.get("max_kg_co2")


@dataclass(frozen=True)
class RuleSet:
    """A validated rule file: its rules and hooks, in file order."""

    rules: tuple[Rule, ...]
    hooks: tuple[HookSpec, ...] = ()
    source: str = "<rules>"
    rule_by_name: Mapping[str, Rule] = field(default_factory=dict, compare=False)

    def hook(self, name: str) -> HookSpec:
        for h in self.hooks:
            if h.name == name:
                return h
        raise KeyError(name)
