"""Clock-lock recommendations: classes whose power cap never binds, with the saving measured where the
fleet already runs some of the class at locked SM clocks, else estimated from published DVFS measurements.

A class (GPU model, kind, workload, precision) whose GPUs never come near their power limit runs at
full SM clocks whatever the cap, so only a clock lock (``nvidia-smi -lgc``) trades speed for energy.
Job points carry the mean SM clock of their GPUs (``sm_clock_mhz``, NVML_CLOCK_SM). Where some of
the class's job buckets ran at a clearly lower clock than the rest (below ``LOCKED_BELOW`` of the
class's highest: with a cap that never binds, only a lock lowers it), the saving is *measured*:
energy per unit of work at that clock vs at full clocks, over the hours both ran. Otherwise it is an
estimate from the published DVFS study below, labelled as one, with its range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analytics.context import Context
from analytics.frontier import Frontier
from analytics.per import UNIT_SINGULAR
from analytics.queries import JobBucket
from analytics.recommendation import (
    J_PER_KWH,
    Recommendation,
    Savings,
    _by_hour,
    _sig,
    _slug,
    _window_evidence,
    _worth,
    value_energy,
)
from analytics.targets import _flat, _job_gpus

LOCK_SM_CLOCK_FRACTION = 0.8  # the advised lock where none is measured, as a share of the maximum SM clock
# A job bucket whose mean SM clock is below this share of the class's highest ran clock-locked (its
# cap never binds, so nothing else lowers the clock); GPU Boost's own wander stays well above it.
LOCKED_BELOW = 0.9
# Locked and full-clock runs are compared only at a like load: their mean utilisation over the hours
# both ran may differ by at most this many points (a GPU whose clock fell because it had little to
# do is not a lock, and a lighter load alone lowers the energy per unit of work).
LOAD_MATCH_PCT = 10.0


@dataclass(frozen=True)
class MeasuredLock:
    """A class's runs at locked SM clocks against its runs at full clocks, over the hours both ran."""

    locked_mhz: float  # mean SM clock of the locked buckets
    full_mhz: float  # the class's highest bucket clock
    j_per_unit_locked: float
    j_per_unit_full: float
    s_per_unit_locked: float  # GPU-seconds per unit of work
    s_per_unit_full: float
    locked_jobs: tuple[str, ...]
    full_jobs: tuple[str, ...]
    locked_gpu_h: float
    full_gpu_h: float

    @property
    def clock_share(self) -> float:
        return self.locked_mhz / self.full_mhz

    @property
    def saving_frac(self) -> float:
        """1 − energy per unit locked / at full clocks: the share of the full-clock energy saved."""
        return 1 - self.j_per_unit_locked / self.j_per_unit_full

    @property
    def slowdown(self) -> float:
        return self.s_per_unit_locked / self.s_per_unit_full - 1


def split_by_clock(buckets: Sequence[JobBucket], min_util_pct: float = 0.0
                   ) -> tuple[list[JobBucket], list[JobBucket]]:
    """(full-clock buckets, locked buckets) of a class: locked below ``LOCKED_BELOW`` of its highest
    bucket clock, at some load (an idle GPU's clocks drop by themselves). No clocks: all full."""
    clocks = [b.sm_clock_mhz for b in buckets if b.sm_clock_mhz]
    if not clocks:
        return list(buckets), []
    top = max(clocks)
    locked = [b for b in buckets if b.sm_clock_mhz and b.sm_clock_mhz < LOCKED_BELOW * top
              and (b.util_pct or 0.0) >= min_util_pct]
    ids = {id(b) for b in locked}
    return [b for b in buckets if id(b) not in ids], locked


def measure_lock(buckets: Sequence[JobBucket], unit: str, min_util_pct: float = 0.0) -> MeasuredLock | None:
    """The measured lock of a class, or None where it has no locked and full-clock runs to compare
    at a like load. Compared over the buckets (hours) in which both ran, so a diurnal load weighs
    both alike."""
    full, locked = split_by_clock(buckets, min_util_pct)
    both = {b.time_ns for b in full} & {b.time_ns for b in locked}
    f = [b for b in full if b.time_ns in both]
    lk = [b for b in locked if b.time_ns in both]
    if not f or not lk or abs(_util(lk) - _util(f)) > LOAD_MATCH_PCT:
        return None
    sums = []
    for part in (lk, f):
        work = sum(b.work.get(unit, 0.0) for b in part)
        energy = sum(b.energy_j for b in part)
        gpu_s = sum(b.active_s * max(b.gpus, 1) for b in part)
        if work <= 0 or energy <= 0:
            return None
        sums.append((energy / work, gpu_s / work, gpu_s))
    (j_l, s_l, g_l), (j_f, s_f, g_f) = sums
    mhz = sum((b.sm_clock_mhz or 0.0) * b.active_s for b in lk) / sum(b.active_s for b in lk)
    top = max(b.sm_clock_mhz or 0.0 for b in buckets)
    return MeasuredLock(mhz, top, j_l, j_f, s_l, s_f, tuple(sorted({b.job for b in lk})),
                        tuple(sorted({b.job for b in f})), g_l / 3600, g_f / 3600)


