"""The only package that reads a store: aggregate queries that return plain data for analytics.

One module per concept: :mod:`.buckets` (the report's per-GPU, per-job, CPU, facility and
carbon buckets), :mod:`.power` (power series and what the data cover), :mod:`.alerting` (alert
rules' reads and recorded alerts), :mod:`.fleet` (filters, GPU health, what the store holds),
:mod:`.autopilot` (the power-cap autopilot's events).
Everything is re-exported here, so callers write ``from analytics import queries``.
"""

from __future__ import annotations

from analytics.queries.alerting import (
    AlertEvent,
    alert_events,
    carbon_intensity_mean,
    deferrable_jobs_running,
    energy_and_co2,
    group_mean_buckets,
    group_means,
    last_seen_ns,
    max_power_limit_w,
)
from analytics.queries.autopilot import (
    AUTOPILOT_EVENT_FIELDS,
    autopilot_events,
    autopilot_windows,
)
from analytics.queries.buckets import (
    WORK_FIELDS,
    FacilityBucket,
    GpuBucket,
    JobBucket,
    carbon_hourly,
    energy_buckets,
    energy_by,
    energy_by_where,
    estimated_job_energy_j,
    facility_buckets,
    gpu_buckets,
    job_buckets,
    job_energy_by_tags,
    work_buckets,
)
from analytics.queries.fleet import (
    HEALTH_FIELDS,
    cached,
    filter_values,
    gather,
    gpu_health_buckets,
    gpu_health_summary,
    has_data,
    hosts_of_job,
    job_work_by_host,
    newest_time_ns,
)
from analytics.queries.power import (
    SERIES_TAGS,
    Coverage,
    GpuCell,
    Series,
    covered_s,
    gpu_cells,
    methods_seen,
    power_series,
    power_series_and_total,
    sampling_interval_s,
    series_per_group,
)

__all__ = [
    "AUTOPILOT_EVENT_FIELDS",
    "HEALTH_FIELDS",
    "SERIES_TAGS",
    "WORK_FIELDS",
    "AlertEvent",
    "Coverage",
    "FacilityBucket",
    "GpuBucket",
    "GpuCell",
    "JobBucket",
    "Series",
    "alert_events",
    "autopilot_events",
    "autopilot_windows",
    "cached",
    "carbon_hourly",
    "carbon_intensity_mean",
    "covered_s",
    "deferrable_jobs_running",
    "energy_and_co2",
    "energy_buckets",
    "energy_by",
    "energy_by_where",
    "estimated_job_energy_j",
    "facility_buckets",
    "filter_values",
    "gather",
    "gpu_buckets",
    "gpu_cells",
    "gpu_health_buckets",
    "gpu_health_summary",
    "group_mean_buckets",
    "group_means",
    "has_data",
    "hosts_of_job",
    "job_buckets",
    "job_energy_by_tags",
    "job_work_by_host",
    "last_seen_ns",
    "max_power_limit_w",
    "methods_seen",
    "newest_time_ns",
    "power_series",
    "power_series_and_total",
    "sampling_interval_s",
    "series_per_group",
    "work_buckets",
]
