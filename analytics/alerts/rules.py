"""Alert rule files (TOML): rules and hooks, validated, with errors that name the rule, the field and the line."""

from __future__ import annotations

import math
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.errors import ConfigError

KINDS = ("threshold", "trend", "absence", "idle_waste", "carbon", "budget")
SEVERITIES = ("info", "warning", "critical")
# The rules `wattlens demo` evaluates (examples/alerts-local.toml is this file): no secret needed.
DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")
HOOK_TYPES = ("webhook", "slack", "alertmanager", "file")
WORK_UNIT_CHOICES = ("auto", "samples", "tokens", "steps", "flops")
CALENDAR_PERIODS = ("day", "week", "month")
GPU_MATCH_TAGS = ("host", "gpu", "model", "uuid")

# Unit of each kind's value (and so of its threshold and hysteresis).
KIND_UNITS = {"threshold": "W", "idle_waste": "W", "trend": "%", "absence": "s",
              "carbon": "g/kWh", "budget": "kWh"}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Labels wattlens sets itself on every alert.
RESERVED_LABELS = frozenset({"alertname", "rule", "severity", "target", "kind"})
# Keys that would put a secret in the file: refused, with a pointer to the *_env fields.
SECRET_KEYS = frozenset({"secret", "token", "password", "api_key", "signing_secret", "auth"})
SUMMARY_FIELDS = frozenset({"rule", "kind", "severity", "target", "value", "threshold", "unit",
                            "host", "gpu", "model", "job", "hosts", "region", "scope"})

