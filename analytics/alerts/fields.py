"""The alert rule file's vocabulary: kinds, limits, value parsers and each kind's field table.

rules.py reads a file with these; errors raised here (``BadValue``) are placed by the caller,
which knows the rule, the field and the line.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("threshold", "trend", "absence", "idle_waste", "carbon", "budget")
SEVERITIES = ("info", "warning", "critical")
# The rules `wattlens demo` evaluates (examples/alerts-local.toml is this file): no secret needed.
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


class BadValue(Exception):
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
            raise BadValue(f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if integer and not isinstance(v, int):
            raise BadValue(f"expected an integer, got {v!r}")
        if minimum is not None and (v <= minimum if exclusive_min else v < minimum):
            raise BadValue(f"must be {'>' if exclusive_min else '>='} {minimum:g}, got {v!r}")
        if maximum is not None and v > maximum:
            raise BadValue(f"must be <= {maximum:g}, got {v!r}")
        return int(v) if integer else float(v)
    return parse


def _duration(*, positive: bool = False) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        try:
            s = parse_duration_s(v)
        except ValueError as exc:
            raise BadValue(str(exc)) from None
        if positive and s <= 0:
            raise BadValue(f"must be a positive duration, got {v!r}")
        return s
    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in choices:
            raise BadValue(f"expected one of {', '.join(choices)}, got {v!r}")
        return str(v)
    return parse


def _string(pattern: re.Pattern[str] | None = None, what: str = "a string") -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise BadValue(f"expected {what}, got {v!r}")
        if pattern is not None and not pattern.match(v):
            raise BadValue(f"expected {what}, got {v!r}")
        return v
    return parse


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise BadValue(f"expected true or false, got {v!r}")
    return v


def _labels(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise BadValue(f"expected a table of label = \"value\", got {v!r}")
    out: dict[str, str] = {}
    for key, value in v.items():
        if not LABEL_RE.match(key):
            raise BadValue(f"label name {key!r} is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
        if key in RESERVED_LABELS:
            raise BadValue(f"label {key!r} is set by wattlens itself; choose another name")
        if not isinstance(value, str) or not value or "\n" in value:
            raise BadValue(f"label {key}: expected a non-empty one-line string, got {value!r}")
        out[key] = value
    return out


def _match(tags: tuple[str, ...]) -> Callable[[Any], dict[str, str]]:
    def parse(v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            raise BadValue(f"expected a table like {{ host = \"node-01\" }}, got {v!r}")
        for key, value in v.items():
            if key not in tags:
                raise BadValue(f"can match on {', '.join(tags)}; got {key!r}")
            if not isinstance(value, str) or not value:
                raise BadValue(f"{key}: expected a non-empty string, got {value!r}")
        return dict(v)
    return parse


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise BadValue(f"expected a list of hook names, got {v!r}")
    return tuple(v)


def _summary(v: Any) -> str:
    if not isinstance(v, str) or not v.strip() or "\n" in v:
        raise BadValue(f"expected a one-line template, got {v!r}")
    try:
        parsed = list(string.Formatter().parse(v))
    except ValueError as exc:
        raise BadValue(f"bad template {v!r}: {exc}") from None
    for _, name, _, _ in parsed:
        if name is not None and name not in SUMMARY_FIELDS:
            raise BadValue(f"unknown placeholder {{{name}}} in {v!r}; use "
                       f"{', '.join('{' + n + '}' for n in sorted(SUMMARY_FIELDS))}")
    return v


def _period(v: Any) -> Any:
    if v in CALENDAR_PERIODS:
        return v
    try:
        s = parse_duration_s(v)
    except ValueError:
        raise BadValue(f"expected day, week, month or a rolling duration like 24h or 30d, "
                   f"got {v!r}") from None
    if s <= 0:
        raise BadValue(f"must be a positive duration, got {v!r}")
    return s


@dataclass(frozen=True)
class FieldSpec:
    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False


COMMON_FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec(_string(NAME_RE, "a name of letters, digits, _ . : - (up to 128)"),
                   required=True),
    "kind": FieldSpec(_choice(KINDS), required=True),
    "for": FieldSpec(_duration()),
    "hysteresis": FieldSpec(_number(minimum=0), 0.0),
    "severity": FieldSpec(_choice(SEVERITIES)),
    "labels": FieldSpec(_labels),
    "hooks": FieldSpec(_names),
    "repeat_interval": FieldSpec(_duration(positive=True)),
    "summary": FieldSpec(_summary),
}

KIND_FIELDS: dict[str, dict[str, FieldSpec]] = {
    "threshold": {
        "above_w": FieldSpec(_number(minimum=0, exclusive_min=True)),
        "above_cap_pct": FieldSpec(_number(minimum=0, maximum=200, exclusive_min=True)),
        "window": FieldSpec(_duration(positive=True), 60.0),
        "match": FieldSpec(_match(GPU_MATCH_TAGS), {}),
    },
    "idle_waste": {
        "above_w": FieldSpec(_number(minimum=0), required=True),
        "util_below_pct": FieldSpec(_number(minimum=0, maximum=100, exclusive_min=True), 5.0),
        "window": FieldSpec(_duration(positive=True), 60.0),
        "match": FieldSpec(_match(GPU_MATCH_TAGS), {}),
    },
    "trend": {
        "drop_pct": FieldSpec(_number(minimum=0, maximum=100, exclusive_min=True), required=True),
        "unit": FieldSpec(_choice(WORK_UNIT_CHOICES), "auto"),
        "window": FieldSpec(_duration(positive=True), 900.0),
        "baseline_window": FieldSpec(_duration(positive=True), 3600.0),
        "baseline_per": FieldSpec(_number(minimum=0, exclusive_min=True)),
        "job": FieldSpec(_string(what="a job name or glob pattern"), "*"),
    },
    "absence": {
        "per": FieldSpec(_choice(("host", "gpu")), "host"),
        "measurement": FieldSpec(_choice(("gpu", "cpu", "job")), "gpu"),
        "known_within": FieldSpec(_duration(positive=True), 86400.0),
        "match": FieldSpec(_match(("host",)), {}),
    },
    "carbon": {
        "above_g_per_kwh": FieldSpec(_number(minimum=0, exclusive_min=True), required=True),
        "region": FieldSpec(_string(what="a region name")),
        "window": FieldSpec(_duration(positive=True), 300.0),
        "job": FieldSpec(_string(what="a job name or glob pattern"), "*"),
    },
    "budget": {
        "scope": FieldSpec(_choice(("job", "fleet")), required=True),
        "job": FieldSpec(_string(what="a job name or glob pattern"), "*"),
        "max_kwh": FieldSpec(_number(minimum=0, exclusive_min=True)),
        "max_kg_co2": FieldSpec(_number(minimum=0, exclusive_min=True)),
        "period": FieldSpec(_period, "day"),
        "region": FieldSpec(_string(what="a region name")),
    },
}

HOOK_FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec(_string(NAME_RE, "a name of letters, digits, _ . : - (up to 128)"),
                   required=True),
    "type": FieldSpec(_choice(HOOK_TYPES), required=True),
    "url": FieldSpec(_string(what="an http(s) URL")),
    "url_env": FieldSpec(_string(ENV_RE, "an environment variable name")),
    "secret_env": FieldSpec(_string(ENV_RE, "an environment variable name")),
    "token_env": FieldSpec(_string(ENV_RE, "an environment variable name")),
    "timeout_s": FieldSpec(_number(minimum=0, maximum=300, exclusive_min=True), 5.0),
    "max_attempts": FieldSpec(_number(minimum=1, maximum=100, integer=True), 5),
    "backoff_s": FieldSpec(_number(minimum=0, maximum=3600, exclusive_min=True), 1.0),
    "backoff_max_s": FieldSpec(_number(minimum=0, maximum=86400, exclusive_min=True), 60.0),
    "dead_letter": FieldSpec(_string(what="a file path")),
    "path": FieldSpec(_string(what="a file path")),
    "queue_max": FieldSpec(_number(minimum=1, maximum=1_000_000, integer=True), 1000),
    "resend_interval": FieldSpec(_duration(positive=True)),
    "send_resolved": FieldSpec(_bool, True),
}

DEFAULT_FIELDS = ("for", "severity", "repeat_interval", "hooks", "labels")
