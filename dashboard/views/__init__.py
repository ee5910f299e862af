"""View models: what each page shows, read through analytics and shaped for the components and
figures; one module per page (fleet, jobs, tradeoff, carbon, recommendations, alerts, gpus), plus the
shared time ranges (common) and the header's status."""

from __future__ import annotations

from analytics import units
from dashboard.views.alerts import AlertLane, AlertsView, alert_lanes, alert_scope, alerts_view
from dashboard.views.carbon import UNATTRIBUTED_JOB, UNATTRIBUTED_NODE, CarbonView, carbon_view
from dashboard.views.common import (
    DEFAULT_RANGE,
    MAX_BUCKETS,
    RANGES,
    ContextMemo,
    Kpi,
    custom_range,
    data_end_ns,
    range_key_for,
    range_label,
    range_seconds,
    range_window,
    settled_end_ns,
    window_for,
    window_text,
)
from dashboard.views.fleet import (
    FleetView,
    PowerChart,
    PowerUpdate,
    chart_bucket_s,
    filter_wheres,
    fleet_kpis,
    fleet_power,
    fleet_power_update,
    fleet_view,
    gpu_heat,
)
from dashboard.views.gpus import filter_options, health_rows, health_view, job_picks
from dashboard.views.jobs import JobDetail, job_detail, jobs_rows, short_model
from dashboard.views.recommendations import (
    RecommendationsView,
    cap_commands,
    evidence_rows,
    readable,
    recommendations_view,
)
from dashboard.views.status import Status, status
from dashboard.views.teams import teams_note, teams_rows
from dashboard.views.tradeoff import Tradeoff, tradeoff

__all__ = [
    "DEFAULT_RANGE",
    "MAX_BUCKETS",
    "RANGES",
    "UNATTRIBUTED_JOB",
    "UNATTRIBUTED_NODE",
    "AlertLane",
    "AlertsView",
    "CarbonView",
    "ContextMemo",
    "FleetView",
    "JobDetail",
    "Kpi",
    "PowerChart",
    "PowerUpdate",
    "RecommendationsView",
    "Status",
    "Tradeoff",
    "alert_lanes",
    "alert_scope",
    "alerts_view",
    "cap_commands",
    "carbon_view",
    "chart_bucket_s",
    "custom_range",
    "data_end_ns",
    "evidence_rows",
    "filter_options",
    "filter_wheres",
    "fleet_kpis",
    "fleet_power",
    "fleet_power_update",
    "fleet_view",
    "gpu_heat",
    "health_rows",
    "health_view",
    "job_detail",
    "job_picks",
    "jobs_rows",
    "range_key_for",
    "range_label",
    "range_seconds",
    "range_window",
    "readable",
    "recommendations_view",
    "settled_end_ns",
    "short_model",
    "status",
    "teams_note",
    "teams_rows",
    "tradeoff",
    "units",
    "window_for",
    "window_text",
]
