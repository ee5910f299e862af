"""Alert rule files (TOML): rules and hooks, validated, with errors that name the rule, the field and the line."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analytics.alerts.fields import (
    COMMON_FIELDS,
    DEFAULT_AM_RESEND_S,
    DEFAULT_FIELDS,
    DEFAULT_REPEAT_S,
    HOOK_FIELDS,
    KIND_FIELDS,
    SECRET_KEYS,
    BadValue,
    format_duration,
)
from analytics.alerts.model import HookSpec, Rule, RuleSet, _check_url, redact
from collector.errors import ConfigError

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")


class RuleFileError(ConfigError):
    """A rule file that cannot be used; ``errors`` holds one line per problem (file:line: rule: field: why)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else "invalid rule file"
        more = len(self.errors) - 1
        super().__init__(first if more <= 0 else f"{first} (and {more} more; "
                                                  f"see `wattlens alerts check`)")


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
        if key not in DEFAULT_FIELDS:
            errs.add("defaults", key, f"unknown setting; [defaults] takes "
                     f"{', '.join(DEFAULT_FIELDS)}", line)
            continue
        try:
            out[key] = COMMON_FIELDS[key].parse(value)
        except BadValue as exc:
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
            spec = HOOK_FIELDS.get(key)
            if spec is None:
                errs.add(what, key, f"unknown field; hooks take {', '.join(HOOK_FIELDS)}", line)
                ok = False
                continue
            try:
                values[key] = spec.parse(value)
            except BadValue as exc:
                errs.add(what, key, str(exc), line)
                ok = False
        for key, spec in HOOK_FIELDS.items():
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
    kind_fields = KIND_FIELDS.get(kind, {}) if isinstance(kind, str) else {}
    values: dict[str, Any] = {}
    for key, value in table.items():
        line = errs.loc.key("rule", i, key)
        if key in SECRET_KEYS:
            errs.add(what, key, _secret_key_message(key, "a hook's secret_env"), line)
            continue
        spec = COMMON_FIELDS.get(key) or kind_fields.get(key)
        if spec is None:
            if kind in KIND_FIELDS:
                known = ", ".join([*COMMON_FIELDS, *kind_fields])
                errs.add(what, key, f"unknown field for kind {kind!r}; known: {known}", line)
            elif not any(key in f for f in KIND_FIELDS.values()):
                errs.add(what, key, "unknown field", line)
            continue
        try:
            values[key] = spec.parse(value)
        except BadValue as exc:
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


# The parsed model lives in analytics.alerts.model; these names stay importable from here.
__all__ = ["DEFAULT_RULES", "HookSpec", "Rule", "RuleFileError", "RuleSet", "format_duration", "load_rules",
           "parse_rules", "redact"]
