"""Grid carbon intensity (hourly series, CSV, bundled annual averages), emissions, forecasts and low-carbon windows."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from analytics import grid_table
from collector.errors import ConfigError, WattlensError

NS = 1_000_000_000
HOUR_NS = 3600 * NS
J_PER_KWH = 3.6e6
MAX_GAP_S = 3 * 3600  # an hour with no intensity borrows the nearest known hour within this

NO_CARBON_HINT = ("pass --carbon-csv FILE (timestamp,region,g_per_kwh[,renewable_pct]) or "
                  "--country CODE for an annual average, or collect the `carbon` measurement")


class CarbonDataMissing(WattlensError):
    """No grid intensity is known for the energy in question; the message says what to supply."""


@dataclass(frozen=True)
class Intensity:
    """Grid carbon intensity (g CO2 per kWh) and renewable share (%, None when unknown)."""

    g_per_kwh: float
    renewable_pct: float | None = None


@dataclass
class IntensitySeries:
    """Hourly intensity for one region, keyed by epoch-aligned hour start (ns).

    ``annual`` is a flat value used for hours the series does not cover (the
    bundled table); ``source`` says where the numbers came from.
    """

    region: str
    source: str
    hourly: dict[int, Intensity] = field(default_factory=dict)
    annual: Intensity | None = None
    max_gap_s: float = MAX_GAP_S
    signal: str | None = None  # "average" or "marginal" when the source says which
    forecast_hours: frozenset[int] = frozenset()  # hours whose value is a provider's forecast
    fallback: str | None = None  # the option whose ``annual`` fills hours, e.g. "--country GB"
    fallback_source: str = ""  # where that annual figure comes from, when it is not ``source``

    def at(self, t_ns: int) -> Intensity | None:
        """The intensity for the hour containing ``t_ns``; the nearest known hour within the gap limit."""
        return self.lookup(t_ns)[0]

    def lookup(self, t_ns: int) -> tuple[Intensity | None, bool]:
        """:meth:`at`, and whether the value is the ``annual`` figure rather than an hourly one."""
        hour = t_ns // HOUR_NS * HOUR_NS
        got = self.hourly.get(hour)
        if got is not None:
            return got, False
        for k in range(1, int(self.max_gap_s // 3600) + 1):
            for h in (hour - k * HOUR_NS, hour + k * HOUR_NS):
                got = self.hourly.get(h)
                if got is not None and h not in self.forecast_hours:  # a forecast speaks for its hour only
                    return got, False
        return self.annual, self.annual is not None

    def describe(self) -> str:
        """The region and where its numbers came from, for messages and evidence."""
        kind = f"{self.signal}, " if self.signal and self.signal not in self.source else ""
        return f"{self.region} ({kind}{self.source})"


def from_store_rows(rows: Mapping[str, Mapping[int, tuple[float, float | None]]],
                    region: str | None = None) -> IntensitySeries | None:
    """Build a series from ``queries.carbon_hourly`` output; None when the region has no data."""
    if not rows:
        return None
    if region is None:
        if len(rows) > 1:
            raise ConfigError(f"--region: the store holds carbon data for several regions "
                              f"({', '.join(sorted(rows))}); choose one")
        region = next(iter(rows))
    hours = rows.get(region)
    if not hours:
        return None
    return IntensitySeries(region, "store: carbon measurement",
                           {h: Intensity(g, r) for h, (g, r) in hours.items()}, signal="average")


def _parse_time(text: str, where: str) -> int:
    text = text.strip()
    try:
        return int(float(text) * NS)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: timestamp: expected ISO 8601 or epoch seconds, "
                          f"got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * NS)


def _parse_number(text: str, name: str, where: str, *, upper: float | None = None) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {name}: expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"between 0 and {upper:g}" if upper is not None else "a non-negative number"
        raise ConfigError(f"{where}: {name}: must be {bound}, got {text!r}")
    return value


def load_intensity_csv(path: str | Path) -> dict[str, IntensitySeries]:
    """Read ``timestamp,region,g_per_kwh[,renewable_pct]`` rows into one hourly series per region.

    Timestamps are ISO 8601 (UTC unless an offset is given) or epoch seconds; a
    value applies to the hour containing its timestamp (several in one hour are
    averaged). Future hours are a forecast and are used as such.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--carbon-csv: file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"--carbon-csv: cannot read {str(p)!r}: {exc}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise ConfigError(f"--carbon-csv: {p} is empty; expected a header "
                          f"timestamp,region,g_per_kwh[,renewable_pct]")
    cols = [h.strip().lower() for h in header]
    for need in ("timestamp", "region", "g_per_kwh"):
        if need not in cols:
            raise ConfigError(f"--carbon-csv: {p}: header lacks column {need!r}; got {header!r}")
    idx = {name: cols.index(name) for name in cols}
    acc: dict[str, dict[int, list[tuple[float, float | None]]]] = {}
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"--carbon-csv: {p}:{lineno}"
        if len(row) < len(cols):
            raise ConfigError(f"{where}: expected {len(cols)} columns, got {len(row)}: {row!r}")
        t_ns = _parse_time(row[idx["timestamp"]], where)
        region = row[idx["region"]].strip()
        if not region:
            raise ConfigError(f"{where}: region: must not be empty")
        g = _parse_number(row[idx["g_per_kwh"]], "g_per_kwh", where)
        ren: float | None = None
        if "renewable_pct" in idx and row[idx["renewable_pct"]].strip():
            ren = _parse_number(row[idx["renewable_pct"]], "renewable_pct", where, upper=100)
        acc.setdefault(region, {}).setdefault(t_ns // HOUR_NS * HOUR_NS, []).append((g, ren))
    if not acc:
        raise ConfigError(f"--carbon-csv: {p} holds no data rows")
    out = {}
    for region, hours in acc.items():
        series = {}
        for h, vals in hours.items():
            rens = [r for _, r in vals if r is not None]
            series[h] = Intensity(sum(g for g, _ in vals) / len(vals),
                                  sum(rens) / len(rens) if rens else None)
        out[region] = IntensitySeries(region, f"csv: {p.name}", series, signal="average")
    return out


def bundled_table() -> dict[str, grid_table.GridRow]:
    """The bundled annual averages (analytics/data/grid_intensity.csv), by upper-case code."""
    return grid_table.rows()


is_listed = grid_table.is_listed


def annual_series(code: str, option: str = "--country") -> IntensitySeries:
    """A flat series from the bundled annual average of one listed code (country, US state grid,
    cloud region or WORLD); `wattlens carbon list` shows them."""
    row = grid_table.lookup(code, option)
    return IntensitySeries(row.code, row.describe(), annual=Intensity(row.g_per_kwh), signal=row.signal)


@dataclass(frozen=True)
class Emissions:
    """Emissions of some energy: grams of CO2, how much of the energy had a known intensity, and why not.

    ``g_co2`` is None when no intensity was known at all (``message`` says what to
    supply); when only part of the energy was covered, ``g_co2`` counts that part
    and ``uncovered_energy_j`` the rest.
    """

    g_co2: float | None
    energy_j: float
    covered_energy_j: float
    uncovered_energy_j: float
    mean_g_per_kwh: float | None
    renewable_pct: float | None
    source: str | None
    message: str | None = None
    hours: int = 0  # hours with energy and a known intensity
    fallback_hours: int = 0  # of them, hours whose intensity was the series' fallback (--country)
    fallback_energy_j: float = 0.0

    @property
    def kg_co2(self) -> float | None:
        """Kilograms of CO2, or None when no intensity was known."""
        return None if self.g_co2 is None else self.g_co2 / 1000

    def to_dict(self) -> dict[str, object]:
        return {"g_co2": self.g_co2, "kg_co2": self.kg_co2, "energy_j": self.energy_j,
                "covered_energy_j": self.covered_energy_j,
                "uncovered_energy_j": self.uncovered_energy_j,
                "mean_g_per_kwh": self.mean_g_per_kwh, "renewable_pct": self.renewable_pct,
                "source": self.source, "message": self.message, "hours": self.hours,
                "fallback_hours": self.fallback_hours, "fallback_energy_j": self.fallback_energy_j}


def emissions(energy_by_hour: Mapping[int, float], series: IntensitySeries | None) -> Emissions:
    """Σ energy(hour) × intensity(hour). Energy keys are any time inside the hour (ns)."""
    total = float(sum(energy_by_hour.values()))
    if series is None:
        return Emissions(None, total, 0.0, total, None, None, None,
                         f"no carbon intensity data; {NO_CARBON_HINT}")
    grams = covered = ren_energy = ren_weighted = filled_j = 0.0
    hours: set[int] = set()
    filled: set[int] = set()
    for t_ns, energy_j in sorted(energy_by_hour.items()):
        value, from_fallback = series.lookup(t_ns)
        if value is None:
            continue
        grams += energy_j / J_PER_KWH * value.g_per_kwh
        covered += energy_j
        if energy_j > 0:
            hours.add(t_ns // HOUR_NS)
            if from_fallback:
                filled.add(t_ns // HOUR_NS)
                filled_j += energy_j
        if value.renewable_pct is not None:
            ren_energy += energy_j
            ren_weighted += energy_j * value.renewable_pct
    uncovered = total - covered
    if covered <= 0 and total > 0:
        return Emissions(None, total, 0.0, total, None, None, series.describe(),
                         f"no carbon intensity for any hour of this window in "
                         f"{series.describe()}; {NO_CARBON_HINT}")
    message = None
    if uncovered > 1e-9 * max(total, 1.0):
        message = (f"{uncovered / J_PER_KWH:.3g} kWh of {total / J_PER_KWH:.3g} kWh fell in hours "
                   f"with no carbon intensity in {series.describe()} and is not counted")
    mean = grams / (covered / J_PER_KWH) if covered > 0 else None
    ren = ren_weighted / ren_energy if ren_energy > 0 else None
    source = series.describe() + fallback_note(series, len(filled), len(hours), filled_j, covered)
    return Emissions(grams, total, covered, uncovered, mean, ren, source, message, len(hours),
                     len(filled), filled_j)


def fallback_note(series: IntensitySeries, filled_hours: int, hours: int, filled_j: float,
                  covered_j: float) -> str:
    """Which hours the fallback (``--country``) filled, for the source line: "; --country GB:
    unused, ...", the share it filled, or every hour; "" for a series without a fallback."""
    if series.fallback is None or series.annual is None or hours == 0:
        return ""
    if not series.hourly:
        return f"; {series.fallback}: every hour ({hours} h), no hourly intensity for this window"
    own = ("the store's own intensity" if series.source.startswith("store")
           else f"the hourly intensity ({series.source.split(';')[0]})")
    if filled_hours == 0:
        return f"; {series.fallback}: unused, {own} covers every hour"
    share = 100 * filled_j / covered_j if covered_j > 0 else 0.0
    cited = f", {series.fallback_source}" if series.fallback_source else ""
    return (f"; {series.fallback} ({series.annual.g_per_kwh:.0f} g/kWh{cited}) filled "
            f"{filled_hours} of {hours} h ({share:.0f} % of the energy), {own} the rest")


def hourly_profile(series: IntensitySeries) -> dict[int, float]:
    """Mean intensity per UTC hour of day over the series' known hours."""
    acc: dict[int, list[float]] = {}
    for h, value in series.hourly.items():
        acc.setdefault((h // HOUR_NS) % 24, []).append(value.g_per_kwh)
    return {hod: sum(v) / len(v) for hod, v in acc.items()}


def forecast(series: IntensitySeries, now_ns: int, horizon_s: float = 86400) -> list[tuple[int, float]]:
    """Hourly intensity for [now, now + horizon): given values where the series has them (a forecast
    supplied by CSV or the store), else the mean of the same UTC hour of day over the known days
    (a persistence forecast), else the annual average. Raises CarbonDataMissing otherwise."""
    profile = hourly_profile(series)
    first = now_ns // HOUR_NS * HOUR_NS
    hours = math.ceil(horizon_s / 3600) + (1 if first < now_ns else 0)
    out = []
    for k in range(hours):
        h = first + k * HOUR_NS
        got = series.hourly.get(h)
        if got is not None:
            out.append((h, got.g_per_kwh))
        elif (h // HOUR_NS) % 24 in profile:
            out.append((h, profile[(h // HOUR_NS) % 24]))
        elif series.annual is not None:
            out.append((h, series.annual.g_per_kwh))
        else:
            raise CarbonDataMissing(f"no carbon intensity to forecast hour "
                                    f"{datetime.fromtimestamp(h / NS, UTC):%H:00Z} in "
                                    f"{series.describe()}; {NO_CARBON_HINT}")
    return out


def forecast_basis(series: IntensitySeries, hours: list[int], now_ns: int) -> dict[str, int]:
    """How each future hour of a forecast was made, counted: ``provider`` (a provider's forecast),
    ``given`` (a value from the CSV or the store), ``persistence`` (same hour on past days) or
    ``annual`` (the flat table figure)."""
    profile = hourly_profile(series)
    out = {"provider": 0, "given": 0, "persistence": 0, "annual": 0}
    for h in hours:
        if h in series.forecast_hours:
            out["provider"] += 1
        elif h in series.hourly and h + HOUR_NS > now_ns:
            out["given"] += 1
        elif (h // HOUR_NS) % 24 in profile:
            out["persistence"] += 1
        else:
            out["annual"] += 1
    return out


def history_days(series: IntensitySeries, now_ns: int) -> float:
    """Days of measured hours before ``now_ns`` (what a persistence forecast stands on)."""
    past = [h for h in series.hourly if h < now_ns and h not in series.forecast_hours]
    return len(past) / 24


def window_confidence(basis: Mapping[str, int], days: float, energy_predicted: bool) -> tuple[str, str]:
    """(high | medium | low, why) for a carbon-aware window, from how its intensity was forecast
    and whether the job's energy is predicted from its own progress.

    high: every hour a provider forecast (or given values) and the energy predicted;
    medium: provider/given hours, or persistence over at least 3 days of history;
    low: anything resting on the flat annual figure or less than 3 days of history.
    """
    total = sum(basis.values()) or 1
    given = basis.get("provider", 0) + basis.get("given", 0)
    parts = [f"{n} h {k}" for k, n in basis.items() if n]
    why = f"intensity: {', '.join(parts) or 'none'}; history {days:.1f} d; energy " \
          f"{'predicted from progress' if energy_predicted else 'measured from past runs'}"
    if basis.get("annual", 0):
        return "low", why + " (flat annual figure: every window looks alike)"
    if given == total:
        return ("high" if energy_predicted else "medium"), why
    if days >= 3:
        return "medium", why
    return "low", why + " (under 3 days of history for the persistence forecast)"


def window_mean(hourly: list[tuple[int, float]], start_ns: int, duration_s: float) -> float | None:
    """Mean intensity over [start, start + duration) from hourly values, weighted by overlap."""
    if duration_s <= 0:
        return None
    end = start_ns + int(duration_s * NS)
    total = weight = 0.0
    for h, g in hourly:
        overlap = min(end, h + HOUR_NS) - max(start_ns, h)
        if overlap > 0:
            total += g * overlap
            weight += overlap
    if weight < (end - start_ns) * 0.999:
        return None  # the hours do not cover the whole window
    return total / weight


def best_window(hourly: list[tuple[int, float]], duration_s: float,
                earliest_ns: int | None = None) -> tuple[int, float] | None:
    """(start ns, mean g/kWh) of the lowest-intensity window of ``duration_s`` that fits the hours.

    Candidate starts are hour boundaries (and ``earliest_ns``); ties go to the earliest start.
    """
    if not hourly or duration_s <= 0:
        return None
    starts = sorted({h for h, _ in hourly} | ({earliest_ns} if earliest_ns is not None else set()))
    best: tuple[int, float] | None = None
    for s in starts:
        if earliest_ns is not None and s < earliest_ns:
            continue
        mean = window_mean(hourly, s, duration_s)
        if mean is None:
            continue
        if best is None or mean < best[1] - 1e-9:
            best = (s, mean)
    return best
