"""Power Efficiency Ratio: useful work per joule, per work unit. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping

from collector.schema import WORK_UNITS, primary_work_unit

PER_UNITS = {
    "samples": "samples/J",
    "tokens": "tokens/J",
    "flops": "FLOP/J",
    "steps": "steps/J",
}

# One unit of work, for "J per token" in text.
UNIT_SINGULAR = {"samples": "sample", "tokens": "token", "flops": "FLOP", "steps": "step"}


def per(work: float | None, energy_j: float | None) -> float | None:
    """Work per joule; None when there is no energy or no work to speak of (never a silent 0)."""
    if work is None or energy_j is None or energy_j <= 0:
        return None
    return work / energy_j


def per_by_unit(work: Mapping[str, float | None], energy_j: float | None) -> dict[str, float]:
    """PER for every work unit present (samples/J, tokens/J, FLOP/J, steps/J)."""
    out: dict[str, float] = {}
    for unit in WORK_UNITS:
        value = per(work.get(unit), energy_j)
        if value is not None and (work.get(unit) or 0) > 0:
            out[unit] = value
    return out


def gflops_per_watt(flop_per_j: float | None) -> float | None:
    """FLOP/J is FLOP/s per W; shown in the field's customary GFLOP/s per W."""
    return None if flop_per_j is None else flop_per_j / 1e9


def primary_unit(work: Mapping[str, float | None]) -> str | None:
    """The work unit a job is best compared by: tokens for LLM work, else samples, else FLOPs
    (collector.schema.primary_work_unit: the autopilot measures in the same unit)."""
    return primary_work_unit(work)
