"""Job energy prediction from progress toward planned_samples: energy, CO2 and finish time, with an interval."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from analytics import carbon
from analytics.queries import JobBucket

NS = 1_000_000_000
Z_95 = 1.96
PRIOR_REL = 0.25  # relative uncertainty of a rate measured over fewer than MIN_BUCKETS buckets
MIN_BUCKETS = 3
FLOOR_REL = 0.005
METHOD = (
    "rate = samples / active seconds and energy per sample = energy / samples, both over the job's "
    "history so far; remaining = (planned_samples - samples) at those rates. Interval: ±1.96 × the "
    "bucket-to-bucket coefficient of variation / √buckets (25 % with fewer than 3 buckets), applied "
    "to the remaining part only, so it narrows as the job progresses. CO2: measured hours × their "
    "intensity, plus remaining energy × the forecast intensity until the predicted finish.")


@dataclass(frozen=True)
class Prediction:
    """Predicted totals for one job; ``*_low``/``*_high`` bound a ~95 % interval."""

    job: str
    planned_samples: float
    done_samples: float
    progress: float
    now_ns: int
    elapsed_active_s: float
    energy_done_j: float
    energy_total_j: float
    energy_low_j: float
    energy_high_j: float
    remaining_s: float
    remaining_low_s: float
    remaining_high_s: float
    finish_ns: int
    finish_low_ns: int
    finish_high_ns: int
    duration_s: float  # predicted total active time
    kg_co2: float | None
    kg_co2_low: float | None
    kg_co2_high: float | None
    carbon_message: str | None
    method: str = METHOD

    @property
    def done(self) -> bool:
        return self.progress >= 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rel_uncertainty(values: list[float]) -> float:
    """z × CV / √n of per-bucket values, or the prior when there are too few buckets."""
    vals = [v for v in values if math.isfinite(v)]
    n = len(vals)
    if n < MIN_BUCKETS:
        return PRIOR_REL
    mean = sum(vals) / n
    if mean <= 0:
        return PRIOR_REL
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return min(0.9, max(FLOOR_REL, Z_95 * sd / mean / math.sqrt(n)))


def predict_job(buckets: Iterable[JobBucket], series: carbon.IntensitySeries | None = None,
                now_ns: int | None = None) -> Prediction | None:
    """Predict one job's totals from its buckets (every host); None without planned_samples or progress."""
    slots: dict[int, dict[str, float]] = defaultdict(lambda: {"samples": 0.0, "energy": 0.0,
                                                               "active": 0.0})
    planned = 0.0
    name = None
    for b in buckets:
        name = b.job
        s = slots[b.time_ns]
        s["samples"] += b.work.get("samples", 0.0)
        s["energy"] += b.energy_j
        s["active"] = max(s["active"], b.active_s)  # hosts run side by side: wall time is the max
        planned = max(planned, b.planned_samples or 0.0)
    if name is None or planned <= 0:
        return None
    times = sorted(slots)
    done = sum(slots[t]["samples"] for t in times)
    energy_done = sum(slots[t]["energy"] for t in times)
    active = sum(slots[t]["active"] for t in times)
    if done <= 0 or active <= 0:
        return None
    # The last bucket starts at times[-1] and the job ran for its active seconds in it.
    last = now_ns if now_ns is not None else times[-1] + int(slots[times[-1]]["active"] * NS)
    rate = done / active
    j_per_sample = energy_done / done
    rates = [slots[t]["samples"] / slots[t]["active"] for t in times if slots[t]["active"] > 0
             and slots[t]["samples"] > 0]
    costs = [slots[t]["energy"] / slots[t]["samples"] for t in times if slots[t]["samples"] > 0]
    u_rate, u_energy = _rel_uncertainty(rates), _rel_uncertainty(costs)
    remaining = max(0.0, planned - done)
    t_rem = remaining / rate
    t_lo, t_hi = remaining / (rate * (1 + u_rate)), remaining / (rate * (1 - u_rate))
    e_rem = remaining * j_per_sample
    e_lo, e_hi = e_rem * (1 - u_energy), e_rem * (1 + u_energy)
    if remaining == 0:
        # Already past the plan: the finish is when the cumulative samples crossed it.
        cum = 0.0
        finish = times[-1]
        for t in times:
            cum += slots[t]["samples"]
            if cum >= planned:
                finish = t
                break
        fin = fin_lo = fin_hi = finish
    else:
        fin = last + int(t_rem * NS)
        fin_lo, fin_hi = last + int(t_lo * NS), last + int(t_hi * NS)
    kg = kg_lo = kg_hi = None
    message = None
    done_em = carbon.emissions({t: slots[t]["energy"] for t in times}, series)
    if done_em.g_co2 is None:
        message = done_em.message
    else:
        mean_g = None
        if remaining > 0 and series is not None:
            try:
                hourly = carbon.forecast(series, last, horizon_s=t_hi + 3600)
                mean_g = carbon.window_mean(hourly, last, t_rem)
            except carbon.CarbonDataMissing as exc:
                message = str(exc)
        if remaining == 0 or mean_g is not None:
            g_rate = (mean_g or 0.0) / carbon.J_PER_KWH
            kg = (done_em.g_co2 + e_rem * g_rate) / 1000
            kg_lo = (done_em.g_co2 + e_lo * g_rate) / 1000
            kg_hi = (done_em.g_co2 + e_hi * g_rate) / 1000
        if done_em.message:
            message = done_em.message
    return Prediction(name, planned, done, done / planned, last, active, energy_done,
                      energy_done + e_rem, energy_done + e_lo, energy_done + e_hi, t_rem, t_lo,
                      t_hi, fin, fin_lo, fin_hi, active + t_rem, kg, kg_lo, kg_hi, message)


def predict_all(buckets: Iterable[JobBucket], series: carbon.IntensitySeries | None = None,
                running_since_ns: int | None = None) -> list[Prediction]:
    """Predictions for every job with a plan that is still short of it; with ``running_since_ns``,
    only jobs with a point at or after that time (the ones still running)."""
    by_job: dict[str, list[JobBucket]] = defaultdict(list)
    for b in buckets:
        by_job[b.job].append(b)
    out = []
    for name in sorted(by_job):
        bs = by_job[name]
        if running_since_ns is not None and max(b.time_ns for b in bs) < running_since_ns:
            continue
        p = predict_job(bs, series)
        if p is not None and not p.done:
            out.append(p)
    return out
