"""The dashboard's filters, GPU health, and what the store holds (cache, newest time, presence)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from analytics.queries.buckets import WORK_FIELDS, energy_by, energy_by_where
from analytics.timeutil import Window
from collector.store.base import AggregateQuery, Store

_T = TypeVar("_T")


def gather(store: Store, reads: Mapping[str, Callable[[], _T]],
           step: Callable[[str], None] = lambda _name: None) -> dict[str, _T]:
    """Independent reads, by name; at once where the store answers reads concurrently
    (``concurrent_reads``: a server such as influxd works on its own cores while this process
    folds the answer before), else one after another. ``step(name)`` is called as each is
    waited for; the first error is raised once every read has ended."""
    if not getattr(store, "concurrent_reads", False) or len(reads) <= 1:
        out: dict[str, _T] = {}
        for name, read in reads.items():
            step(name)
            out[name] = read()
        return out
    with ThreadPoolExecutor(len(reads), thread_name_prefix="wattlens-read") as pool:
        futures = {name: pool.submit(read) for name, read in reads.items()}
        done: dict[str, _T] = {}
        for name, future in futures.items():
            step(name)
            done[name] = future.result()
        return done


def cached(store: Store) -> Store:
    """``store`` behind the store layer's read-through rollup cache (what the dashboard reads)."""
    from collector.store.cache import CachedStore

    return CachedStore(store)


HEALTH_FIELDS = ("temp_c", "sm_clock_mhz", "mem_clock_mhz", "mem_util_pct", "util_pct", "power_w",
                 "power_limit_w", "throttle_power", "throttle_thermal")


GPU_KEY = ("host", "gpu", "model")


def gpu_health_buckets(store: Store, window: Window, bucket_s: int,
                       where: dict[str, str | tuple[str, ...]] | None = None,
                       group_by: tuple[str, ...] = GPU_KEY,
                       ) -> dict[tuple[str, ...], list[tuple[int, dict[str, float | None]]]]:
    """Per group (a GPU: host, gpu, model; ``()``: all the GPUs ``where`` keeps), per bucket:
    the mean of each health field over the samples (None where not stored)."""
    rows = store.query(AggregateQuery("gpu", tuple(("mean", f) for f in HEALTH_FIELDS),
                                      window.start_ns, window.end_ns,
                                      group_by=group_by, bucket_s=bucket_s, where=where or {}))
    out: dict[tuple[str, ...], list[tuple[int, dict[str, float | None]]]] = defaultdict(list)
    cols = [(f, f"mean_{f}") for f in HEALTH_FIELDS]  # once, not per row
    for r in rows:
        if r.time_ns is not None:
            v = r.values
            out[tuple(r.tags[t] for t in group_by)].append(
                (r.time_ns, {f: v.get(c) for f, c in cols}))
    return {k: sorted(v, key=lambda b: b[0]) for k, v in out.items()}


def gpu_health_summary(store: Store, window: Window,
                       where: dict[str, str | tuple[str, ...]] | None = None,
                       ) -> dict[tuple[str, ...], dict[str, float | None]]:
    """Per GPU (host, gpu, model) over the window: the mean of each health field over its samples,
    and ``peak_temp_c``, its hottest sample. One row a GPU, whatever the window's length."""
    rows = store.query(AggregateQuery(
        "gpu", (*(("mean", f) for f in HEALTH_FIELDS), ("max", "temp_c")),  # type: ignore[arg-type]
        window.start_ns, window.end_ns, group_by=GPU_KEY, where=where or {}))
    out: dict[tuple[str, ...], dict[str, float | None]] = {}
    for r in rows:
        v = r.values
        out[tuple(r.tags[t] for t in GPU_KEY)] = {
            **{f: v.get(f"mean_{f}") for f in HEALTH_FIELDS}, "peak_temp_c": v.get("max_temp_c")}
    return out


def job_work_by_host(store: Store, window: Window) -> dict[str, tuple[dict[str, float], float]]:
    """Per host: the work of its jobs by unit and the energy those job records hold (J)."""
    rows = store.query(AggregateQuery(
        "job", (("sum", "energy_j"), *(("sum", f) for f in WORK_FIELDS)),  # type: ignore[arg-type]
        window.start_ns, window.end_ns, group_by=("host",)))
    return {r.tags["host"]: ({f: r.values.get(f"sum_{f}") or 0.0 for f in WORK_FIELDS},
                             r.values.get("sum_energy_j") or 0.0) for r in rows}


def filter_values(store: Store, window: Window) -> dict[str, list[str]]:
    """The nodes and GPU models the dashboard's filters can pick in the window, sorted (its job
    picker lists jobs by energy: dashboard.views.job_picks)."""
    gpus = energy_by(store, window, "gpu", ("host", "model"))
    return {"node": sorted({h for h, _m in gpus}), "model": sorted({m for _h, m in gpus})}


def hosts_of_job(store: Store, window: Window, job: str) -> list[str]:
    """The hosts a job ran on in the window."""
    return sorted({h for (h,) in energy_by_where(store, window, "job", ("host",), {"job": job})})


def newest_time_ns(store: Store, measurements: tuple[str, ...] = ("gpu", "job")) -> int | None:
    """The newest point time over the given measurements, or None when they are all empty."""
    spans = gather(store, {m: (lambda m=m: store.time_range(m)) for m in measurements})  # type: ignore[misc]
    ends = [span[1] for span in spans.values() if span is not None]
    return max(ends) if ends else None


def has_data(store: Store, measurement: str) -> bool:
    """Whether the store has ever held a point of ``measurement`` (e.g. did alerting ever write)."""
    return store.time_range(measurement) is not None
