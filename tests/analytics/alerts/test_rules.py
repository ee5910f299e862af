"""Rule files: the example parses; broken files get one-line errors naming the rule, the field and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.alerts.fields import format_duration, parse_duration_s
from analytics.alerts.rules import RuleFileError, load_rules, parse_rules
from collector.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "alerts.toml"


def errors_of(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        parse_rules(text, "rules.toml")
    assert isinstance(info.value, ConfigError)  # the CLI turns it into exit code 2
    return info.value.errors


def test_example_file_parses_every_kind() -> None:
    rs = load_rules(EXAMPLE)
    kinds = {r.kind for r in rs.rules}
    assert kinds == {"threshold", "trend", "absence", "idle_waste", "carbon", "budget"}
    idle = rs.rule_by_name["idle-gpu-waste"]
    assert idle.for_s == 15 * 60
    assert idle.hysteresis == 5
    assert idle.params["util_below_pct"] == 5
    # [defaults] labels merge under the rule's own
    assert idle.labels == {"team": "ml-infra", "action": "release-or-consolidate"}
    # hooks default to every hook; a rule may name its own
    assert set(idle.hooks) == {h.name for h in rs.hooks}
    assert rs.rule_by_name["gpu-power-at-cap"].hooks == ("ops-webhook",)
    # no secret is in the parsed model, only the variable names
    webhook = rs.hook("ops-webhook")
    assert webhook.secret_env == "WATTLENS_WEBHOOK_SECRET"
    assert rs.hook("slack").url is None and rs.hook("slack").url_env == "WATTLENS_SLACK_WEBHOOK_URL"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h30m", 5400), ("0s", 0), ("2d", 172800), (45, 45), ("250ms", 0.25),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["15 minutes", "m5", "", "-5m", "5m3", True, [5]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(bad)


def test_format_duration_round_trips() -> None:
    for s in (1, 59, 60, 90, 3600, 5400, 86400, 7 * 86400 + 61):
        assert parse_duration_s(format_duration(s)) == s


# Each broken file: (text, the line of the error, fragments the one-line error must contain).
BROKEN = {
    "unknown kind": ('''
[[rule]]
name = "hot"
kind = "treshold"
above_w = 500
''', 4, ["rule 'hot'", "kind:", "'treshold'", "threshold, trend"]),
    "missing required field": ('''
[[rule]]
name = "idle"
kind = "idle_waste"
for = "15m"
''', 2, ["rule 'idle'", "above_w:", "required"]),
    "bad duration": ('''
[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
for = "fifteen minutes"
''', 6, ["rule 'idle'", "for:", "'fifteen minutes'"]),
    "wrong type": ('''
[[rule]]
name = "hot"
kind = "threshold"
above_w = "high"
''', 5, ["rule 'hot'", "above_w:", "expected a number", "'high'"]),
    "misspelt field": ('''
[[rule]]
name = "drop"
kind = "trend"
drop_pct = 10
baseline_windw = "1h"
''', 6, ["rule 'drop'", "baseline_windw:", "unknown field"]),
    "second rule, bad severity": ('''
[[rule]]
name = "ok"
kind = "idle_waste"
above_w = 40

[[rule]]
name = "loud"
kind = "idle_waste"
above_w = 40
severity = "urgent"
''', 11, ["rule 'loud'", "severity:", "'urgent'", "info, warning, critical"]),
    "duplicate name": ('''
[[rule]]
name = "same"
kind = "idle_waste"
above_w = 40

[[rule]]
name = "same"
kind = "idle_waste"
above_w = 50
''', 8, ["rule 'same'", "name:", "duplicate"]),
    "both thresholds": ('''
[[rule]]
name = "hot"
kind = "threshold"
above_w = 500
above_cap_pct = 95
''', 5, ["rule 'hot'", "above_w:", "exactly one"]),
    "unknown hook": ('''
[[hook]]
name = "ops"
type = "webhook"
url = "https://example.com/hook"
secret_env = "OPS_SECRET"

[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
hooks = ["opps"]
''', 12, ["rule 'idle'", "hooks:", "'opps'", "ops"]),
    "secret in the file": ('''
[[hook]]
name = "ops"
type = "webhook"
url = "https://example.com/hook"
secret = "hunter2"

[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
''', 6, ["hook 'ops'", "secret:", "environment variable", "secret_env"]),
    "webhook without a secret": ('''
[[hook]]
name = "ops"
type = "webhook"
url = "https://example.com/hook"

[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
''', 2, ["hook 'ops'", "secret_env:", "required"]),
    "bad label name": ('''
[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
labels = { "team-name" = "ml" }
''', 6, ["rule 'idle'", "labels:", "'team-name'"]),
    "absence without for": ('''
[[rule]]
name = "gone"
kind = "absence"
per = "host"
''', 2, ["rule 'gone'", "for:", "silence"]),
    "unknown summary placeholder": ('''
[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
summary = "{hostname} idles"
''', 6, ["rule 'idle'", "summary:", "{hostname}"]),
    "url with credentials": ('''
[[hook]]
name = "am"
type = "alertmanager"
url = "http://admin:pw@127.0.0.1:9093"

[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
''', 5, ["hook 'am'", "url:", "credentials"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_name_rule_field_and_line(case: str) -> None:
    text, line, fragments = BROKEN[case]
    errors = errors_of(text)
    assert len(errors) == 1, errors
    message = errors[0]
    assert "\n" not in message
    assert message.startswith(f"rules.toml:{line}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if case == "secret in the file":
        assert "hunter2" not in message


def test_toml_syntax_error_gives_the_line() -> None:
    errors = errors_of('[[rule]]\nname = "x"\nkind = idle_waste\n')
    assert errors[0].startswith("rules.toml:3: TOML syntax error"), errors


def test_every_problem_is_reported() -> None:
    errors = errors_of('''
[[rule]]
name = "a"
kind = "threshold"
above_w = -1

[[rule]]
name = "b"
kind = "trend"
drop_pct = 150
''')
    assert len(errors) == 2
    assert errors[0].startswith("rules.toml:5: rule 'a': above_w:")
    assert errors[1].startswith("rules.toml:10: rule 'b': drop_pct:")


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    assert "no [[rule]]" in errors_of("version = 1\n")[0]
    with pytest.raises(RuleFileError, match="does not exist"):
        load_rules(tmp_path / "nope.toml")


def test_hook_secrets_come_from_the_environment() -> None:
    rs = parse_rules('''
[[hook]]
name = "ops"
type = "webhook"
url_env = "OPS_URL"
secret_env = "OPS_SECRET"

[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
''')
    hook = rs.hook("ops")
    env = {"OPS_URL": "https://example.com/T000/B000/token123", "OPS_SECRET": "s3cret"}
    assert hook.resolve_url(env) == env["OPS_URL"]
    assert hook.secret(env) == b"s3cret"
    assert "token123" not in hook.display_url()
    with pytest.raises(ConfigError, match="OPS_SECRET is not set"):
        hook.secret({})
    with pytest.raises(ConfigError, match="OPS_URL") as info:
        hook.resolve_url({"OPS_URL": "ftp://example.com/x"})
    assert "ftp://example.com" not in str(info.value)  # a URL from the environment stays hidden
