"""Clock-lock recommendations: classes whose power cap never binds, estimated from published DVFS measurements.

A class (GPU model, kind, workload, precision) whose GPUs never come near their power limit
runs at full SM clocks whatever the cap, so only a clock lock (``nvidia-smi -lgc``) trades speed
for energy. The fleet cannot measure that trade for such a class: every run of it was at full
clocks (job points carry the power limit, not the SM clock). The saving is therefore an
estimate from the published DVFS study below, labelled as one, with its range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics.context import Context
from analytics.frontier import Frontier
from analytics.queries import JobBucket
from analytics.recommendation import (
    J_PER_KWH,
    Recommendation,
    _by_hour,
    _sig,
    _slug,
    _window_evidence,
    _worth,
    value_energy,
)
from analytics.targets import _flat, _job_gpus

LOCK_SM_CLOCK_FRACTION = 0.8  # the advised lock, as a share of the maximum SM clock


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


def clock_lock(ctx: Context, f: Frontier, buckets: list[JobBucket],
               idle_w: Mapping[str, tuple[float, str]]) -> Recommendation | None:
    """Lock SM clocks for a busy class whose cap never binds; the saving: a share of the energy above idle."""
    st = ctx.settings
    active = sum(b.active_s for b in buckets)
    util = (sum((b.util_pct or 0.0) * b.active_s for b in buckets) / active) if active else 0.0
    if util < max(st.clock_lock_min_util_pct, st.low_util_pct):
        return None  # lightly used: consolidation is the better advice
    idle, idle_src = idle_w.get(f.gpu_model, (0.0, "unknown"))
    pub = dvfs_saving(f.kind)
    frac = pub.mid if st.clock_lock_saving_frac is None else st.clock_lock_saving_frac
    above_idle = [(b.time_ns, max(0.0, b.energy_j - idle * b.active_s * max(b.gpus, 1))) for b in buckets]
    s = value_energy(ctx, _by_hour((t, frac * e) for t, e in above_idle))
    if not _worth(ctx, s):
        return None
    hosts = sorted({h for p in f.points for h in p.hosts})
    gpus = _job_gpus(ctx, sorted({j for p in f.points for j in p.jobs}), f.gpu_model)
    peak = max(p.peak_power_w / p.cap_w for p in f.points)
    base_kwh = sum(e for _t, e in above_idle) / J_PER_KWH * 86400 / ctx.span_s  # above idle, per day
    if st.clock_lock_saving_frac is None:
        basis = (f"estimate, not measured in this fleet (no run of this class at a lower SM clock): "
                 f"{pub.source} at the best core clock; the middle of that range, {100 * frac:.1f}%, "
                 f"of the energy above idle ({idle:.0f} W per GPU: {idle_src}); range "
                 f"{_sig(pub.low * base_kwh)}-{_sig(pub.high * base_kwh)} kWh/day")
    else:
        basis = (f"estimate: the operator's figure (clock_lock_saving_frac) of {100 * frac:.1f}% of the "
                 f"energy above idle ({idle:.0f} W per GPU: {idle_src})")
    return Recommendation(
        id=f"clock_lock:{_slug(f.key)}", kind="clock_lock", target=f.label,
        title=f"Lock SM clocks for {f.workload} on {f.gpu_model}: its power cap never binds",
        detail=(f"Its GPUs peak at {100 * peak:.0f}% of their {', '.join(f'{p.cap_w:.0f} W' for p in f.points)} "
                f"cap (mean utilisation {util:.0f}%), so a power cap changes nothing. Locking SM clocks "
                f"(nvidia-smi -lgc) at about {100 * LOCK_SM_CLOCK_FRACTION:.0f}% of the maximum trades some "
                f"throughput for less energy; published DVFS measurements of {pub.work} put the saving at "
                f"{100 * pub.low:.1f}-{100 * pub.high:.1f}%. Measure PER before and after."),
        evidence={**_window_evidence(ctx), "series": f"job.energy_j, job.active_s, job.util_pct, "
                  f"job.power_limit_w for {f.label}", "peak_power_share_of_cap": peak,
                  "mean_util_pct": util, "idle_power_w": idle,
                  "energy_above_idle_kwh_per_day": _sig(base_kwh), "saving_fraction": frac,
                  "published_saving_range": [pub.low, pub.high], "published_source": pub.source},
        savings_kwh_per_day=s.kwh_per_day, savings_kg_co2_per_day=s.kg_co2_per_day,
        savings_cost_per_day=s.cost_per_day, estimate_method=f"{basis}; {s.note}",
        action={"type": "lock_clocks", "gpu_model": f.gpu_model, "hosts": hosts, "gpus": gpus,
                "sm_clock_fraction": LOCK_SM_CLOCK_FRACTION},
        currency=st.tariff.currency, measured=False, gpus=_flat(gpus),
        jobs=tuple(sorted({j for p in f.points for j in p.jobs})))
