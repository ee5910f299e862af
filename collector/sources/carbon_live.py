"""Live and forecast grid intensity: Electricity Maps (average), WattTime (marginal), cached; `carbon` points."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from collector.errors import ConfigError, WattlensError
from collector.schema import Point, point
from collector.sources.base import Probe, Tick

log = logging.getLogger(__name__)

NS = 1_000_000_000
G_PER_LB = 453.59237  # lb/MWh -> g/MWh; / 1000 -> g/kWh
PROVIDERS = ("electricitymaps", "watttime")
ENV = {"electricitymaps": ("ELECTRICITYMAPS_API_TOKEN",),
       "watttime": ("WATTTIME_USERNAME", "WATTTIME_PASSWORD")}
BASE_URL = {"electricitymaps": "https://api.electricitymap.org",
            "watttime": "https://api.watttime.org"}


class CarbonApiError(WattlensError):
    """A provider refused or failed; ``kind`` is auth, rate_limit, unknown_zone or unavailable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Reading:
    """One intensity figure: g CO2e/kWh, ``average`` or ``marginal``, from which provider, and
    whether it is a forecast (a time after the provider produced it)."""

    zone: str
    time_ns: int
    g_per_kwh: float
    signal: str
    provider: str
    forecast: bool = False


def _time_ns(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * NS)


