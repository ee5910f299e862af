"""Store registry: a URL scheme -> "module:factory". Same code path for writes and reads everywhere.

- ``sqlite:///path/to/file.db`` (or a bare path): embedded default, stdlib sqlite3 in WAL mode.
- ``influxdb://[user:pass@]host:8086/DB``: InfluxDB v1 write API, InfluxQL reads.
- ``influxdb2://host:8086/BUCKET?org=ORG``: v2 write API via influxdb-client, InfluxQL reads;
  the token comes from ``WATTLENS_INFLUX_TOKEN``.
- ``prometheus://host:9090[/path]?mapping=NAME``: read-only PromQL (Prometheus, VictoriaMetrics,
  Thanos, Mimir); the token comes from ``WATTLENS_PROMETHEUS_TOKEN``.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from collector.errors import ConfigError
from collector.store.base import AggregateQuery, Row, Sink, Store

__all__ = ["AggregateQuery", "Row", "Sink", "Store", "open_store"]

REGISTRY: dict[str, str] = {
    "sqlite": "collector.store.sqlite:from_url",
    "influxdb": "collector.store.influx:from_url",
    "influxdb2": "collector.store.influx:from_url_v2",
    "prometheus": "collector.store.prometheus:from_url",
}


def open_store(url: str) -> Store:
    """Open the store named by ``url``; a plain filesystem path means SQLite."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"--store: expected a store URL, got {url!r}")
    scheme = urlsplit(url).scheme if "://" in url else "sqlite"
    if scheme not in REGISTRY:
        known = ", ".join(f"{s}://" for s in sorted(REGISTRY))
        raise ConfigError(f"--store: unknown scheme {scheme!r} in {redact_url(url)!r}; use {known}")
    module_name, _, factory = REGISTRY[scheme].partition(":")
    store: Store = getattr(importlib.import_module(module_name), factory)(url)
    return store


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to log or show in an error."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
