"""What a recommendation is about: the GPUs its jobs ran on, and each model's idle power."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from analytics.context import Context
from analytics.frontier import mask_gpus
from analytics.levels import JobAggregate
from collector.idle import IDLE_UTIL_MAX_PCT, idle_power_w


def _gpus_matching(ctx: Context, hosts: Iterable[str], model: str, cap_w: float | None) -> dict[str, list[str]]:
    """GPU indices per host of a model (and power limit), from the GPU buckets."""
    want = set(hosts)
    out: dict[str, list[str]] = defaultdict(list)
    for (host, gpu), (m, limit) in ctx.gpu_info().items():
        if host not in want or m != model:
            continue
        if cap_w is not None and (limit is None or abs(limit - cap_w) >= 1.0):
            continue
        out[host].append(gpu)
    return {h: sorted(v, key=lambda x: (len(x), x)) for h, v in sorted(out.items())}


def _idle_w(ctx: Context) -> dict[str, tuple[float, str]]:
    """Each model's idle draw and where it comes from: the lowest power its GPUs drew in buckets at
    ≤ 2 % utilisation, else the model's published idle figure (collector.idle.idle_power_w, the
    definition the agent's idle-power policy uses too). A bucket counts only if it was idle
    throughout: from a day on (hourly buckets) shorter idle stretches are not seen."""
    lowest: dict[str, float] = {}
    for g in ctx.gpus:
        if (g.power_min_w is not None and g.util_max_pct is not None
                and g.util_max_pct <= IDLE_UTIL_MAX_PCT
                and (g.model not in lowest or g.power_min_w < lowest[g.model])):
            lowest[g.model] = g.power_min_w
    out: dict[str, tuple[float, str]] = {}
    for model in sorted({g.model for g in ctx.gpus}):
        watts, _source = idle_power_w(lowest.get(model), model)
        if watts is None:
            continue
        out[model] = (watts, f"the lowest power this model drew at ≤ {IDLE_UTIL_MAX_PCT:g}% "
                             f"utilisation in the window" if model in lowest else
                      f"the model's typical idle figure (none of its GPUs stayed at ≤ {IDLE_UTIL_MAX_PCT:g}% "
                      f"utilisation for a whole {ctx.bucket_s / 60:g}-min bucket of the window)")
    return out


def _job_gpus_any(ctx: Context, jobs: Iterable[JobAggregate]) -> dict[str, list[str]]:
    """``_job_gpus`` over jobs that may run on different GPU models."""
    out: dict[str, set[str]] = defaultdict(set)
    for j in jobs:
        for host, gs in _job_gpus(ctx, [j.job], j.gpu_model).items():
            out[host].update(gs)
    return {h: sorted(v, key=lambda x: (len(x), x)) for h, v in sorted(out.items())}


def _job_gpus(ctx: Context, names: Iterable[str], model: str,
              cap_w: float | None = None) -> dict[str, list[str]]:
    """host -> GPU indices the jobs ran on: from their gpu_mask where reported, else the GPUs of that
    model (and limit) on their hosts whose mean utilisation over the job's run is closest to the job's."""
    out: dict[str, set[str]] = defaultdict(set)
    for name in names:
        j = ctx.job_aggs.get(name)
        if j is None:
            continue
        for host in j.hosts:
            mask = j.gpu_masks.get(host)
            if mask is not None:
                out[host].update(g.rpartition("/")[2] for g in mask_gpus(host, mask))
                continue
            cands = _gpus_matching(ctx, [host], model, cap_w if cap_w is not None else j.power_limit_w)
            util: dict[str, list[float]] = defaultdict(list)
            for g in ctx.gpus:
                if (g.host == host and g.gpu in cands.get(host, []) and g.util_mean_pct is not None
                        and j.first_ns <= g.time_ns <= j.last_ns):
                    util[g.gpu].append(g.util_mean_pct)
            want = max(1, j.gpus // max(1, len(j.hosts)))
            ranked = sorted(cands.get(host, []), key=lambda x: (abs(
                (sum(util[x]) / len(util[x]) if util[x] else 0.0) - (j.util_pct or 0.0)), len(x), x))
            out[host].update(ranked[:want])
    return {h: sorted(v, key=lambda x: (len(x), x)) for h, v in sorted(out.items())}


def _flat(d: Mapping[str, list[str]]) -> tuple[str, ...]:
    return tuple(f"{h}/{g}" for h, gs in d.items() for g in gs)