@dataclass(frozen=True)
class DvfsSaving:
    """A published range of the energy a lower SM clock saves, for one class of work."""

    work: str
    low: float
    high: float
    source: str

    @property
    def mid(self) -> float:
        """The point estimate: the middle of the published range."""
        return (self.low + self.high) / 2


_TANG = ("Tang et al., \"The Impact of GPU DVFS on the Energy and Performance of Deep Learning\", "
         "e-Energy 2019 (arXiv 1905.11012)")
# Tang et al. measured three GPUs over a sweep of core clocks: against the default clocks, the
# best core clock saved 8.7-23.1 % of the energy of DNN training and 19.6-26.4 % of inference.
DVFS_SAVINGS: dict[str, DvfsSaving] = {
    "training": DvfsSaving("training", 0.087, 0.231, f"{_TANG}: 8.7-23.1 % less energy for DNN training"),
    "inference": DvfsSaving("inference", 0.196, 0.264, f"{_TANG}: 19.6-26.4 % less energy for DNN inference"),
    "any": DvfsSaving("deep learning", 0.087, 0.264, f"{_TANG}: 8.7-26.4 % less energy across training "
                      f"and inference"),
}


def dvfs_saving(kind: str) -> DvfsSaving:
    """The published saving for a job kind: ``train`` is training, ``infer``/``batch`` inference."""
    if kind == "train":
        return DVFS_SAVINGS["training"]
    if kind in ("infer", "batch"):
        return DVFS_SAVINGS["inference"]
    return DVFS_SAVINGS["any"]


def _util(buckets: Sequence[JobBucket]) -> float:
    """Mean utilisation (%) weighted by run time."""
    active = sum(b.active_s for b in buckets)
    return sum((b.util_pct or 0.0) * b.active_s for b in buckets) / active if active else 0.0


def clock_lock(ctx: Context, f: Frontier, buckets: list[JobBucket],
               idle_w: Mapping[str, tuple[float, str]]) -> Recommendation | None:
    """Lock SM clocks for a busy class whose cap never binds. The saving: measured where some of the
    class already runs clock-locked (:func:`measure_lock`), else a published share of the energy above
    idle (or the operator's ``clock_lock_saving_frac``). Runs already locked are not named."""
    st = ctx.settings
    full, _locked = split_by_clock(buckets, st.busy_util_pct)
    util = _util(full)
    if util < max(st.clock_lock_min_util_pct, st.low_util_pct):
        return None  # lightly used (consolidation is the better advice), or every run is locked already
    m = measure_lock(buckets, f.unit, st.busy_util_pct)
    if m is not None:
        if m.saving_frac <= 0:
            return None  # measured here: locking did not lower the energy per unit of work
        return _measured(ctx, f, full, m, util)
    return _estimated(ctx, f, full, idle_w, util)


def _measured(ctx: Context, f: Frontier, full: list[JobBucket], m: MeasuredLock,
              util: float) -> Recommendation | None:
    s = value_energy(ctx, _by_hour((b.time_ns, m.saving_frac * b.energy_j) for b in full))
    if not _worth(ctx, s):
        return None
    unit = UNIT_SINGULAR.get(f.unit, f.unit)
    basis = (f"measured in this fleet over {len(m.locked_jobs)} run(s) of this class at locked SM clocks "
             f"({m.locked_gpu_h:.1f} GPU-hours) vs {len(m.full_jobs)} at full clocks "
             f"({m.full_gpu_h:.1f} GPU-hours), in the hours both ran: {m.j_per_unit_locked:.4g} vs "
             f"{m.j_per_unit_full:.4g} J per {unit}; saving = the full-clock runs' energy × "
             f"(1 − {m.j_per_unit_locked:.4g} / {m.j_per_unit_full:.4g}) = {100 * m.saving_frac:.1f}%")
    why = (f"{len(m.locked_jobs)} run(s) of this class already run with SM clocks locked at "
           f"{m.locked_mhz:.0f} MHz ({100 * m.clock_share:.0f}% of the {m.full_mhz:.0f} MHz the others "
           f"hold): {100 * m.saving_frac:.1f}% less energy per {unit} for {100 * m.slowdown:.1f}% more "
           f"time. Lock the others at the same clock (nvidia-smi -lgc {m.locked_mhz:.0f}).")
    evidence = {"saving_fraction": m.saving_frac, "locked_sm_clock_mhz": m.locked_mhz,
                "full_sm_clock_mhz": m.full_mhz, "j_per_unit_locked": m.j_per_unit_locked,
                "j_per_unit_full": m.j_per_unit_full, "slowdown": m.slowdown,
                "locked_jobs": list(m.locked_jobs), "locked_gpu_hours": m.locked_gpu_h,
                "full_clock_gpu_hours": m.full_gpu_h}
    return _rec(ctx, f, full, util, s, why, basis, evidence, measured=True,
                clock={"sm_clock_fraction": round(m.clock_share, 3),
                       "sm_clock_mhz": round(m.locked_mhz)})


