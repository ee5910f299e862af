"""Fuzzing the inputs an operator or a client controls: config files, env values, point builders."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.timeutil import parse_duration_s, parse_time_ns
from collector.errors import ConfigError
from collector.schema import point, to_line
from collector.store import open_store
from wattlens.config import option, port_number, positive_float, positive_int, resolve

PRINTABLE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    option(p, "--interval", type=positive_float, default=1.0)
    option(p, "--prometheus-port", type=port_number, default=9464)
    option(p, "--nodes", type=positive_int, default=4)
    option(p, "--store", default="sqlite:///x.db")
    option(p, "--once", action="store_true", default=False)
    return p


@given(st.binary(max_size=400))
def test_any_config_file_either_loads_or_fails_with_a_config_error(
        tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    # Regression: a non-UTF-8 file used to crash with UnicodeDecodeError.
    cfg = tmp_path_factory.mktemp("cfg") / "w.toml"
    cfg.write_bytes(raw)
    parser = _parser()
    args = parser.parse_args(["--config", str(cfg)])
    try:
        resolve(parser, args, "collect")
    except ConfigError as exc:
        assert str(exc).startswith("--config")
    else:
        assert args.interval is not None and args.nodes is not None


@given(st.dictionaries(st.sampled_from(["interval", "prometheus-port", "nodes", "store", "once",
                                        "unknown-key"]),
                       st.one_of(PRINTABLE, st.integers(), st.floats(allow_nan=True),
                                 st.booleans()), max_size=5))
def test_any_config_table_either_resolves_or_names_the_setting(
        tmp_path_factory: pytest.TempPathFactory, table: dict[str, object]) -> None:
    import json

    cfg = tmp_path_factory.mktemp("cfg") / "w.toml"
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()
                     if not (isinstance(v, float) and not math.isfinite(v)))
    cfg.write_text("[collect]\n" + body + "\n")
    parser = _parser()
    args = parser.parse_args(["--config", str(cfg)])
    try:
        resolve(parser, args, "collect")
    except ConfigError as exc:
        assert "[collect]" in str(exc) or "--config" in str(exc)


@given(PRINTABLE.filter(lambda v: "\x00" not in v))  # an environment cannot hold NUL
def test_any_environment_value_either_converts_or_names_the_variable(value: str) -> None:
    parser = _parser()
    args = parser.parse_args([])
    old = os.environ.get("WATTLENS_INTERVAL")
    os.environ["WATTLENS_INTERVAL"] = value
    try:
        resolve(parser, args, "collect")
    except ConfigError as exc:
        assert "WATTLENS_INTERVAL" in str(exc)
    else:
        assert args.interval > 0 or value.strip() == ""
    finally:
        if old is None:
            os.environ.pop("WATTLENS_INTERVAL", None)
        else:
            os.environ["WATTLENS_INTERVAL"] = old


@given(PRINTABLE)
def test_durations_and_times_parse_or_fail_clearly(text: str) -> None:
    for fn in (lambda t: parse_duration_s(t, "--since"), lambda t: parse_time_ns(t, "--since")):
        try:
            fn(text)
        except ConfigError as exc:
            assert "--since" in str(exc)


@given(st.dictionaries(PRINTABLE, PRINTABLE, max_size=4),
       st.dictionaries(PRINTABLE, st.one_of(st.floats(), st.integers(), st.booleans(), PRINTABLE,
                                            st.none()), max_size=4),
       PRINTABLE, st.integers(-5, 2**63))
def test_point_builder_accepts_or_names_the_problem_and_output_is_one_line(
        tags: dict[str, str], fields: dict[str, object], measurement: str, time_ns: int) -> None:
    try:
        p = point(measurement, tags, fields, time_ns)  # type: ignore[arg-type]
    except ValueError as exc:
        assert any(w in str(exc) for w in ("tag", "field", "measurement", "time_ns", "backslash"))
        return
    line = to_line(p)
    assert "\n" not in line
    assert line.endswith(f" {p.time_ns}")
    for _, v in p.fields:
        assert not (isinstance(v, float) and not math.isfinite(v))


@given(PRINTABLE)
def test_any_store_url_opens_or_fails_with_a_config_error(url: str) -> None:
    if "://" not in url or url.startswith(("sqlite:", "influxdb")):
        return  # paths and real schemes would create files or connect: covered elsewhere
    with pytest.raises(ConfigError):
        open_store(url)


def test_store_url_password_never_appears_in_errors(tmp_path: Path) -> None:
    from collector.store import redact_url

    url = "influxdb://user:s3cr3t-pass@127.0.0.1:1/db"
    assert "s3cr3t" not in redact_url(url)
    with pytest.raises(ConfigError) as info:
        open_store(url.replace("influxdb", "influx"))
    assert "s3cr3t" not in str(info.value)


RULE_KINDS = ["threshold", "trend", "absence", "idle_waste", "carbon", "budget"]
RULE_KEYS = ["name", "for", "severity", "labels", "hysteresis_pct", "match", "hooks",
             "above_w", "util_below_pct", "power_above_w", "drop_pct", "max_kwh", "max_kg_co2",
             "above_g_per_kwh", "period", "target", "baseline"]


@given(st.lists(st.dictionaries(st.sampled_from(RULE_KEYS),
                                st.one_of(PRINTABLE, st.integers(-10, 10**6),
                                          st.floats(allow_nan=False, allow_infinity=False),
                                          st.booleans(), st.lists(PRINTABLE, max_size=2)),
                                max_size=6), max_size=3))
def test_any_rule_file_parses_or_names_the_problem(rules: list[dict[str, object]]) -> None:
    import json

    from analytics.alerts.rules import RuleFileError, parse_rules

    body = []
    for rule in rules:
        body.append("[[rule]]")
        body.append(f'name = "r{len(body)}"')
        body.append(f"kind = {json.dumps(RULE_KINDS[len(body) % len(RULE_KINDS)])}")
        body += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in rule.items() if k != "name"]
    try:
        parsed = parse_rules("\n".join(body), "fuzz.toml")
    except RuleFileError as exc:
        assert "fuzz.toml" in str(exc)
    else:
        assert parsed is not None


@given(PRINTABLE)
def test_any_rule_file_text_parses_or_fails_with_a_rule_file_error(text: str) -> None:
    from analytics.alerts.rules import RuleFileError, parse_rules

    try:
        parse_rules(text, "fuzz.toml")
    except RuleFileError as exc:
        assert "fuzz.toml" in str(exc)
