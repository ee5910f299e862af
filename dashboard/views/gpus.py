"""GPU health page view model: the per-GPU table rows (with the node's PER and what stands out) and the
filter choices; the series come straight from analytics.health."""

from __future__ import annotations

from typing import Any

from analytics import queries
from analytics.health import HealthFilter, HealthView, gpu_health
from analytics.timeutil import Window
from collector.store.base import Store
from dashboard.health_figures import MAX_LINES


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def health_view(store: Store, window: Window, node: str = "", model: str = "", job: str = "",
                team: str = "") -> HealthView:
    """The GPU health page's data: the series of the GPUs its charts draw, and the mean of all."""
    return gpu_health(store, window, HealthFilter(node=node or "", model=model or "", job=job or "",
                                                  team=team or ""), lines=MAX_LINES)


def health_rows(v: HealthView) -> list[dict[str, Any]]:
    """One table row per GPU, flagged GPUs first; numbers rounded as shown."""
    rows = []
    for g in v.gpus:
        rows.append({
            "id": g.name, "gpu": g.name, "model": g.model,
            "temp_c": _r(g.temp_c, 1), "temp_peak_c": _r(g.temp_peak_c, 1),
            "sm_clock_mhz": _r(g.sm_clock_mhz, 0), "mem_clock_mhz": _r(g.mem_clock_mhz, 0),
            "mem_util_pct": _r(g.mem_util_pct, 1), "util_pct": _r(g.util_pct, 1),
            "power_w": _r(g.power_w, 0), "power_limit_w": _r(g.power_limit_w, 0),
            "power_pct": _r(g.power_pct, 1),
            "throttle_pct": _r(None if g.throttle_share is None else 100 * g.throttle_share, 1),
            "node_per": _r(g.node_per, 3), "per_unit": g.per_unit or "",
            "flags": "; ".join(g.flags), "n_flags": len(g.flags),
        })
    return sorted(rows, key=lambda r: (-r["n_flags"], r["gpu"]))


# More jobs than this in the range: the job picker lists the ones that used the most energy, and
# typing finds any other. 895 jobs listed at once were 78 KB of options that held a first page
# load 0.19 s in the browser (docs/benchmarks.md).
LISTED_JOBS = 100


def filter_options(store: Store, window: Window, job: str | None = None,
                   ) -> tuple[dict[str, list[str]], str]:
    """Nodes, GPU models, jobs (:func:`job_picks`, ``job`` among them) and teams seen in the
    window, for the filter bar; and the job picker's placeholder."""
    teams = {key[2] for key in queries.job_energy_by_tags(store, window, ("team",)) if key[2]}
    jobs, n_jobs = job_picks(store, window, current=job)
    placeholder = f"all · search {n_jobs:,}" if n_jobs > LISTED_JOBS else "all"
    return {**queries.filter_values(store, window), "job": jobs, "team": sorted(teams)}, placeholder


def job_picks(store: Store, window: Window, search: str | None = None,
              current: str | None = None) -> tuple[list[str], int]:
    """The jobs the job picker lists, and how many the window holds. All of them up to
    :data:`LISTED_JOBS`; beyond, those whose name holds ``search`` (any case), else those with
    the most energy, :data:`LISTED_JOBS` at most, by name. The current pick is always listed."""
    energy = {job: e for (job,), e in queries.energy_by(store, window, "job", ("job",)).items()}
    if len(energy) <= LISTED_JOBS:
        picks = sorted(energy)
    else:
        needle = (search or "").strip().lower()
        pool = [j for j in energy if needle in j.lower()] if needle else list(energy)
        picks = sorted(sorted(pool, key=lambda j: -energy[j])[:LISTED_JOBS])
    if current and current not in picks:
        picks.insert(0, current)
    return picks, len(energy)
