"""Prometheus exporter: an Agent observer that keeps gauges and counters, served on /metrics with agent health."""

from __future__ import annotations

import gzip
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from collector.agent import AgentStats
from collector.auth import is_loopback
from collector.http_server import Handler, Request, Response, RouteServer
from collector.schema import Point

if TYPE_CHECKING:
    from collector.spool import SpoolingSink

log = logging.getLogger("wattlens.exporter")


# --- what is exported ----------------------------------------------------------------


@dataclass(frozen=True)
class Gauge:
    """A schema field exported as a gauge: the last value, times ``scale`` to a base unit."""

    field: str
    name: str
    unit: str
    help: str
    scale: float = 1.0


@dataclass(frozen=True)
class Counter:
    """An increment field (DESIGN §2) exported as a cumulative ``_total`` counter."""

    field: str
    name: str
    unit: str
    help: str


# Labels per measurement: the schema's identity tags, all bounded (no PIDs, no free text).
LABELS: dict[str, tuple[str, ...]] = {
    "gpu": ("host", "gpu", "uuid", "model"),
    "cpu": ("host", "domain"),
    # pod tags bounded in collector/k8s; team checked where it is set (collector.job_report.check_team)
    "job": ("job", "host", "team", "namespace", "pod", "container"),
    "mig": ("host", "gpu", "uuid", "mig"),
    "facility": ("site",),
    "carbon": ("region",),
}

GAUGES: dict[str, tuple[Gauge, ...]] = {
    "gpu": (
        Gauge("power_w", "wattlens_gpu_power_watts", "watts", "GPU board power draw."),
        Gauge("util_pct", "wattlens_gpu_utilization_ratio", "ratio",
              "Share of time a kernel ran on the GPU (0-1).", 0.01),
        Gauge("mem_util_pct", "wattlens_gpu_memory_utilization_ratio", "ratio",
              "Share of time GPU memory was read or written (0-1).", 0.01),
        Gauge("sm_clock_mhz", "wattlens_gpu_sm_clock_hertz", "hertz",
              "GPU streaming-multiprocessor clock.", 1e6),
        Gauge("mem_clock_mhz", "wattlens_gpu_memory_clock_hertz", "hertz",
              "GPU memory clock.", 1e6),
        Gauge("temp_c", "wattlens_gpu_temperature_celsius", "celsius", "GPU core temperature."),
        Gauge("power_limit_w", "wattlens_gpu_power_limit_watts", "watts",
              "GPU power cap in force."),
    ),
    "cpu": (
        Gauge("power_w", "wattlens_cpu_power_watts", "watts",
              "CPU power per RAPL domain (package-N, dram, ...)."),
        Gauge("util_pct", "wattlens_cpu_utilization_ratio", "ratio",
              "CPU utilisation (0-1).", 0.01),
    ),
    "job": (
        Gauge("gpus", "wattlens_job_gpus", "gpus", "GPUs the job ran on during the last interval."),
    ),
    "mig": (
        Gauge("power_w", "wattlens_mig_power_watts", "watts",
              "A MIG instance's part of its GPU's power (by activity share or slice size)."),
        Gauge("share", "wattlens_mig_energy_share_ratio", "ratio",
              "A MIG instance's share of its GPU's energy (0-1); the shares of a GPU sum to 1."),
    ),
    "facility": (
        Gauge("it_power_w", "wattlens_facility_it_power_watts", "watts",
              "IT power of the site (servers, storage, network)."),
        Gauge("facility_power_w", "wattlens_facility_power_watts", "watts",
              "Total facility power of the site (IT plus cooling and losses)."),
    ),
    "carbon": (
        Gauge("intensity_g_per_kwh", "wattlens_grid_carbon_intensity_grams_per_kilowatt_hour",
              "grams_per_kilowatt_hour", "Carbon intensity of the grid region (gCO2e/kWh)."),
        Gauge("renewable_pct", "wattlens_grid_renewable_ratio", "ratio",
              "Share of renewable generation in the grid region (0-1).", 0.01),
        Gauge("marginal_g_per_kwh", "wattlens_grid_marginal_carbon_intensity_grams_per_kilowatt_hour",
              "grams_per_kilowatt_hour", "Marginal operating emissions rate of the grid region (gCO2/kWh)."),
    ),
}

