"""InfluxQL quoting and query building, and InfluxDB store URLs: pure functions, no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.errors import ConfigError
from collector.schema import Point, to_line
from collector.store import AggregateQuery, open_store
from collector.store.influx import (
    InfluxStore,
    LineEncoder,
    check_duration,
    continuous_queries,
    duration_s,
    error_text,
)
from collector.store.influxql import aggregate, quote_ident, quote_string, source

NS = 1_000_000_000


def _unquote(text: str, quote: str) -> str:
    """How InfluxQL's scanner reads a quoted token: backslash escapes the next character."""
    assert text[0] == text[-1] == quote
    out, i = [], 1
    while i < len(text) - 1:
        if text[i] == "\\":
            out.append(text[i + 1])
            i += 2
        else:
            assert text[i] != quote, "an unescaped quote would end the token early"
            out.append(text[i])
            i += 1
    return "".join(out)


@given(st.text().filter(lambda s: "\n" not in s and "\r" not in s))
def test_quoting_cannot_be_broken_out_of(text: str) -> None:
    assert _unquote(quote_string(text), "'") == text
    assert _unquote(quote_ident(text), '"') == text


def test_newlines_are_refused_in_literals() -> None:
    with pytest.raises(ValueError, match="newlines"):
        quote_string("a\nb")


def test_aggregate_query_text() -> None:
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("last", "power_w")), 10 * NS, 70 * NS,
                       group_by=("host",), bucket_s=60,
                       where={"job": ("x' OR '1'='1", "b"), "host": "h"})
    assert aggregate(q, source("gpu", "db", "raw")) == (
        'SELECT sum("energy_j"::field) AS "sum_energy_j", last("power_w"::field) AS '
        '"last_power_w" FROM "db"."raw"."gpu" WHERE time >= 10000000000 AND time < '
        '70000000000 AND "host"::tag = \'h\' AND ("job"::tag = \'x\\\' OR \\\'1\\\'=\\\'1\' OR '
        '"job"::tag = \'b\') GROUP BY time(60s), "host" fill(none)')
    assert aggregate(AggregateQuery("gpu", (("sum", "x"),), 0, 1, where={"host": ()}), '"g"') \
        is None


def test_line_encoder_matches_to_line() -> None:
    enc = LineEncoder(max_series=2)
    pts = [Point("gpu", (("host", f"h {i}"), ("model", "A,B=C")),
                 (("power_w", 1.5 + i), ("ok", True), ("n", 3), ("s", 'q"\\')), i)
           for i in range(5)]
    for p in pts * 2:
        assert enc.line(p) == to_line(p)


def test_urls_are_checked_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("influxdb://me:pw@db.example:8087/metrics?rp=raw&batch_size=100&gzip=auto")
    assert isinstance(store, InfluxStore)
    assert store.url == "influxdb://me:***@db.example:8087/metrics?rp=raw&batch_size=100&gzip=auto"
    assert (store.database, store.rp, store.batch_size, store.gzip) == ("metrics", "raw", 100, True)
    assert open_store("influxdb://127.0.0.1:8086/m").gzip is False  # type: ignore[attr-defined]
    for url, match in [
        ("influxdb://127.0.0.1:8086/", "must name one database"),
        ("influxdb://127.0.0.1:8086/a/b", "must name one database"),
        ("influxdb:///db", "names no host"),
        ("influxdb://h:99999/db", "bad port"),
        ("influxdb://h/db?colour=red", "unknown URL parameter 'colour'"),
        ("influxdb://h/db?batch_size=-3", "batch_size='-3'"),
        ("influxdb://h/db?gzip=maybe", "gzip='maybe'"),
        ("influxdb2://h/bucket", "needs \\?org=ORG"),
    ]:
        with pytest.raises(ConfigError, match=match):
            open_store(url)
    with pytest.raises(ConfigError) as exc:
        open_store("influxdb://u:topsecret@h/db?nope=1")
    assert "topsecret" not in str(exc.value)


def test_durations() -> None:
    check_duration("--raw-retention", "30d")
    check_duration("--raw-retention", "1h30m")
    check_duration("--raw-retention", "INF")
    with pytest.raises(ConfigError, match="--raw-retention: '30 days'"):
        check_duration("--raw-retention", "30 days")
    assert duration_s("1h30m") == 5400 and duration_s("2w") == 14 * 86400


def test_rollups_keep_sum_count_min_and_max_of_every_field() -> None:
    cqs = dict(continuous_queries("db"))
    gpu = cqs["wattlens_gpu_1m_v2"]
    assert 'sum("energy_j") AS "energy_j_sum"' in gpu and 'count("power_w") AS "power_w_count"' in gpu
    assert 'min("power_w") AS "power_w_min"' in gpu and 'max("power_w") AS "power_w_max"' in gpu
    assert 'FROM "db"."raw"."gpu" GROUP BY time(1m), *' in gpu
    job_1h = cqs["wattlens_job_1h_v2"]
    assert 'FROM "db"."rollup_1m"."job" GROUP BY time(1h), *' in job_1h
    assert 'sum("samples_sum") AS "samples_sum"' in job_1h
    assert 'sum("samples_count") AS "samples_count"' in job_1h
    # The node rollup: the GPUs' 1m rows summed per host, model and method; 5m and 1h from it.
    node_1m, node_5m = cqs["wattlens_gpu_node_1m_v2"], cqs["wattlens_gpu_node_5m_v2"]
    assert 'sum("energy_j_sum") AS "energy_j_sum"' in node_1m
    assert 'min("power_w_min") AS "power_w_min"' in node_1m
    assert ('INTO "db"."rollup_1m"."gpu_node" FROM "db"."rollup_1m"."gpu" '
            'GROUP BY time(1m), "host", "model", "method"') in node_1m
    assert ('INTO "db"."rollup_5m"."gpu_node" FROM "db"."rollup_1m"."gpu_node" '
            'GROUP BY time(5m), "host", "model", "method"') in node_5m


def test_error_text_is_short_and_readable() -> None:
    assert error_text(b'{"error":"field type conflict"}') == "field type conflict"
    assert error_text(b"plain") == "plain"
    assert len(error_text(b"x" * 5000)) < 500
