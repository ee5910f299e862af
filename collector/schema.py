"""The measurements every part speaks (DESIGN §2), the point type, and InfluxDB line protocol."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

FieldValue = float | int | bool | str

# Measurement -> (tags, fields). Field names carry their unit. `method` says how
# energy was obtained: counter (hardware energy counter), integrated (power
# integrated over time), estimated (a model, e.g. TDP x utilisation) or
# simulated (the simulated fleet).
MEASUREMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gpu": (
        ("host", "gpu", "uuid", "model", "method"),
        (
            "power_w", "energy_j", "util_pct", "mem_util_pct", "sm_clock_mhz",
            "mem_clock_mhz", "temp_c", "power_limit_w",
            # NVML extras where the driver has them (collector/sources/nvml.py)
            "power_instant_w", "power_average_w", "clocks_event_reasons", "throttle_power",
            "throttle_thermal", "mig_instances",
        ),
    ),
    "cpu": (("host", "domain", "method"), ("power_w", "energy_j", "util_pct")),
    "job": (
        # namespace, pod, container: the Kubernetes pod on the job's GPUs (collector/k8s), bounded;
        # team: who pays (docs/attribution.md); idle_policy: how idle power was shared (collector.idle)
        ("job", "host", "kind", "precision", "gpu_model", "workload", "namespace", "pod", "container",
         "team", "idle_policy"),
        (
            "energy_j", "samples", "tokens", "steps", "flops", "active_s", "gpus",
            "batch_size", "power_limit_w", "util_pct", "deferrable", "planned_samples",
            # the part of energy_j that came from a model (method=estimated), e.g. the CPU estimate
            "estimated_j",
            "gpu_mask",  # bit i set: the job ran on the host's GPU i during the interval
            "idle_j",  # the part of energy_j that is its share of idle power (collector.idle)
            "sm_clock_mhz",  # mean SM clock of its GPUs: a clock lock shows here (analytics.clock_lock)
        ),
    ),
    # One MIG instance's part of its GPU's energy (collector/sources/mig.py); the parts of a GPU
    # sum to its `gpu` energy_j. `basis` says how it was split: activity, slice-size or even.
    "mig": (("host", "gpu", "uuid", "mig", "gi", "basis"),
            ("energy_j", "share", "power_w", "util_pct", "slices")),
    "facility": (("site",), ("it_power_w", "facility_power_w", "it_energy_j", "facility_energy_j")),
    "carbon": (("region", "source", "signal"), ("intensity_g_per_kwh", "renewable_pct", "marginal_g_per_kwh")),
    "alert": (("rule", "severity", "target"), ("state", "value")),
    # The power-cap autopilot (docs/autopilot.md): event=change (a limit it set, the measurements
    # behind it) or window (per group: its energy, work and the energy saved vs the original limit).
    "autopilot": (
        ("host", "job", "event", "reason"),
        ("cap_w", "previous_w", "original_w", "gpus", "gpu_mask", "slowdown_pct", "throughput",
         "power_w", "per", "util_pct", "baseline_throughput", "baseline_power_w", "baseline_per",
         "seconds", "energy_j", "work", "saved_j", "work_unit"),
    ),
    # Data-quality signals per device and minute (docs/sensors.md): how far to trust each number.
    "quality": (
        ("host", "source", "device"),
        ("window_s", "check_counter_j", "check_integrated_j", "energy_check_rel_diff",
         "counter_wraps", "counter_resets", "counter_gaps", "device_lost", "device_available"),
    ),
}

# Fields that are increments since the previous point of the same series: a
# window's total is a plain SUM (DESIGN §2).
# `active_s` is the wall time a job ran during the interval, so SUM(active_s) is its run time.
INCREMENT_FIELDS = frozenset({"energy_j", "samples", "tokens", "steps", "flops", "active_s",
                              "it_energy_j", "facility_energy_j", "estimated_j", "saved_j", "idle_j"})

# Every work unit a job can count.
WORK_UNITS = ("samples", "tokens", "flops", "steps")
# The unit a job's work is compared and shown in: tokens for LLM work, else samples, FLOPs, steps.
PRIMARY_WORK_ORDER = ("tokens", "samples", "flops", "steps")


def primary_work_unit(work: Mapping[str, float | None]) -> str | None:
    """The first unit of PRIMARY_WORK_ORDER the job counted any of; None when it counted none."""
    return next((u for u in PRIMARY_WORK_ORDER if (work.get(u) or 0) > 0), None)

METHODS = ("counter", "integrated", "estimated", "simulated")
ESTIMATED = "estimated"


@dataclass(frozen=True, slots=True)
class Point:
    """One sample: measurement, tags (identity), fields (numbers), UTC time in ns.

    Build it with :func:`point`, which validates; tags and fields are stored as
    sorted tuples so a point is immutable and hashable.
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    time_ns: int

    @property
    def tag_map(self) -> dict[str, str]:
        return dict(self.tags)

    @property
    def field_map(self) -> dict[str, FieldValue]:
        return dict(self.fields)

    def tag(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.tags:
            if key == name:
                return value
        return default

    def field(self, name: str, default: FieldValue | None = None) -> FieldValue | None:
        for key, value in self.fields:
            if key == name:
                return value
        return default


def point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue | None],
    time_ns: int,
) -> Point:
    """Validate and build a :class:`Point`.

    Fields whose value is ``None`` (unsupported by the hardware) are left out,
    never written as 0. Raises ``ValueError`` naming the offending key and value.
    """
    if not isinstance(measurement, str) or not measurement:
        raise ValueError(f"measurement: must be a non-empty string, got {measurement!r}")
    if isinstance(time_ns, bool) or not isinstance(time_ns, int) or time_ns < 0:
        raise ValueError(f"time_ns: must be a non-negative integer, got {time_ns!r}")
    clean_tags: list[tuple[str, str]] = []
    for key, tvalue in tags.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"tag key: must be a non-empty string, got {key!r}")
        if not isinstance(tvalue, str):
            raise ValueError(f"tag {key}: must be a string, got {tvalue!r}")
        if tvalue == "":
            continue  # InfluxDB drops empty tag values; so do we, consistently
        _check_no_newline(f"tag {key}", tvalue)
        _check_no_newline("tag key", key)
        clean_tags.append((key, tvalue))
    clean_fields: list[tuple[str, FieldValue]] = []
    for key, fvalue in fields.items():
        value = fvalue
        if not isinstance(key, str) or not key:
            raise ValueError(f"field key: must be a non-empty string, got {key!r}")
        _check_no_newline("field key", key)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"field {key}: must be finite, got {value!r}")
        if not isinstance(value, (bool, int, float, str)):
            raise ValueError(f"field {key}: must be a number, bool or string, got {value!r}")
        if isinstance(value, str):
            _check_no_newline(f"field {key}", value)  # one point, one line (and one spool line)
        if isinstance(value, int) and not isinstance(value, bool):
            # One numeric type per field, always: InfluxDB rejects a whole batch
            # when a field is written as an integer once and a float later.
            value = float(value)
        clean_fields.append((key, value))
    if not clean_fields:
        raise ValueError(f"fields: measurement {measurement!r} needs at least one field")
    _check_no_newline("measurement", measurement)
    _check_writable(measurement, clean_tags, clean_fields)
    return Point(measurement, tuple(sorted(clean_tags)), tuple(sorted(clean_fields)), time_ns)