COUNTERS: dict[str, tuple[Counter, ...]] = {
    "gpu": (Counter("energy_j", "wattlens_gpu_energy_joules_total", "joules",
                    "GPU energy since the agent started."),),
    "cpu": (Counter("energy_j", "wattlens_cpu_energy_joules_total", "joules",
                    "CPU energy per RAPL domain since the agent started."),),
    "job": (
        Counter("energy_j", "wattlens_job_energy_joules_total", "joules",
                "Energy attributed to the job on this host."),
        Counter("samples", "wattlens_job_samples_total", "samples", "Samples the job processed."),
        Counter("tokens", "wattlens_job_tokens_total", "tokens", "Tokens the job processed."),
        Counter("steps", "wattlens_job_steps_total", "steps", "Optimizer steps the job took."),
        Counter("flops", "wattlens_job_flops_total", "flops",
                "Floating-point operations the job did."),
        Counter("active_s", "wattlens_job_active_seconds_total", "seconds",
                "Wall time the job ran."),
    ),
    "mig": (Counter("energy_j", "wattlens_mig_energy_joules_total", "joules",
                    "A MIG instance's part of its GPU's energy; the parts sum to the GPU's."),),
    "facility": (
        Counter("it_energy_j", "wattlens_facility_it_energy_joules_total", "joules",
                "IT energy of the site."),
        Counter("facility_energy_j", "wattlens_facility_energy_joules_total", "joules",
                "Total facility energy of the site."),
    ),
}

# Agent health, from AgentStats: (attribute, name, unit, help, kind).
AGENT_METRICS: tuple[tuple[str, str, str, str, str], ...] = (
    ("rounds", "wattlens_agent_rounds_total", "rounds", "Sampling rounds completed.", "counter"),
    ("points_sampled", "wattlens_agent_sampled_points_total", "points",
     "Points the sources returned.", "counter"),
    ("points_written", "wattlens_agent_written_points_total", "points",
     "Points the sink accepted (written or spooled).", "counter"),
    ("points_dropped", "wattlens_agent_dropped_points_total", "points",
     "Points lost before the sink: write queue full, or the store rejected them.", "counter"),
    ("rounds_missed", "wattlens_agent_missed_rounds_total", "rounds",
     "Ticks skipped because a round overran the interval.", "counter"),
    ("source_errors", "wattlens_agent_source_errors_total", "errors",
     "Source sample calls that failed.", "counter"),
    ("write_errors", "wattlens_agent_write_errors_total", "errors",
     "Sink writes that failed.", "counter"),
    ("clock_jumps", "wattlens_agent_clock_jumps_total", "jumps",
     "Wall-clock steps the agent corrected for.", "counter"),
    ("last_round_s", "wattlens_agent_round_duration_seconds", "seconds",
     "Duration of the last sampling round.", "gauge"),
    ("last_write_s", "wattlens_agent_write_duration_seconds", "seconds",
     "Latency of the last sink write.", "gauge"),
    ("queue_depth", "wattlens_agent_queue_batches", "batches",
     "Batches waiting in the write queue.", "gauge"),
    ("last_good_write_wall_s", "wattlens_agent_last_good_write_timestamp_seconds", "seconds",
     "Unix time of the last successful sink write.", "gauge"),
)