DEFAULT_REPEAT_S = 4 * 3600.0
DEFAULT_AM_RESEND_S = 60.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class RuleFileError(ConfigError):
    """A rule file that cannot be used; ``errors`` holds one line per problem (file:line: rule: field: why)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else "invalid rule file"
        more = len(self.errors) - 1
        super().__init__(first if more <= 0 else f"{first} (and {more} more; "
                                                  f"see `wattlens alerts check`)")


class _Bad(Exception):
    """A value that does not fit its field; the message says what was expected and what was got."""


# --- value parsers -----------------------------------------------------------
def parse_duration_s(value: Any) -> float:
    """'90s', '15m', '1h30m', '0s' or a number of seconds -> seconds (>= 0). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 90s, 15m or 1h30m, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 90s, 15m or 1h30m, got {value!r}")
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration like 90s, 15m or 1h30m, got {value!r}")
    return total


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact Prometheus duration ('1h30m', '90s' -> '1m30s')."""
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    out = ""
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000),
                       ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


def _number(*, minimum: float | None = None, maximum: float | None = None,
            exclusive_min: bool = False, integer: bool = False) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                isinstance(v, float) and not math.isfinite(v)):
            raise _Bad(f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if integer and not isinstance(v, int):
            raise _Bad(f"expected an integer, got {v!r}")
        if minimum is not None and (v <= minimum if exclusive_min else v < minimum):
            raise _Bad(f"must be {'>' if exclusive_min else '>='} {minimum:g}, got {v!r}")
        if maximum is not None and v > maximum:
            raise _Bad(f"must be <= {maximum:g}, got {v!r}")
        return int(v) if integer else float(v)
    return parse


def _duration(*, positive: bool = False) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        try:
            s = parse_duration_s(v)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        if positive and s <= 0:
            raise _Bad(f"must be a positive duration, got {v!r}")
        return s
    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in choices:
            raise _Bad(f"expected one of {', '.join(choices)}, got {v!r}")
        return str(v)
    return parse


def _string(pattern: re.Pattern[str] | None = None, what: str = "a string") -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise _Bad(f"expected {what}, got {v!r}")
        if pattern is not None and not pattern.match(v):
            raise _Bad(f"expected {what}, got {v!r}")
        return v
    return parse


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {v!r}")
    return v


def _labels(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise _Bad(f"expected a table of label = \"value\", got {v!r}")
    out: dict[str, str] = {}
    for key, value in v.items():
        if not LABEL_RE.match(key):
            raise _Bad(f"label name {key!r} is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
        if key in RESERVED_LABELS:
            raise _Bad(f"label {key!r} is set by wattlens itself; choose another name")
        if not isinstance(value, str) or not value or "\n" in value:
            raise _Bad(f"label {key}: expected a non-empty one-line string, got {value!r}")
        out[key] = value
    return out


def _match(tags: tuple[str, ...]) -> Callable[[Any], dict[str, str]]:
    def parse(v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            raise _Bad(f"expected a table like {{ host = \"node-01\" }}, got {v!r}")
        for key, value in v.items():
            if key not in tags:
                raise _Bad(f"can match on {', '.join(tags)}; got {key!r}")
            if not isinstance(value, str) or not value:
                raise _Bad(f"{key}: expected a non-empty string, got {value!r}")
        return dict(v)
    return parse


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad(f"expected a list of hook names, got {v!r}")
    return tuple(v)


def _summary(v: Any) -> str:
    if not isinstance(v, str) or not v.strip() or "\n" in v:
        raise _Bad(f"expected a one-line template, got {v!r}")
    try:
        parsed = list(string.Formatter().parse(v))
    except ValueError as exc:
        raise _Bad(f"bad template {v!r}: {exc}") from None
    for _, name, _, _ in parsed:
        if name is not None and name not in SUMMARY_FIELDS:
            raise _Bad(f"unknown placeholder {{{name}}} in {v!r}; use "
                       f"{', '.join('{' + n + '}' for n in sorted(SUMMARY_FIELDS))}")
    return v


def _period(v: Any) -> Any:
    if v in CALENDAR_PERIODS:
        return v
    try:
        s = parse_duration_s(v)
    except ValueError:
        raise _Bad(f"expected day, week, month or a rolling duration like 24h or 30d, "
                   f"got {v!r}") from None
    if s <= 0:
        raise _Bad(f"must be a positive duration, got {v!r}")
    return s


@dataclass(frozen=True)
class _Field:
    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False


_COMMON: dict[str, _Field] = {
    "name": _Field(_string(NAME_RE, "a name of letters, digits, _ . : - (up to 128)"),
                   required=True),
    "kind": _Field(_choice(KINDS), required=True),
    "for": _Field(_duration()),
    "hysteresis": _Field(_number(minimum=0), 0.0),
    "severity": _Field(_choice(SEVERITIES)),
    "labels": _Field(_labels),
    "hooks": _Field(_names),
    "repeat_interval": _Field(_duration(positive=True)),
    "summary": _Field(_summary),
}

_KIND_FIELDS: dict[str, dict[str, _Field]] = {
    "threshold": {
        "above_w": _Field(_number(minimum=0, exclusive_min=True)),
        "above_cap_pct": _Field(_number(minimum=0, maximum=200, exclusive_min=True)),
        "window": _Field(_duration(positive=True), 60.0),
        "match": _Field(_match(GPU_MATCH_TAGS), {}),
    },
    "idle_waste": {
        "above_w": _Field(_number(minimum=0), required=True),
        "util_below_pct": _Field(_number(minimum=0, maximum=100, exclusive_min=True), 5.0),
        "window": _Field(_duration(positive=True), 60.0),
        "match": _Field(_match(GPU_MATCH_TAGS), {}),
    },
    "trend": {
        "drop_pct": _Field(_number(minimum=0, maximum=100, exclusive_min=True), required=True),
        "unit": _Field(_choice(WORK_UNIT_CHOICES), "auto"),
        "window": _Field(_duration(positive=True), 900.0),
        "baseline_window": _Field(_duration(positive=True), 3600.0),
        "baseline_per": _Field(_number(minimum=0, exclusive_min=True)),
        "job": _Field(_string(what="a job name or glob pattern"), "*"),
    },
    "absence": {
        "per": _Field(_choice(("host", "gpu")), "host"),
        "measurement": _Field(_choice(("gpu", "cpu", "job")), "gpu"),
        "known_within": _Field(_duration(positive=True), 86400.0),
        "match": _Field(_match(("host",)), {}),
    },
    "carbon": {
        "above_g_per_kwh": _Field(_number(minimum=0, exclusive_min=True), required=True),
        "region": _Field(_string(what="a region name")),
        "window": _Field(_duration(positive=True), 300.0),
        "job": _Field(_string(what="a job name or glob pattern"), "*"),
    },
    "budget": {
        "scope": _Field(_choice(("job", "fleet")), required=True),
        "job": _Field(_string(what="a job name or glob pattern"), "*"),
        "max_kwh": _Field(_number(minimum=0, exclusive_min=True)),
        "max_kg_co2": _Field(_number(minimum=0, exclusive_min=True)),
        "period": _Field(_period, "day"),
        "region": _Field(_string(what="a region name")),
    },
}

_HOOK_FIELDS: dict[str, _Field] = {
    "name": _Field(_string(NAME_RE, "a name of letters, digits, _ . : - (up to 128)"),
                   required=True),
    "type": _Field(_choice(HOOK_TYPES), required=True),
    "url": _Field(_string(what="an http(s) URL")),
    "url_env": _Field(_string(ENV_RE, "an environment variable name")),
    "secret_env": _Field(_string(ENV_RE, "an environment variable name")),
    "token_env": _Field(_string(ENV_RE, "an environment variable name")),
    "timeout_s": _Field(_number(minimum=0, maximum=300, exclusive_min=True), 5.0),
    "max_attempts": _Field(_number(minimum=1, maximum=100, integer=True), 5),
    "backoff_s": _Field(_number(minimum=0, maximum=3600, exclusive_min=True), 1.0),
    "backoff_max_s": _Field(_number(minimum=0, maximum=86400, exclusive_min=True), 60.0),
    "dead_letter": _Field(_string(what="a file path")),
    "path": _Field(_string(what="a file path")),
    "queue_max": _Field(_number(minimum=1, maximum=1_000_000, integer=True), 1000),
    "resend_interval": _Field(_duration(positive=True)),
    "send_resolved": _Field(_bool, True),
}

_DEFAULT_FIELDS = ("for", "severity", "repeat_interval", "hooks", "labels")


# --- the parsed model ----------------------------------------------------------
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


# --- locating lines ----------------------------------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")


class _Locator:
    """Best-effort line numbers for TOML tables and keys (tomllib does not report them)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, bool, str]] = []  # (line, is_array, dotted name)
        for i, line in enumerate(self.lines, 1):
            m = _HEADER.match(line)
            if m:
                name = ".".join(part.strip().strip('"\'') for part in m.group(2).split("."))
                self.headers.append((i, m.group(1) == "[[", name))

    def table(self, name: str, index: int | None) -> tuple[int, int] | None:
        """(first, last) line of the ``index``-th ``[[name]]`` (or of ``[name]`` when index is None)."""
        found = [h for h in self.headers if h[2] == name and h[1] == (index is not None)]
        if index is not None:
            if index >= len(found):
                return None
            start = found[index][0]
        elif found:
            start = found[0][0]
        else:
            return None
        end = len(self.lines)
        for line, _, hname in self.headers:
            if line > start and not hname.startswith(name + "."):
                end = line - 1
                break
        return start, end

    def key(self, name: str, index: int | None, key: str | None) -> int | None:
        span = self.table(name, index)
        if span is None:
            return None
        start, end = span
        if key is None:
            return start
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*=")
        for i in range(start + 1, end + 1):
            if pattern.match(self.lines[i - 1]):
                return i
        for line, _, hname in self.headers:
            if start < line <= end and hname == f"{name}.{key}":
                return line
        return start


