"""Start-window recommendations: deferrable workloads moved to the lowest-carbon window of the next 24 h."""

from __future__ import annotations

from collections import defaultdict

from analytics import carbon
from analytics.context import HOUR_NS, NS, Context
from analytics.levels import JobAggregate
from analytics.predict import predict_job
from analytics.recommendation import J_PER_KWH, Recommendation, _sig, _slug, _window_evidence
from analytics.targets import _flat, _job_gpus_any
from analytics.timeutil import fmt_time


def carbon_windows(ctx: Context) -> tuple[list[Recommendation], str | None]:
    """Deferrable workloads: start in the lowest-intensity window of their (predicted) length in the next 24 h."""
    st = ctx.settings
    deferrable = [j for j in ctx.job_aggs.values() if j.deferrable and j.energy_j > 0]
    if not deferrable:
        return [], None
    if ctx.carbon is None:
        return [], f"carbon-aware start windows for deferrable jobs need intensity data: {ctx.carbon_message}"
    now = ctx.now_ns
    groups: dict[str, list[JobAggregate]] = defaultdict(list)
    for j in deferrable:
        groups[j.workload or j.job].append(j)
    out = []
    message = None
    for workload, jobs in sorted(groups.items()):
        latest: dict[str, JobAggregate] = {}
        for j in sorted(jobs, key=lambda j: j.first_ns):
            for h in j.hosts:
                latest[h] = j
        runs = sorted({j.job: j for j in latest.values()}.values(), key=lambda j: j.job)
        energy_run = duration = 0.0
        starts = []
        predicted = False
        for j in runs:
            p = predict_job(ctx.job_buckets_of(j.job), ctx.carbon)
            if p is not None and not p.done:
                energy_run += p.energy_total_j
                duration = max(duration, p.duration_s)
                predicted = True
            else:
                energy_run += j.energy_j
                duration = max(duration, j.active_s)
            starts.append(j.first_ns)
        if duration <= 0 or duration > 86400:
            continue
        try:
            horizon = carbon.forecast(ctx.carbon, now, horizon_s=86400 + duration)
        except carbon.CarbonDataMissing as exc:
            message = str(exc)
            continue
        day = [(h, g) for h, g in horizon if h < now + 86400 * NS]
        # The next time the workload would start as usual: same time of day as its latest run.
        tod = min(starts) % (86400 * NS)
        usual = now - now % (86400 * NS) + tod
        if usual < now:
            usual += 86400 * NS
        cur = carbon.window_mean(horizon, usual, duration)
        best = carbon.best_window(day, duration, earliest_ns=now)
        if cur is None or best is None:
            continue
        gain = (cur - best[1]) / cur if cur > 0 else 0.0
        if gain * 100 < st.carbon_min_gain_pct:
            continue
        used = sorted({h for h, _ in horizon for s0 in (usual, best[0])
                       if h + HOUR_NS > s0 and h < s0 + duration * NS})
        confidence, conf_why = carbon.window_confidence(
            carbon.forecast_basis(ctx.carbon, used, now), carbon.history_days(ctx.carbon, now), predicted)
        # Runs per day from the measured energy; the per-run energy is the predicted one.
        class_energy = sum(j.energy_j for j in jobs)
        per_day = max(1.0, class_energy * 86400 / ctx.span_s / energy_run) if energy_run else 1.0
        pue = ctx.fac.pue or 1.0
        kg = energy_run * pue / J_PER_KWH * (cur - best[1]) / 1000 * per_day
        prices = [(h, st.tariff.price_at(h)) for h, _ in horizon]
        p_cur = carbon.window_mean(prices, usual, duration) or 0.0
        p_best = carbon.window_mean(prices, best[0], duration) or 0.0
        cost = energy_run * pue / J_PER_KWH * (p_cur - p_best) * per_day
        hosts = sorted({h for j in runs for h in j.hosts})
        start_txt = fmt_time(best[0])[11:16] + "Z"
        out.append(Recommendation(
            id=f"carbon_window:{_slug(workload)}", kind="carbon_window", target=workload,
            title=f"Start {workload} at {start_txt} instead of {fmt_time(usual)[11:16]}Z",
            detail=(f"{workload} is deferrable and runs {duration / 3600:.1f} h using "
                    f"{energy_run / J_PER_KWH:.1f} kWh ({'predicted' if predicted else 'measured'}). "
                    f"Over the next 24 h the grid averages {best[1]:.0f} g/kWh in the window from "
                    f"{start_txt} against {cur:.0f} g/kWh at its usual start: {100 * gain:.0f}% less CO2. "
                    f"Confidence {confidence}: {conf_why}."),
            evidence={**_window_evidence(ctx), "series": f"carbon.intensity_g_per_kwh ({ctx.carbon.describe()}), "
                      f"job.energy_j of {', '.join(j.job for j in runs)}",
                      "forecast_g_per_kwh": [[fmt_time(h), g] for h, g in day],
                      "usual_start": fmt_time(usual), "best_start": fmt_time(best[0]),
                      "usual_g_per_kwh": cur, "best_g_per_kwh": best[1], "duration_s": duration,
                      "energy_per_run_kwh": energy_run / J_PER_KWH, "runs_per_day": per_day,
                      "energy_predicted": predicted, "confidence": confidence,
                      "confidence_basis": conf_why},
            savings_kwh_per_day=0.0, savings_kg_co2_per_day=_sig(kg), savings_cost_per_day=_sig(cost),
            estimate_method=(f"estimate (the intensity is a forecast): energy per run "
                             f"({'predicted from progress' if predicted else 'measured'}) × "
                             f"PUE {pue:.2f} × (intensity at the usual start − in the best window) × runs per "
                             f"day; intensity forecast: values given for those hours, else the same hour of "
                             f"day averaged over the past days; the energy itself is unchanged"),
            action={"type": "schedule", "workload": workload, "hosts": hosts,
                    "start_utc": start_txt, "duration_s": duration},
            currency=st.tariff.currency, measured=False, jobs=tuple(j.job for j in runs),
            gpus=_flat(_job_gpus_any(ctx, runs))))
    return out, message


