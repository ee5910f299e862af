"""One filter for every figure: node, GPU model, job or team, applied to a loaded Context so the report
(``wattlens report --node …``) and every dashboard page compute filtered numbers the same way.

A filter keeps the GPU, CPU and job buckets of the matching hosts/GPUs/jobs. A site's facility
meter cannot be split by node, so under a filter carbon and cost use the filtered IT energy ×
the site's hourly PUE (facility ÷ IT), and the grid basis says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from analytics.context import Context, derive
from analytics.queries import FacilityBucket


@dataclass(frozen=True)
class Filter:
    """Which part of the fleet: a node (host), a GPU model, a job, a team (the job points' ``team``
    tag: its jobs, and the GPUs and CPUs of the hosts they ran on). Empty strings mean all."""

    node: str = ""
    model: str = ""
    job: str = ""
    team: str = ""

    @property
    def active(self) -> bool:
        return bool(self.node or self.model or self.job or self.team)

    def text(self) -> str:
        """'node node-01 · model H100' for captions and the report."""
        parts = [f"{k} {v}" for k, v in (("node", self.node), ("model", self.model), ("job", self.job),
                                         ("team", self.team)) if v]
        return " · ".join(parts) or "whole fleet"


def _ratio_only(rows: list[FacilityBucket]) -> list[FacilityBucket]:
    """The facility rows as a ratio (facility ÷ IT) only: the meter's totals are the whole site's."""
    out = []
    for b in rows:
        it = b.it_energy_j if b.it_energy_j and b.facility_energy_j else b.it_power_w
        fac = b.facility_energy_j if b.it_energy_j and b.facility_energy_j else b.facility_power_w
        out.append(FacilityBucket(b.site, b.time_ns, None, None, it, fac))
    return out


def filter_context(ctx: Context, flt: Filter) -> Context:
    """The Context restricted to ``flt`` (the same Context when no filter is set)."""
    if not flt.active:
        return ctx
    jobs = [j for j in ctx.jobs if (not flt.node or j.host == flt.node)
            and (not flt.model or j.gpu_model == flt.model) and (not flt.job or j.job == flt.job)
            and (not flt.team or ctx.job_teams.get((j.job, j.host)) == flt.team)]
    job_hosts = {j.host for j in jobs} if flt.job or flt.team else None
    gpus = [g for g in ctx.gpus if (not flt.node or g.host == flt.node)
            and (not flt.model or g.model == flt.model)
            and (job_hosts is None or g.host in job_hosts)]
    gpu_hosts = {g.host for g in gpus}
    cpu = [row for row in ctx.cpu if row[0][0] in gpu_hosts
           and (not flt.node or row[0][0] == flt.node)]
    out = Context(ctx.window, ctx.bucket_s, gpus, jobs, cpu, _ratio_only(ctx.facility), ctx.carbon,
                  ctx.carbon_message, ctx.settings, job_teams=ctx.job_teams,
                  job_namespaces=ctx.job_namespaces, job_idle=ctx.job_idle, idle_policies=ctx.idle_policies)
    derive(out)
    if out.grid_basis.startswith("facility energy"):
        out.grid_basis = f"{out.grid_basis.split(' (')[0]} (filtered IT energy × the site's PUE)"
    return out


def no_match(ctx: Context, flt: Filter) -> str:
    """One line for a filter that matches nothing in the window, naming the flag and what exists."""
    seen = {"node": sorted({g.host for g in ctx.gpus}), "model": sorted({g.model for g in ctx.gpus}),
            "job": sorted({j.job for j in ctx.jobs}), "team": sorted(set(ctx.job_teams.values()))}
    for name in ("node", "model", "job", "team"):
        value = getattr(flt, name)
        if value and value not in seen[name]:
            some = ", ".join(seen[name][:8]) + (" …" if len(seen[name]) > 8 else "")
            return f"--{name}: no data for {value!r} in this window; it has {some or 'none'}"
    return f"no data for {flt.text()} in this window (the filters match nothing together)"