def _check_writable(measurement: str, tags: list[tuple[str, str]],
                    fields: list[tuple[str, FieldValue]]) -> None:
    """Refuse, at creation, a name that line protocol cannot carry (see _escape), naming it."""
    if "\\" in measurement:
        escape_measurement(measurement)
    for key, value in tags:
        for text in (key, value):
            if "\\" in text:
                try:
                    escape_key(text)
                except ValueError as exc:
                    raise ValueError(f"tag {key}: {exc}") from None
    for key, _ in fields:
        if "\\" in key:
            escape_key(key)


def _check_no_newline(what: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"{what}: newlines are not allowed, got {value!r}")


# Line protocol lives in collector.lineprotocol (the one implementation); these
# names stay importable from here for the callers that know them.
from collector.lineprotocol import (  # noqa: E402
    escape_key,
    escape_measurement,
    escape_string_field,
    format_field_value,
    to_line,
)

__all__ = [
    "INCREMENT_FIELDS",
    "MEASUREMENTS",
    "METHODS",
    "PRIMARY_WORK_ORDER",
    "WORK_UNITS",
    "FieldValue",
    "Point",
    "escape_key",
    "escape_measurement",
    "escape_string_field",
    "format_field_value",
    "point",
    "primary_work_unit",
    "to_line",
]
