"""InfluxDB stores, by URL scheme: ``influxdb://`` (v1 /write) and ``influxdb2://`` (v2 WriteApi).

The parts live one concept to a module: :mod:`~collector.store.influx_url`
(URLs), :mod:`~collector.store.influx_http` (HTTP client and errors),
:mod:`~collector.store.influx_v1` and :mod:`~collector.store.influx_v2` (the
stores), :mod:`~collector.store.influx_rollups` (tiers, continuous queries,
downsampling) and :mod:`collector.lineprotocol` (the format). This module is
the registry's entry point, and keeps the names callers already import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collector.lineprotocol import LineEncoder
from collector.store.influx_http import TOKEN_ENV, HttpClient, error_text, raise_for_status
from collector.store.influx_rollups import (
    RAW_RP,
    ROLLUP_1H_RP,
    ROLLUP_1M_RP,
    check_duration,
    continuous_queries,
    duration_s,
    rollup_queries,
    rollup_select,
)
from collector.store.influx_url import InfluxURL, parse_url
from collector.store.influx_v1 import InfluxStore
from collector.store.influx_v2 import Influx2Store

__all__ = ["RAW_RP", "ROLLUP_1H_RP", "ROLLUP_1M_RP", "TOKEN_ENV", "HttpClient", "Influx2Store",
           "InfluxStore", "InfluxURL", "LineEncoder", "check_duration", "continuous_queries",
           "duration_s", "error_text", "from_url", "from_url_v2", "init_store", "parse_url",
           "raise_for_status", "rollup_queries", "rollup_select"]


def init_store(store: object, **options: Any) -> list[str]:
    """Prepare a store for writing (database, retention, rollups); a no-op for stores that need none."""
    init: Callable[..., list[str]] | None = getattr(store, "init", None)
    if init is None:
        return [f"{getattr(store, 'url', store)}: nothing to set up"]
    return init(**options)


def from_url(url: str) -> InfluxStore:
    """``influxdb://[user:pass@]host:8086/DB[?rp=&batch_size=&max_inflight=&timeout_s=&gzip=&tls=]``."""
    return InfluxStore(url)


def from_url_v2(url: str) -> Influx2Store:
    """``influxdb2://host:8086/BUCKET?org=ORG[&batch_size=&flush_interval_ms=&timeout_s=&gzip=&tls=]``."""
    return Influx2Store(url)
