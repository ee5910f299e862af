"""Provider intensity (collector.sources.carbon_live) for the report, the window and the CLI; table fallback."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from analytics import carbon, grid_table
from collector.errors import ConfigError
from collector.sources import carbon_live as adapters

HOUR_NS = carbon.HOUR_NS


@dataclass(frozen=True)
class LiveIntensity:
    """The figure `wattlens carbon live` shows: value, ``average``/``marginal``, where from, and
    why it is not live (``note``) when the table stood in."""

    zone: str
    g_per_kwh: float
    signal: str
    source: str
    time_ns: int
    forecast: list[tuple[int, float]] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"zone": self.zone, "g_per_kwh": self.g_per_kwh, "signal": self.signal,
                "source": self.source, "time_ns": self.time_ns,
                "forecast": [{"time_ns": t, "g_per_kwh": g} for t, g in self.forecast], "note": self.note}


def _cached(spec: str, base_url: str | None, cache_dir: str | Path | None,
            option: str = "--carbon-live") -> adapters.Cached:
    return adapters.Cached(adapters.from_env(grid_table.live_spec(spec), base_url, option=option), cache_dir)


def live_or_table(spec: str, *, fallback: str | None = None, forecast: bool = False,
                  base_url: str | None = None, cache_dir: str | Path | None = None,
                  now_ns: int | None = None) -> LiveIntensity:
    """The provider's current figure (and forecast); on a provider error, the bundled ``fallback``
    code with the error as a note, or the error itself when there is no fallback."""
    fb = grid_table.lookup(fallback, "--fallback") if fallback else None
    try:
        cached = _cached(spec, base_url, cache_dir, "carbon live")
        r = cached.latest()
        fc = [(x.time_ns, x.g_per_kwh) for x in cached.forecast()] if forecast else []
    except adapters.CarbonApiError as exc:
        if fb is None:
            raise ConfigError(f"carbon live {spec}: {exc}; pass --fallback CODE to use the bundled "
                              f"table instead") from None
        import time

        return LiveIntensity(fb.code, fb.g_per_kwh, fb.signal, fb.describe(), now_ns or time.time_ns(),
                             note=f"{exc}; using the bundled figure for {fb.code}")
    return LiveIntensity(r.zone, r.g_per_kwh, r.signal, f"{r.provider} (live, cached)", r.time_ns, fc,
                         cached.stale)


def hourly_means(readings: list[adapters.Reading]) -> dict[int, float]:
    """Provider points (5 min to 1 h apart) as hourly means keyed by hour start (ns)."""
    acc: dict[int, list[float]] = {}
    for r in readings:
        acc.setdefault(r.time_ns // HOUR_NS * HOUR_NS, []).append(r.g_per_kwh)
    return {h: sum(v) / len(v) for h, v in acc.items()}


def with_forecast(series: carbon.IntensitySeries | None, readings: list[adapters.Reading],
                  region: str) -> carbon.IntensitySeries:
    """The series with the provider's forecast hours added where it has no value of its own.

    Average forecasts only: emissions are counted with average intensity, so a marginal
    forecast (WattTime) is refused here with a message, never mixed in.
    """
    if any(r.signal != "average" for r in readings):
        raise ConfigError("--carbon-live: a marginal forecast (watttime) cannot be mixed into average "
                          "intensity; use electricitymaps:ZONE for the report")
    base = series or carbon.IntensitySeries(region, "no measured intensity", signal="average")
    added = {h: carbon.Intensity(g) for h, g in hourly_means(readings).items() if h not in base.hourly}
    provider = readings[0].provider if readings else "provider"
    return replace(base, hourly={**base.hourly, **added}, forecast_hours=frozenset(added) | base.forecast_hours,
                   source=f"{base.source}; forecast: {provider} {readings[0].zone if readings else region} "
                          f"(average, {len(added)} h)")


def load_forecast(spec: str, series: carbon.IntensitySeries | None, *, base_url: str | None = None,
                  cache_dir: str | Path | None = None) -> tuple[carbon.IntensitySeries | None, str | None]:
    """Add the provider's forecast to ``series``; on a provider error keep ``series`` (the table or
    the store) and return the error as a note."""
    try:
        readings = _cached(spec, base_url, cache_dir).forecast()
    except adapters.CarbonApiError as exc:
        return series, f"carbon forecast: {exc}; the window uses {series.describe() if series else 'no data'}"
    zone = adapters.parse_spec(grid_table.live_spec(spec))[1]
    return with_forecast(series, readings, series.region if series else zone), None
