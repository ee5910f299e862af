"""Store URLs for InfluxDB: ``influxdb[2]://[user:pass@]host:port/NAME?k=v``, parsed and checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from collector.errors import ConfigError

# --- URLs --------------------------------------------------------------------


@dataclass(frozen=True)
class InfluxURL:
    """A parsed store URL; ``display`` is safe to log (no password)."""

    scheme: str
    base_url: str  # http(s)://host:port
    host: str
    database: str
    display: str
    username: str | None
    password: str | None
    params: Mapping[str, str]

    def param(self, name: str, default: str) -> str:
        return self.params.get(name, default)

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.params.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value > minimum:
            raise ConfigError(f"--store: URL parameter {name}={raw!r} in {self.display!r} must "
                              f"be a number above {minimum:g}")
        return value

    def flag(self, name: str, default: str) -> str:
        value = self.params.get(name, default).lower()
        if value not in ("on", "off", "auto", "true", "false", "1", "0"):
            raise ConfigError(f"--store: URL parameter {name}={value!r} in {self.display!r} "
                              f"must be on, off or auto")
        return {"true": "on", "1": "on", "false": "off", "0": "off"}.get(value, value)


_V1_PARAMS = ("rp", "timeout_s", "batch_size", "max_inflight", "gzip", "tls", "chunk_size")
_V2_PARAMS = ("org", "rp", "timeout_s", "batch_size", "flush_interval_ms", "gzip", "tls",
              "chunk_size")


def parse_url(url: str, known: Sequence[str]) -> InfluxURL:
    """Split ``influxdb[2]://[user:pass@]host:port/NAME?k=v`` and check every part."""
    from collector.store import redact_url

    display = redact_url(url)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--store: bad port in {display!r}; use {parts.scheme}://host:8086/NAME") \
            from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"--store: {display!r} names no host; use {parts.scheme}://host:8086/NAME")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        what = "database" if parts.scheme == "influxdb" else "bucket"
        raise ConfigError(f"--store: {display!r} must name one {what}, got {database!r}; use "
                          f"{parts.scheme}://{host}:{port or 8086}/NAME")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"--store: unknown URL parameter {unknown[0]!r} in {display!r}; "
                          f"known: {', '.join(known)}")
    tls = params.get("tls", "off").lower() in ("on", "true", "1")
    netloc = f"[{host}]" if ":" in host else host
    base = f"{'https' if tls else 'http'}://{netloc}:{port or 8086}"
    return InfluxURL(
        scheme=parts.scheme, base_url=base, host=host, database=database, display=display,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        params=params,
    )