SPOOL_METRICS: tuple[tuple[str, str, str, str, str], ...] = (
    ("depth_points", "wattlens_spool_points", "points",
     "Points waiting in the on-disk spool for the store.", "gauge"),
    ("depth_bytes", "wattlens_spool_bytes", "bytes", "Size of the on-disk spool.", "gauge"),
    ("points_dropped", "wattlens_spool_dropped_points_total", "points",
     "Oldest points dropped because the spool was full.", "counter"),
    ("points_rejected", "wattlens_spool_rejected_points_total", "points",
     "Points the store refused as bad data (4xx), dropped.", "counter"),
    ("write_errors", "wattlens_spool_write_errors_total", "errors",
     "Failed attempts to write to the store.", "counter"),
    ("points_replayed", "wattlens_spool_replayed_points_total", "points",
     "Points delivered from the spool after an outage.", "counter"),
    ("last_good_write_wall_s", "wattlens_spool_last_good_write_timestamp_seconds", "seconds",
     "Unix time of the last write the store accepted.", "gauge"),
)


# --- state -----------------------------------------------------------------------------


@dataclass
class _Series:
    value: float
    seen_s: float


class FleetCollector(Collector):
    """A prometheus_client Collector over the latest fleet values and cumulative counters."""

    def __init__(self, stats: AgentStats, spool: SpoolingSink | None, *, stale_after_s: float,
                 counter_idle_s: float, max_series: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stats = stats
        self.spool = spool
        self.stale_after_s = stale_after_s
        self.counter_idle_s = counter_idle_s
        self.max_series = max_series
        self.clock = clock
        self.series_dropped = 0
        self._lock = threading.Lock()
        self._gauges: dict[str, dict[tuple[str, ...], _Series]] = {}
        self._counters: dict[str, dict[tuple[str, ...], _Series]] = {}
        self._n_series = 0
        self._warned_full = False

    def observe(self, points: Sequence[Point]) -> None:
        now = self.clock()
        with self._lock:
            for p in points:
                labels_of = LABELS.get(p.measurement)
                if labels_of is None:
                    continue
                tags = dict(p.tags)
                labels = tuple(tags.get(k, "") for k in labels_of)
                fields = dict(p.fields)
                for g in GAUGES.get(p.measurement, ()):
                    v = _as_float(fields.get(g.field))
                    if v is not None:
                        self._set(self._gauges, g.name, labels, v * g.scale, now)
                for c in COUNTERS.get(p.measurement, ()):
                    v = _as_float(fields.get(c.field))
                    if v is not None and v >= 0:  # never a negative increment
                        self._add(c.name, labels, v, now)

    def _set(self, table: dict[str, dict[tuple[str, ...], _Series]], name: str,
             labels: tuple[str, ...], value: float, now: float) -> None:
        series = table.setdefault(name, {})
        s = series.get(labels)
        if s is None:
            if not self._room():
                return
            series[labels] = _Series(value, now)
        else:
            s.value, s.seen_s = value, now

    def _add(self, name: str, labels: tuple[str, ...], inc: float, now: float) -> None:
        series = self._counters.setdefault(name, {})
        s = series.get(labels)
        if s is None:
            if not self._room():
                return
            series[labels] = _Series(inc, now)
        else:
            s.value += inc
            s.seen_s = now

    def _room(self) -> bool:
        if self._n_series < self.max_series:
            self._n_series += 1
            return True
        self.series_dropped += 1
        if not self._warned_full:
            self._warned_full = True
            log.warning("exporter: %d series, the limit; new series are not exported "
                        "(check for a tag with unbounded values)", self.max_series)
        return False

    def _expire(self, now: float) -> None:
        for table, ttl in ((self._gauges, self.stale_after_s), (self._counters, self.counter_idle_s)):
            for series in table.values():
                old = [k for k, s in series.items() if now - s.seen_s > ttl]
                for k in old:
                    del series[k]
                self._n_series -= len(old)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self._lock:
            self._expire(now)
            gauges = {n: [(k, s.value) for k, s in t.items()] for n, t in self._gauges.items()}
            counters = {n: [(k, s.value) for k, s in t.items()] for n, t in self._counters.items()}
        for measurement, specs in GAUGES.items():
            labels = list(LABELS[measurement])
            for g in specs:
                fam = GaugeMetricFamily(g.name, g.help, labels=labels, unit=g.unit)
                for key, value in gauges.get(g.name, ()):
                    fam.add_metric(list(key), value)
                yield fam
        for measurement, cspecs in COUNTERS.items():
            labels = list(LABELS[measurement])
            for c in cspecs:
                cfam = CounterMetricFamily(c.name, c.help, labels=labels, unit=c.unit)
                for key, value in counters.get(c.name, ()):
                    cfam.add_metric(list(key), value)
                yield cfam
        yield from _from_attributes(self.stats, AGENT_METRICS)
        if self.spool is not None:
            yield from _from_attributes(self.spool, SPOOL_METRICS)
        yield _single("wattlens_exporter_dropped_series_total", "series",
                      "Series not exported because the series limit was reached.",
                      self.series_dropped, "counter")


def _as_float(v: object) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _single(name: str, unit: str, help_text: str, value: float, kind: str) -> Metric:
    if kind == "counter":
        return CounterMetricFamily(name, help_text, value=value, unit=unit)
    return GaugeMetricFamily(name, help_text, value=value, unit=unit)


def _from_attributes(obj: object, specs: Iterable[tuple[str, str, str, str, str]]) -> Iterator[Metric]:
    for attr, name, unit, help_text, kind in specs:
        value = _as_float(getattr(obj, attr, None))
        if value is not None:
            yield _single(name, unit, help_text, value, kind)


# --- the exporter ---------------------------------------------------------------------------


__all__ = ["Exporter", "FleetCollector", "Handler", "Request", "Response", "RouteServer"]


class Exporter:
    """Use as an Agent observer (``Agent(..., observers=[exporter])``) and serve ``/metrics``.

    Metrics live in the exporter's own CollectorRegistry, never the global one.
    Prometheus gets OpenMetrics (with UNIT lines) when it asks for it, the
    classic text format otherwise. More routes (the job-progress ingest) mount
    on the same server with :meth:`route`.
    """

    def __init__(self, stats: AgentStats, spool: SpoolingSink | None = None,
                 host: str = "127.0.0.1", port: int = 9464, *, stale_after_s: float = 300.0,
                 counter_idle_s: float = 3600.0, max_series: int = 200_000,
                 token: str | None = None, unix_socket: str | Path | None = None,
                 http_timeout_s: float = 30.0, unix_optional: bool = False) -> None:
        self.collector = FleetCollector(stats, spool, stale_after_s=stale_after_s,
                                        counter_idle_s=counter_idle_s, max_series=max_series)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.server = RouteServer(host, port, token=token, unix_socket=unix_socket,
                                  channel_timeout_s=http_timeout_s, unix_optional=unix_optional)
        self.server.route("GET", "/metrics", self._metrics)
        self.server.route("GET", "/", self._index)
        if not is_loopback(host):
            log.warning("exporter: serving /metrics on %s, reachable beyond this host", host)

    def __call__(self, points: Sequence[Point]) -> None:
        self.collector.observe(points)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Mount another endpoint on the agent's HTTP server (e.g. POST /v1/jobs/{id}/progress)."""
        self.server.route(method, pattern, handler)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an Accept header: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def _metrics(self, request: Request) -> Response:
        body, content_type = self.render(request.headers.get("accept", ""))
        headers: dict[str, str] = {}
        if "gzip" in request.headers.get("accept-encoding", "") and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return Response(200, body, content_type, headers)

    @staticmethod
    def _index(_request: Request) -> Response:
        return Response(200, b"wattlens agent\n/metrics  Prometheus metrics\n")

    @property
    def url(self) -> str:
        """Base URL of the server (``/metrics`` is under it); the real port once started."""
        return self.server.url

    def start(self) -> None:
        self.server.start()
        log.info("Prometheus metrics on %s/metrics", self.url)

    def stop(self) -> None:
        self.server.stop()
