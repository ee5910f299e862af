"""`--source auto`: probe the real sensors in order, fall back to the CPU estimate, and print one round."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from collector.counters import CounterState
from collector.schema import FieldValue, Point
from collector.sources import cpu_estimate, hwmon, nvml, rapl
from collector.sources.base import Source


def autodetect(
    host: str,
    *,
    interval_s: float | None = None,
    nvml_module: Any = None,
    powercap_root: str | Path = rapl.DEFAULT_ROOT,
    hwmon_root: str | Path = hwmon.DEFAULT_ROOT,
    proc_root: str | Path = cpu_estimate.DEFAULT_PROC,
    tdp_w: float | None = None,
    idle_fraction: float = cpu_estimate.DEFAULT_IDLE_FRACTION,
    quality_interval_s: float = 60.0,
    counter_state: CounterState | None = None,
) -> tuple[list[Source], list[str]]:
    """Probe nvml, rapl and hwmon (AUTO_ORDER); add the CPU estimate when no CPU sensor exists.

    Returns the sources that work here and one human line per source, e.g.
    ``nvml: found 8 GPUs (8x NVIDIA H100 ...)`` or
    ``rapl: skipped: /sys/class/powercap not present ...``. Sources that are
    skipped are closed; the caller logs or prints the lines. The keyword options are the union of the sources'
    own options (roots are for tests and containers with /sys mounted elsewhere).
    """
    sources: list[Source] = []
    lines: list[str] = []

    def consider(source: Source) -> bool:
        try:
            found = source.probe()
        except Exception as exc:  # a probe must not stop the others
            found_ok, detail = False, f"probe failed: {exc}"
        else:
            found_ok, detail = found.ok, found.detail
        if found_ok:
            sources.append(source)
            lines.append(f"{source.name}: {detail}")
        else:
            lines.append(f"{source.name}: skipped: {detail}")
            source.close()
        return found_ok

    consider(nvml.NvmlSource(host, nvml=nvml_module, quality_interval_s=quality_interval_s,
                             counter_state=counter_state))
    try:
        rapl_source = rapl.RaplSource(host=host, root=Path(powercap_root), interval_s=interval_s,
                                      quality_interval_s=quality_interval_s,
                                      counter_state=counter_state)
    except ValueError as exc:  # ConfigError: a bad interval_s
        lines.append(f"rapl: skipped: {exc}")
        rapl_ok = False
    else:
        rapl_ok = consider(rapl_source)
    hwmon_source = hwmon.HwmonSource(
        host=host, root=Path(hwmon_root), quality_interval_s=quality_interval_s,
        # With RAPL working, the hwmon drivers that re-export RAPL would double count.
        skip_drivers=hwmon.RAPL_DUPLICATE_DRIVERS if rapl_ok else frozenset(),
    )
    hwmon_packages = hwmon_source.cpu_package_domains() if consider(hwmon_source) else []
    if rapl_ok or hwmon_packages:
        which = "rapl" if rapl_ok else "hwmon " + ", ".join(hwmon_packages)
        lines.append(f"cpu-estimate: skipped: CPU power is measured ({which})")
    else:
        estimate = cpu_estimate.CpuEstimateSource(host=host, proc_root=Path(proc_root),
                                                  tdp_w=tdp_w, idle_fraction=idle_fraction)
        consider(estimate)
    return sources, lines


# --- one round as a table ----------------------------------------------------------

# Preferred column order; other fields follow alphabetically.
_FIELD_ORDER = (
    "power_w", "energy_j", "util_pct", "mem_util_pct", "sm_clock_mhz", "mem_clock_mhz",
    "temp_c", "power_limit_w",
)
# Tags that identify a series in the table; host only when there are several.
_HIDDEN_TAGS = frozenset({"host", "uuid"})
# Field-name suffix -> (unit, decimals); the unit is printed with every value.
_UNITS: tuple[tuple[str, str, int], ...] = (
    ("_rel_diff", "%", 2),
    ("_pct", "%", 0),
    ("_mhz", "MHz", 0),
    ("_w", "W", 1),
    ("_j", "J", 1),
    ("_c", "°C", 0),
    ("_s", "s", 1),
)


def _format_value(name: str, value: FieldValue) -> str:
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    for suffix, unit, decimals in _UNITS:
        if name.endswith(suffix):
            shown = value * 100 if suffix == "_rel_diff" else value
            return f"{shown:.{decimals}f} {unit}"
    return f"{value:g}"


def format_once(points: Iterable[Point]) -> str:
    """One round of samples as aligned tables, one per measurement, with units on every value."""
    by_measurement: dict[str, list[Point]] = {}
    for p in points:
        by_measurement.setdefault(p.measurement, []).append(p)
    if not by_measurement:
        return "(no points: no source produced a sample; counters need two samples for energy)"
    blocks: list[str] = []
    for measurement, group in by_measurement.items():
        hosts = {p.tag("host") for p in group}
        hidden = _HIDDEN_TAGS - ({"host"} if len(hosts) > 1 else set())
        tag_names = _ordered(k for p in group for k, _ in p.tags if k not in hidden)
        present = {k for p in group for k, _ in p.fields}
        field_names = [f for f in _FIELD_ORDER if f in present] + sorted(present - set(_FIELD_ORDER))
        header = [measurement, *tag_names[1:], *field_names] if tag_names else [measurement,
                                                                                 *field_names]
        rows = []
        for p in sorted(group, key=lambda p: tuple(_sort_key(p.tag(t) or "") for t in tag_names)):
            tags = [p.tag(t) or "-" for t in tag_names]
            values = p.field_map
            fields = [_format_value(f, values[f]) if f in values else "-" for f in field_names]
            rows.append(tags + fields)
        if not tag_names:
            rows = [["", *r] for r in rows]
        blocks.append(_align(header, rows, numeric_from=max(1, len(tag_names))))
    return "\n\n".join(blocks)


def _ordered(names: Iterable[str]) -> list[str]:
    """Identity tags first in a natural order (gpu, domain, device), then the rest alphabetically."""
    first = ("gpu", "domain", "source", "device", "host", "model", "method")
    seen = set(names)
    return [n for n in first if n in seen] + sorted(seen - set(first))


def _sort_key(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)


def _align(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            out.append(cell.rjust(width) if i >= numeric_from else cell.ljust(width))
        return "  ".join(out).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])