class _Errors:
    def __init__(self, source: str, locator: _Locator) -> None:
        self.source = source
        self.loc = locator
        self.items: list[str] = []

    def add(self, what: str, fld: str | None, msg: str, line: int | None) -> None:
        where = f"{self.source}:{line}" if line else self.source
        named = f" {fld}:" if fld else ""
        self.items.append(f"{where}: {what}:{named} {msg}")


# --- parsing -----------------------------------------------------------------
def load_rules(path: str | os.PathLike[str]) -> RuleSet:
    """Read and validate a rule file; RuleFileError (a ConfigError) names rule, field and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuleFileError([f"--rules: file {str(p)!r} does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError([f"--rules: cannot read {str(p)!r}: {exc}"]) from None
    return parse_rules(text, str(p))


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse and validate rule-file text; every problem is reported, one line each."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            raise RuleFileError([f"{source}:{m.group(1)}: TOML syntax error: "
                                 f"{msg[:m.start()].strip()} (column {m.group(2)})"]) from None
        raise RuleFileError([f"{source}: TOML syntax error: {msg}"]) from None
    loc = _Locator(text)
    errs = _Errors(source, loc)
    for key in data:
        if key not in ("version", "defaults", "hook", "rule"):
            errs.add("file", key, "unknown top-level key; expected version, defaults, [[hook]] "
                     "and [[rule]] tables", _top_line(loc, key))
    version = data.get("version", 1)
    if version != 1:
        errs.add("file", "version", f"expected 1, got {version!r}", _top_line(loc, "version"))
    defaults = _parse_defaults(data.get("defaults", {}), errs)
    hooks = _parse_hooks(data.get("hook", []), errs)
    rules = _parse_rule_list(data.get("rule", []), defaults, {h.name for h in hooks}, errs)
    if not errs.items and not rules:
        errs.add("file", "rule", "no [[rule]] tables; nothing to evaluate", None)
    if errs.items:
        raise RuleFileError(errs.items)
    return RuleSet(tuple(rules), tuple(hooks), source, {r.name: r for r in rules})


def _top_line(loc: _Locator, key: str) -> int | None:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i, line in enumerate(loc.lines, 1):
        if _HEADER.match(line):
            if line.strip().strip("[]").strip() == key:
                return i
            break
        if pattern.match(line):
            return i
    for line_no, _, name in loc.headers:
        if name == key:
            return line_no
    return None


def _parse_defaults(raw: Any, errs: _Errors) -> dict[str, Any]:
    if not isinstance(raw, dict):
        errs.add("defaults", None, f"expected a [defaults] table, got {raw!r}", None)
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        line = errs.loc.key("defaults", None, key)
        if key not in _DEFAULT_FIELDS:
            errs.add("defaults", key, f"unknown setting; [defaults] takes "
                     f"{', '.join(_DEFAULT_FIELDS)}", line)
            continue
        try:
            out[key] = _COMMON[key].parse(value)
        except _Bad as exc:
            errs.add("defaults", key, str(exc), line)
    return out


def _secret_key_message(key: str, env_field: str) -> str:
    return (f"secrets never go in the rule file; put it in an environment variable and name "
            f"that variable with {env_field}")


def _parse_hooks(raw: Any, errs: _Errors) -> list[HookSpec]:
    if not isinstance(raw, list):
        errs.add("hook", None, "expected [[hook]] tables", _top_line(errs.loc, "hook"))
        return []
    hooks: list[HookSpec] = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        name = table.get("name") if isinstance(table, dict) else None
        what = f"hook {name!r}" if isinstance(name, str) else f"hook #{i + 1}"
        if not isinstance(table, dict):
            errs.add(what, None, f"expected a table, got {table!r}", errs.loc.key("hook", i, None))
            continue
        values: dict[str, Any] = {}
        ok = True
        for key, value in table.items():
            line = errs.loc.key("hook", i, key)
            if key in SECRET_KEYS or key.endswith(("_secret", "_token", "_password")):
                errs.add(what, key, _secret_key_message(key, "secret_env or token_env"), line)
                ok = False
                continue
            spec = _HOOK_FIELDS.get(key)
            if spec is None:
                errs.add(what, key, f"unknown field; hooks take {', '.join(_HOOK_FIELDS)}", line)
                ok = False
                continue
            try:
                values[key] = spec.parse(value)
            except _Bad as exc:
                errs.add(what, key, str(exc), line)
                ok = False
        for key, spec in _HOOK_FIELDS.items():
            if spec.required and key not in table:
                errs.add(what, key, "is required", errs.loc.key("hook", i, None))
                ok = False
        if not ok:
            continue
        hline = errs.loc.key("hook", i, None)
        htype = values["type"]
        if htype == "file" or "path" in values:
            if _file_hook_problem(what, htype, values, errs, i):
                continue
        elif ("url" in values) == ("url_env" in values):
            errs.add(what, "url", "give exactly one of url or url_env (url_env when the URL "
                     "itself is a secret, as Slack's are)", hline)
            continue
        if "url" in values:
            try:
                _check_url(values["url"], f"{what}: url")
            except ConfigError as exc:
                errs.add(what, "url", str(exc).split(": url: ", 1)[-1], errs.loc.key("hook", i, "url"))
                continue
        if htype == "webhook" and "secret_env" not in values:
            errs.add(what, "secret_env", "is required for a webhook: every request is signed "
                     "with HMAC-SHA256", hline)
            continue
        if htype != "webhook" and "secret_env" in values:
            errs.add(what, "secret_env", f"only webhook hooks are signed; a {htype} hook "
                     f"takes token_env or url_env", errs.loc.key("hook", i, "secret_env"))
            continue
        if htype == "slack" and "token_env" in values:
            errs.add(what, "token_env", "a Slack incoming webhook carries its token in the URL; "
                     "use url_env", errs.loc.key("hook", i, "token_env"))
            continue
        if htype != "alertmanager" and "resend_interval" in values:
            errs.add(what, "resend_interval", "only alertmanager hooks re-push firing alerts; "
                     "rules set repeat_interval", errs.loc.key("hook", i, "resend_interval"))
            continue
        if values.get("backoff_max_s", 60.0) < values.get("backoff_s", 1.0):
            errs.add(what, "backoff_max_s", f"must be >= backoff_s ({values.get('backoff_s', 1.0):g}), "
                     f"got {values['backoff_max_s']:g}", errs.loc.key("hook", i, "backoff_max_s"))
            continue
        if values["name"] in seen:
            errs.add(what, "name", "duplicate hook name", errs.loc.key("hook", i, "name"))
            continue
        seen.add(values["name"])
        resend = values.get("resend_interval")
        if htype == "alertmanager" and resend is None:
            resend = DEFAULT_AM_RESEND_S
        hooks.append(HookSpec(
            name=values["name"], type=htype, url=values.get("url"), url_env=values.get("url_env"),
            secret_env=values.get("secret_env"), token_env=values.get("token_env"),
            timeout_s=values.get("timeout_s", 5.0), max_attempts=values.get("max_attempts", 5),
            backoff_s=values.get("backoff_s", 1.0), backoff_max_s=values.get("backoff_max_s", 60.0),
            dead_letter=values.get("dead_letter"), queue_max=values.get("queue_max", 1000),
            resend_interval_s=resend, send_resolved=values.get("send_resolved", True),
            path=values.get("path"), line=hline))
    return hooks


def _file_hook_problem(what: str, htype: str, values: Mapping[str, Any], errs: _Errors, i: int) -> bool:
    """A file hook takes a path and nothing network-related; other hooks take no path. True: error added."""
    if htype != "file":
        errs.add(what, "path", f"only file hooks write to a path; a {htype} hook takes url or url_env",
                 errs.loc.key("hook", i, "path"))
        return True
    for key in ("url", "url_env", "secret_env", "token_env", "resend_interval"):
        if key in values:
            errs.add(what, key, "a file hook writes JSON lines to `path` and takes no "
                     f"{key}", errs.loc.key("hook", i, key))
            return True
    return False


def _parse_rule_list(raw: Any, defaults: Mapping[str, Any], hook_names: set[str],
                     errs: _Errors) -> list[Rule]:
    if not isinstance(raw, list):
        errs.add("rule", None, "expected [[rule]] tables", _top_line(errs.loc, "rule"))
        return []
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        rule = _parse_rule(i, table, defaults, hook_names, errs)
        if rule is None:
            continue
        if rule.name in seen:
            errs.add(f"rule {rule.name!r}", "name", "duplicate rule name",
                     errs.loc.key("rule", i, "name"))
            continue
        seen.add(rule.name)
        rules.append(rule)
    return rules


def _parse_rule(i: int, table: Any, defaults: Mapping[str, Any], hook_names: set[str],
                errs: _Errors) -> Rule | None:
    name = table.get("name") if isinstance(table, dict) else None
    what = f"rule {name!r}" if isinstance(name, str) and name else f"rule #{i + 1}"
    header = errs.loc.key("rule", i, None)
    if not isinstance(table, dict):
        errs.add(what, None, f"expected a table, got {table!r}", header)
        return None
    before = len(errs.items)
    kind = table.get("kind")
    kind_fields = _KIND_FIELDS.get(kind, {}) if isinstance(kind, str) else {}
    values: dict[str, Any] = {}
    for key, value in table.items():
        line = errs.loc.key("rule", i, key)
        if key in SECRET_KEYS:
            errs.add(what, key, _secret_key_message(key, "a hook's secret_env"), line)
            continue
        spec = _COMMON.get(key) or kind_fields.get(key)
        if spec is None:
            if kind in _KIND_FIELDS:
                known = ", ".join([*_COMMON, *kind_fields])
                errs.add(what, key, f"unknown field for kind {kind!r}; known: {known}", line)
            elif not any(key in f for f in _KIND_FIELDS.values()):
                errs.add(what, key, "unknown field", line)
            continue
        try:
            values[key] = spec.parse(value)
        except _Bad as exc:
            errs.add(what, key, str(exc), line)
    for key in ("name", "kind"):
        if key not in table:
            errs.add(what, key, "is required", header)
    if len(errs.items) > before:
        return None
    for key, spec in kind_fields.items():
        if spec.required and key not in values:
            errs.add(what, key, f"is required for kind {kind!r}", header)
        elif key not in values and spec.default is not None:
            values[key] = spec.default
    if len(errs.items) > before:
        return None

    def fail(fld: str, msg: str) -> None:
        errs.add(what, fld, msg, errs.loc.key("rule", i, fld) if fld in table else header)

    p = {k: v for k, v in values.items() if k in kind_fields}
    for_s = values.get("for", defaults.get("for", 0.0))
    hysteresis = values.get("hysteresis", 0.0)
    if kind == "threshold" and (("above_w" in p) == ("above_cap_pct" in p)):
        fail("above_w", "give exactly one of above_w (watts) or above_cap_pct (percent of the "
                        "GPU's power limit)")
    if kind == "threshold" and p.get("above_w") is not None and hysteresis >= p["above_w"]:
        fail("hysteresis", f"must be smaller than above_w ({p['above_w']:g}), got {hysteresis:g}")
    if kind == "trend":
        if hysteresis >= p["drop_pct"]:
            fail("hysteresis", f"must be smaller than drop_pct ({p['drop_pct']:g}), got {hysteresis:g}")
        if p.get("baseline_per") is not None and p["unit"] == "auto":
            fail("unit", "baseline_per needs an explicit unit (samples, tokens, steps or flops)")
    if kind == "absence":
        if for_s <= 0:
            fail("for", "an absence rule needs for = the silence that counts as missing, e.g. 5m")
        if hysteresis:
            fail("hysteresis", "absence rules clear on the first new point; hysteresis does not apply")
        if p["per"] == "gpu" and p["measurement"] != "gpu":
            fail("per", f"per = \"gpu\" needs measurement = \"gpu\", got {p['measurement']!r}")
        if p["known_within"] <= for_s:
            fail("known_within", f"must be longer than for ({format_duration(for_s)}), "
                                 f"got {format_duration(p['known_within'])}")
    if kind == "carbon" and hysteresis >= p["above_g_per_kwh"]:
        fail("hysteresis", f"must be smaller than above_g_per_kwh ({p['above_g_per_kwh']:g}), "
                           f"got {hysteresis:g}")
    if kind == "budget":
        if ("max_kwh" in p) == ("max_kg_co2" in p):
            fail("max_kwh", "give exactly one of max_kwh or max_kg_co2")
        elif hysteresis >= (p.get("max_kwh") or p.get("max_kg_co2") or 0):
            fail("hysteresis", "must be smaller than the budget")
        if p["scope"] == "fleet" and "job" in table:
            fail("job", "scope = \"fleet\" budgets the whole fleet; drop job or use scope = \"job\"")
        if p["scope"] == "job" and "region" in table and "max_kg_co2" not in p:
            fail("region", "region only matters for a CO2 budget (max_kg_co2)")
    hooks = values.get("hooks", defaults.get("hooks"))
    if hooks is None:
        hooks = tuple(sorted(hook_names))
    for h in hooks:
        if h not in hook_names:
            src = "hooks" if "hooks" in values else "defaults.hooks"
            fail("hooks", f"no [[hook]] named {h!r} (from {src}); defined: "
                          f"{', '.join(sorted(hook_names)) or 'none'}")
    if len(errs.items) > before:
        return None
    labels = {**defaults.get("labels", {}), **values.get("labels", {})}
    return Rule(
        name=values["name"], kind=str(kind), for_s=for_s, hysteresis=hysteresis,
        severity=values.get("severity", defaults.get("severity", "warning")),
        labels=labels, hooks=tuple(hooks),
        repeat_interval_s=values.get("repeat_interval",
                                     defaults.get("repeat_interval", DEFAULT_REPEAT_S)),
        summary=values.get("summary"), params=p, line=header)