class _Client:
    """HTTP GET of JSON with the provider's errors mapped once to CarbonApiError."""

    provider = ""

    def __init__(self, zone: str, base_url: str | None, timeout_s: float) -> None:
        if not zone.strip():
            raise ConfigError(f"--carbon-live: {self.provider}: zone must not be empty")
        self.zone = zone.strip()
        self.base_url = (base_url or BASE_URL[self.provider]).rstrip("/")
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigError(f"{self.provider} URL: expected http:// or https://, got {self.base_url!r}")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str], headers: dict[str, str]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}" if params else self.base_url + path
        req = urllib.request.Request(url, headers={**headers, "Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (scheme checked in __init__)
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")[:200]
            raise self._error(exc.code, body, exc.headers.get("Retry-After")) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise CarbonApiError("unavailable", f"{self.provider}: cannot reach {self.base_url}: "
                                 f"{getattr(exc, 'reason', exc)}") from None
        except ValueError:
            raise CarbonApiError("unavailable", f"{self.provider}: {path} did not answer JSON") from None

    def _error(self, status: int, body: str, retry_after: str | None) -> CarbonApiError:
        env = " and ".join(ENV[self.provider])
        if status in (401, 403) and "zone" not in body.lower() and "region" not in body.lower():
            return CarbonApiError("auth", f"{self.provider}: the key was refused (HTTP {status}); "
                                  f"check {env}")
        if status == 429:
            wait = f"; retry after {retry_after} s" if retry_after else ""
            return CarbonApiError("rate_limit", f"{self.provider}: rate limit reached (HTTP 429){wait}; "
                                  f"results are cached, so raise the refresh interval")
        if status in (400, 403, 404):
            return CarbonApiError("unknown_zone", f"{self.provider}: zone {self.zone!r} is unknown or "
                                  f"not in your plan (HTTP {status}: {body.strip()[:120]})")
        return CarbonApiError("unavailable", f"{self.provider}: HTTP {status}: {body.strip()[:120]}")

    def _number(self, value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise CarbonApiError("unavailable", f"{self.provider}: {what}: expected a non-negative "
                                 f"number, got {value!r}")
        return float(value)


class ElectricityMaps(_Client):
    """Electricity Maps API v3: grid-average (lifecycle) intensity, latest and forecast; header ``auth-token``."""

    provider = "electricitymaps"
    signal = "average"

    def __init__(self, zone: str, token: str, base_url: str | None = None, timeout_s: float = 10) -> None:
        super().__init__(zone, base_url, timeout_s)
        self._headers = {"auth-token": token}

    def latest(self) -> Reading:
        d = self._get("/v3/carbon-intensity/latest", {"zone": self.zone}, self._headers)
        return Reading(self.zone, _time_ns(d["datetime"]), self._number(d.get("carbonIntensity"),
                       "carbonIntensity"), self.signal, self.provider)

    def forecast(self) -> list[Reading]:
        d = self._get("/v3/carbon-intensity/forecast", {"zone": self.zone}, self._headers)
        return [Reading(self.zone, _time_ns(p["datetime"]), self._number(p.get("carbonIntensity"),
                        "forecast carbonIntensity"), self.signal, self.provider, True)
                for p in d.get("forecast", [])]


class WattTime(_Client):
    """WattTime API v3: marginal operating emissions rate (co2_moer, lb/MWh -> g/kWh); login with
    HTTP Basic, then a bearer token (valid 30 minutes, refreshed here after 25)."""

    provider = "watttime"
    signal = "marginal"
    token_ttl_s = 25 * 60

    def __init__(self, zone: str, username: str, password: str, base_url: str | None = None,
                 timeout_s: float = 10, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(zone, base_url, timeout_s)
        self._basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._token: tuple[str, float] | None = None
        self._clock = clock

    def _auth(self) -> dict[str, str]:
        if self._token is None or self._clock() - self._token[1] > self.token_ttl_s:
            d = self._get("/login", {}, {"Authorization": f"Basic {self._basic}"})
            if not isinstance(d, dict) or not d.get("token"):
                raise CarbonApiError("auth", "watttime: /login answered no token; check "
                                     "WATTTIME_USERNAME and WATTTIME_PASSWORD")
            self._token = (str(d["token"]), self._clock())
        return {"Authorization": f"Bearer {self._token[0]}"}

    def _points(self, horizon_h: int) -> list[Reading]:
        d = self._get("/v3/forecast", {"region": self.zone, "signal_type": "co2_moer",
                                        "horizon_hours": str(horizon_h)}, self._auth())
        units = d.get("meta", {}).get("units", "lbs_co2_per_mwh")
        if units != "lbs_co2_per_mwh":
            raise CarbonApiError("unavailable", f"watttime: units {units!r}, expected 'lbs_co2_per_mwh'")
        return [Reading(self.zone, _time_ns(p["point_time"]),
                        self._number(p.get("value"), "value") * G_PER_LB / 1000, self.signal,
                        self.provider, horizon_h > 0) for p in d.get("data", [])]

    def latest(self) -> Reading:
        pts = self._points(0)  # horizon 0: the current five minutes, as WattTime documents
        if not pts:
            raise CarbonApiError("unavailable", f"watttime: no current value for {self.zone!r}")
        return pts[0]

    def forecast(self) -> list[Reading]:
        return self._points(24)


Adapter = ElectricityMaps | WattTime


def parse_spec(spec: str, option: str = "--carbon-live") -> tuple[str, str]:
    """``PROVIDER:ZONE`` (electricitymaps:DE, watttime:CAISO_NORTH) -> (provider, zone)."""
    provider, _, zone = spec.partition(":")
    provider = provider.strip().lower()
    if provider not in PROVIDERS or not zone.strip():
        raise ConfigError(f"{option}: expected PROVIDER:ZONE with PROVIDER one of "
                          f"{', '.join(PROVIDERS)}, got {spec!r}")
    return provider, zone.strip()


def from_env(spec: str, base_url: str | None = None, env: dict[str, str] | None = None,
             option: str = "--carbon-live") -> Adapter:
    """The adapter for ``PROVIDER:ZONE`` with its key from the environment (never argv)."""
    provider, zone = parse_spec(spec, option)
    environ = os.environ if env is None else env
    missing = [k for k in ENV[provider] if not environ.get(k)]
    if missing:
        raise ConfigError(f"{option}: {provider} needs {' and '.join(missing)} in the environment")
    # WATTLENS_ELECTRICITYMAPS_URL / WATTLENS_WATTTIME_URL: a proxy or mirror (and the tests' server).
    url = base_url or environ.get(f"WATTLENS_{provider.upper()}_URL") or None
    if provider == "electricitymaps":
        return ElectricityMaps(zone, environ["ELECTRICITYMAPS_API_TOKEN"], url)
    return WattTime(zone, environ["WATTTIME_USERNAME"], environ["WATTTIME_PASSWORD"], url)


class Cached:
    """An adapter behind a JSON file cache: latest for ``latest_ttl_s``, forecast for ``forecast_ttl_s``.

    A failed call returns the cached value when there is one (and says so through ``stale``);
    otherwise the error propagates, so the caller can fall back to the bundled table.
    """

    def __init__(self, adapter: Adapter, cache_dir: str | Path | None = None, latest_ttl_s: float = 300,
                 forecast_ttl_s: float = 3600, clock: Callable[[], float] = time.time) -> None:
        self.adapter = adapter
        home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        root = Path(cache_dir) if cache_dir else home_cache / "wattlens"
        self.dir = root / "carbon"
        self.ttl = {"latest": latest_ttl_s, "forecast": forecast_ttl_s}
        self.clock = clock
        self.stale: str | None = None

    def _file(self, what: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.adapter.zone)
        return self.dir / f"{self.adapter.provider}_{safe}_{what}.json"

    def _fetch(self, what: str, call: Callable[[], Any], force: bool = False) -> list[Reading]:
        f = self._file(what)
        cached = self._read(f)
        if cached and not force and self.clock() - cached[0] < self.ttl[what]:
            return cached[1]
        try:
            got = call()
        except CarbonApiError as exc:
            if cached and exc.kind in ("rate_limit", "unavailable"):
                self.stale = f"{exc} (using the copy fetched {self.clock() - cached[0]:.0f} s ago)"
                return cached[1]
            raise
        readings = got if isinstance(got, list) else [got]
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fetched_at": self.clock(), "readings": [asdict(r) for r in readings]}))
            tmp.replace(f)
        except OSError as exc:  # a read-only home still gets the figure, only uncached
            log.warning("carbon cache %s not written: %s", f, exc)
        self.stale = None
        return readings

    @staticmethod
    def _read(f: Path) -> tuple[float, list[Reading]] | None:
        """(fetched_at, readings) from a cache file; None when missing or unreadable."""
        try:
            d = json.loads(f.read_text())
            return float(d["fetched_at"]), [Reading(**r) for r in d["readings"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def latest(self, force: bool = False) -> Reading:
        """The current figure; ``force`` asks the provider even within the TTL (checks the key)."""
        return self._fetch("latest", self.adapter.latest, force)[0]

    def forecast(self) -> list[Reading]:
        return self._fetch("forecast", self.adapter.forecast)


class CarbonLiveSource:
    """`wattlens collect --carbon-live PROVIDER:ZONE`: one `carbon` point per round from the cache.

    Average figures go to ``intensity_g_per_kwh``, marginal ones to ``marginal_g_per_kwh``, so the
    two never mix in one field; the point carries ``source`` and ``signal`` tags.
    """

    name = "carbon"

    def __init__(self, cached: Cached, region: str | None = None, every_s: float = 300) -> None:
        self.cached = cached
        self.region = region or cached.adapter.zone
        self.every_s = every_s  # one point per this many seconds, whatever the agent's interval
        self._last_mono: float | None = None
        self._warned: str | None = None

    def probe(self) -> Probe:
        try:
            r = self.cached.latest()
        except CarbonApiError as exc:
            return Probe.skipped(str(exc))
        return Probe.found(f"{r.provider} {r.zone}: {r.g_per_kwh:.0f} g/kWh ({r.signal})")

    def sample(self, tick: Tick) -> list[Point]:
        if self._last_mono is not None and tick.mono_s - self._last_mono < self.every_s:
            return []
        self._last_mono = tick.mono_s
        try:
            r = self.cached.latest()
        except CarbonApiError as exc:
            if str(exc) != self._warned:  # a repeating failure is logged once
                log.warning("carbon source: %s", exc)
                self._warned = str(exc)
            return []
        self._warned = None
        field = "intensity_g_per_kwh" if r.signal == "average" else "marginal_g_per_kwh"
        return [point("carbon", {"region": self.region, "source": r.provider, "signal": r.signal},
                      {field: r.g_per_kwh}, tick.wall_ns)]

    def close(self) -> None:
        return None


def live_source(spec: str, every_s: float = 300, region: str | None = None) -> CarbonLiveSource:
    """The `collect --carbon-live` source: a bad key or zone stops the start with one clear line;
    a provider that is only down or rate-limited is warned about and retried every round.
    ``region`` is the points' region tag (default: the provider's zone)."""
    src = CarbonLiveSource(Cached(from_env(spec), latest_ttl_s=every_s), region, every_s=every_s)
    try:
        src.cached.latest(force=True)  # one call at start, so a bad key or zone is caught now
    except CarbonApiError as exc:
        if exc.kind in ("auth", "unknown_zone"):
            raise ConfigError(f"--carbon-live: {exc}") from None
        log.warning("carbon source: %s; will retry", exc)
    return src