def _estimated(ctx: Context, f: Frontier, full: list[JobBucket],
               idle_w: Mapping[str, tuple[float, str]], util: float) -> Recommendation | None:
    st = ctx.settings
    idle, idle_src = idle_w.get(f.gpu_model, (0.0, "unknown"))
    pub = dvfs_saving(f.kind)
    frac = pub.mid if st.clock_lock_saving_frac is None else st.clock_lock_saving_frac
    above_idle = [(b.time_ns, max(0.0, b.energy_j - idle * b.active_s * max(b.gpus, 1))) for b in full]
    s = value_energy(ctx, _by_hour((t, frac * e) for t, e in above_idle))
    if not _worth(ctx, s):
        return None
    base_kwh = sum(e for _t, e in above_idle) / J_PER_KWH * 86400 / ctx.span_s  # above idle, per day
    if st.clock_lock_saving_frac is None:
        basis = (f"estimate, not measured in this fleet (no run of this class at a locked SM clock): "
                 f"{pub.source} at the best core clock; the middle of that range, {100 * frac:.1f}%, "
                 f"of the energy above idle ({idle:.0f} W per GPU: {idle_src}); range "
                 f"{_sig(pub.low * base_kwh)}-{_sig(pub.high * base_kwh)} kWh/day")
    else:
        basis = (f"estimate: the operator's figure (clock_lock_saving_frac) of {100 * frac:.1f}% of the "
                 f"energy above idle ({idle:.0f} W per GPU: {idle_src})")
    why = (f"Locking SM clocks (nvidia-smi -lgc) at about {100 * LOCK_SM_CLOCK_FRACTION:.0f}% of the "
           f"maximum trades some throughput for less energy; published DVFS measurements of {pub.work} "
           f"put the saving at {100 * pub.low:.1f}-{100 * pub.high:.1f}%. Measure PER before and after.")
    evidence = {"idle_power_w": idle, "energy_above_idle_kwh_per_day": _sig(base_kwh),
                "saving_fraction": frac, "published_saving_range": [pub.low, pub.high],
                "published_source": pub.source}
    return _rec(ctx, f, full, util, s, why, basis, evidence, measured=False,
                clock={"sm_clock_fraction": LOCK_SM_CLOCK_FRACTION})


def _rec(ctx: Context, f: Frontier, full: list[JobBucket], util: float, s: Savings, why: str,
         basis: str, evidence: dict[str, Any], *, measured: bool, clock: dict[str, Any]) -> Recommendation:
    """The recommendation for the class's full-clock runs (those already locked are not named)."""
    jobs = tuple(sorted({b.job for b in full}))
    hosts = sorted({b.host for b in full})
    gpus = _job_gpus(ctx, jobs, f.gpu_model)
    peak = max(p.peak_power_w / p.cap_w for p in f.points)
    return Recommendation(
        id=f"clock_lock:{_slug(f.key)}", kind="clock_lock", target=f.label,
        title=f"Lock SM clocks for {f.workload} on {f.gpu_model}: its power cap never binds",
        detail=(f"Its GPUs peak at {100 * peak:.0f}% of their {', '.join(f'{p.cap_w:.0f} W' for p in f.points)} "
                f"cap (mean utilisation {util:.0f}%), so a power cap changes nothing. {why}"),
        evidence={**_window_evidence(ctx), "series": f"job.energy_j, job.{f.unit}, job.active_s, "
                  f"job.util_pct, job.sm_clock_mhz, job.power_limit_w for {f.label}",
                  "peak_power_share_of_cap": peak, "mean_util_pct": util, **evidence},
        savings_kwh_per_day=s.kwh_per_day, savings_kg_co2_per_day=s.kg_co2_per_day,
        savings_cost_per_day=s.cost_per_day, estimate_method=f"{basis}; {s.note}",
        action={"type": "lock_clocks", "gpu_model": f.gpu_model, "hosts": hosts, "gpus": gpus, **clock},
        currency=ctx.settings.tariff.currency, measured=measured, gpus=_flat(gpus), jobs=jobs)
