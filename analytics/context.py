"""Settings for the report and recommendations, and the one read of the store (through analytics.queries) they share."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analytics import carbon, queries
from analytics.cost import Tariff
from analytics.headline import Headline, grid_energy, headline, hour_of
from analytics.levels import FacilityEnergy, JobAggregate, aggregate_jobs, facility_energy
from analytics.timeutil import Window
from collector.errors import ConfigError
from collector.store.base import Store

NS = 1_000_000_000
HOUR_NS = 3600 * NS
CARBON_LOOKBACK_S = 7 * 86400  # history used for the persistence forecast
CARBON_LOOKAHEAD_S = 2 * 86400  # forecast points already in the store


@dataclass(frozen=True)
class Settings:
    """What an operator can tune; every threshold keeps a margin from the healthy case so that
    recommendations do not flap between refreshes."""

    tariff: Tariff = field(default_factory=lambda: Tariff(0.15))
    carbon_csv: str | None = None
    country: str | None = None  # bundled annual average: fallback for hours with no hourly data
    region: str | None = None  # which carbon region of the store or CSV, or any bundled code
    carbon_live: str | None = None  # PROVIDER:ZONE whose forecast fills future hours (analytics.carbon_live)
    embodied: str | None = None  # MODEL=KG:YEARS overrides of the embodied table (analytics.embodied)
    sci_unit: str | None = None  # R for SCI: tokens, samples or steps (default: the first a job reports)
    busy_util_pct: float = 5.0
    idle_util_pct: float = 5.0
    idle_min_s: float = 900.0
    low_util_pct: float = 25.0  # consolidate: mean utilisation below this
    low_util_peak_pct: float = 50.0  # ... and peak below this
    consolidate_target_util_pct: float = 70.0
    min_evidence_s: float = 3600.0  # a job must have run this long to be judged
    cap_min_gain_pct: float = 2.0  # cost(λ) must improve this much to recommend a cap
    cap_free_frac: float = 0.85  # peak power below this share of the cap: the cap never binds
    clock_lock_min_util_pct: float = 20.0
    # share of the energy above idle an SM clock lock saves; None: the published DVFS figure for the
    # job's kind (analytics.clock_lock), else the operator's own measured figure
    clock_lock_saving_frac: float | None = None
    mixed_precision_assumed_gain: float = 2.0  # PER gain assumed when the fleet has no bf16 twin
    low_precision_assumed_gain: float = 1.3  # PER gain assumed for fp8/int8 inference
    carbon_min_gain_pct: float = 5.0
    pue_threshold: float = 1.5
    pue_target: float = 1.2
    min_kwh_per_day: float = 0.05  # smaller savings are not worth a recommendation
    min_kg_co2_per_day: float = 0.05
    per_references: Mapping[str, float] = field(default_factory=dict)
    bucket_s: int | None = None

    def __post_init__(self) -> None:
        for name in ("idle_util_pct", "idle_min_s", "low_util_pct", "low_util_peak_pct",
                     "consolidate_target_util_pct", "cap_min_gain_pct",
                     "carbon_min_gain_pct", "min_kwh_per_day", "min_kg_co2_per_day"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or value < 0:
                raise ConfigError(f"{name}: must be a non-negative number, got {value!r}")
        frac = self.clock_lock_saving_frac
        if frac is not None and (not isinstance(frac, (int, float)) or not 0 <= frac < 1):
            raise ConfigError(f"clock_lock_saving_frac: must be a share in [0, 1), got {frac!r}")
        if not 0 < self.cap_free_frac <= 1:
            raise ConfigError(f"cap_free_frac: must be in (0, 1], got {self.cap_free_frac!r}")
        if self.pue_threshold < 1 or self.pue_target < 1:
            raise ConfigError(f"pue_threshold, pue_target: must be >= 1, got "
                              f"{self.pue_threshold!r}, {self.pue_target!r}")
        for name in ("mixed_precision_assumed_gain", "low_precision_assumed_gain"):
            if getattr(self, name) <= 1:
                raise ConfigError(f"{name}: must be > 1, got {getattr(self, name)!r}")
        if self.sci_unit is not None and self.sci_unit not in ("tokens", "samples", "steps"):
            raise ConfigError(f"--sci-unit: expected tokens, samples or steps, got {self.sci_unit!r}")
        if self.bucket_s is not None and (self.bucket_s <= 0 or 3600 % self.bucket_s):
            raise ConfigError(f"bucket_s: must divide an hour (60, 300, 900, ...), got {self.bucket_s!r}")


DAY_S = 86400


def bucket_for_window(window: Window) -> int:
    """The per-GPU and per-job bucket of the report, the CLI and every dashboard page that reads a
    Context: 5 min for windows under a day, hourly from a day on.

    One definition, so the figures reconcile everywhere. Hourly buckets read the store's hourly
    tier (a day of 1,000 GPUs is 24 k rows, not 288 k), and still divide an hour, so hourly carbon
    and tariff lookups stay exact. The price: over a day or more, idle and low-utilisation
    stretches are seen at hourly resolution (an idle stretch must fill a whole clock hour to
    count); ``Settings.bucket_s`` asks for other buckets (docs/decisions.md).
    """
    return 300 if window.seconds < DAY_S else 3600


@dataclass
class Context:
    """Everything the report and the recommendations read, in one pass over the store."""

    window: Window
    bucket_s: int
    gpus: list[queries.GpuBucket]
    jobs: list[queries.JobBucket]
    cpu: list[tuple[tuple[str, ...], int, float]]
    facility: list[queries.FacilityBucket]
    carbon: carbon.IntensitySeries | None
    carbon_message: str | None
    settings: Settings
    job_aggs: dict[str, JobAggregate] = field(default_factory=dict)
    fac: FacilityEnergy = field(default_factory=lambda: FacilityEnergy(None, None, None, ""))
    pue_by_hour: dict[int, float] = field(default_factory=dict)
    it_by_hour: dict[int, float] = field(default_factory=dict)
    grid_by_hour: dict[int, float] = field(default_factory=dict)
    grid_basis: str = ""
    # (job, host) -> team, and idle policy -> (energy J, idle J) of the job points (analytics.teams)
    job_teams: dict[tuple[str, str], str] = field(default_factory=dict)
    job_namespaces: dict[tuple[str, str], str] = field(default_factory=dict)  # Kubernetes
    job_idle: dict[tuple[str, str], float] = field(default_factory=dict)  # (job, host) -> idle J
    idle_policies: dict[str, tuple[float, float]] = field(default_factory=dict)
    _span_s: float | None = None
    _jobs_by_name: dict[str, list[queries.JobBucket]] | None = None
    _gpu_info: dict[tuple[str, str], tuple[str, float | None]] | None = None

    def job_buckets_of(self, job: str) -> list[queries.JobBucket]:
        """One job's buckets (all hosts), from an index built on first use."""
        if self._jobs_by_name is None:
            index: dict[str, list[queries.JobBucket]] = defaultdict(list)
            for b in self.jobs:
                index[b.job].append(b)
            self._jobs_by_name = dict(index)
        return self._jobs_by_name.get(job, [])

    def gpu_info(self) -> dict[tuple[str, str], tuple[str, float | None]]:
        """(host, gpu) -> (model, mean power limit W over the window), built on first use."""
        if self._gpu_info is None:
            models: dict[tuple[str, str], str] = {}
            limits: dict[tuple[str, str], list[float]] = defaultdict(list)
            for g in self.gpus:
                models[(g.host, g.gpu)] = g.model
                if g.power_limit_w is not None:
                    limits[(g.host, g.gpu)].append(g.power_limit_w)
            self._gpu_info = {k: (m, sum(limits[k]) / len(limits[k]) if limits.get(k) else None)
                              for k, m in models.items()}
        return self._gpu_info

    @property
    def now_ns(self) -> int:
        """The newest data time in the window (the report's "now")."""
        times = [g.time_ns for g in self.gpus] + [j.time_ns for j in self.jobs]
        return (max(times) + self.bucket_s * NS) if times else self.window.end_ns

    @property
    def span_s(self) -> float:
        """Seconds of the window the data covers; per-day figures scale by 86400 / this.

        Per GPU, each bucket's points × their sampling interval (ΣE / ΣP, see
        ``queries.Coverage``), summed; the longest-covered GPU counts, capped at the
        window. A bucket without power readings counts as fully covered.
        """
        if self._span_s is None:
            per_series: dict[tuple[str, str], float] = defaultdict(float)
            for g in self.gpus:
                if g.count > 0:
                    covered = g.covered_s
                    per_series[(g.host, g.gpu)] += covered if covered is not None else self.bucket_s
            best = max(per_series.values(), default=0.0)
            self._span_s = min(self.window.seconds, best) if best > 0 else self.window.seconds
        return max(1.0, self._span_s)

    def headline(self) -> Headline:
        """The window's headline figures (analytics.headline), from the buckets already read."""
        gpu: dict[int, float] = defaultdict(float)
        cpu: dict[int, float] = defaultdict(float)
        estimated = 0.0
        for g in self.gpus:
            gpu[hour_of(g.time_ns)] += g.energy_j
            estimated += g.energy_j if g.method == "estimated" else 0.0
        for (_host, method), t, e in self.cpu:
            cpu[hour_of(t)] += e
            estimated += e if method == "estimated" else 0.0
        work: dict[str, float] = defaultdict(float)
        for j in self.jobs:
            for unit, w in j.work.items():
                work[unit] += w
        return headline(self.window, self.span_s, gpu, cpu, estimated, self.facility, work,
                        self.carbon, self.carbon_message, self.settings.tariff)

    def pue_at(self, t_ns: int) -> float | None:
        hour = t_ns // HOUR_NS * HOUR_NS
        return self.pue_by_hour.get(hour, self.fac.pue)


Progress = Callable[[str], None]


def load_carbon(store: Store, window: Window, settings: Settings) -> tuple[carbon.IntensitySeries | None, str | None]:
    """The intensity series: --carbon-csv, else the store's `carbon` measurement, else --country;
    an hourly series falls back to the country's annual average for hours it lacks."""
    series: carbon.IntensitySeries | None = None
    if settings.carbon_csv:
        regions = carbon.load_intensity_csv(settings.carbon_csv)
        region = settings.region
        if region is None:
            if len(regions) > 1:
                raise ConfigError(f"--region: {settings.carbon_csv} holds several regions "
                                  f"({', '.join(sorted(regions))}); choose one")
            region = next(iter(regions))
        if region not in regions:
            raise ConfigError(f"--region: {region!r} is not in {settings.carbon_csv}; it has "
                              f"{', '.join(sorted(regions))}")
        series = regions[region]
    else:
        wide = Window(window.start_ns - CARBON_LOOKBACK_S * NS, window.end_ns + CARBON_LOOKAHEAD_S * NS)
        rows = queries.carbon_hourly(store, wide)
        if settings.region is not None and settings.region not in rows:
            if carbon.is_listed(settings.region) or not rows:
                # Not in the store: a listed code (`wattlens carbon list`) uses the bundled figure.
                series = carbon.annual_series(settings.region, "--region")
            else:
                raise ConfigError(f"--region: the store has no carbon data for {settings.region!r}; "
                                  f"it has {', '.join(sorted(rows))}; or use a code from "
                                  f"`wattlens carbon list`")
        else:
            series = carbon.from_store_rows(rows, settings.region)
    if settings.country:
        annual = carbon.annual_series(settings.country)
        if series is None:
            series = annual
        else:
            series.annual = annual.annual
            series.fallback_source = annual.source  # the emissions' source line says which hours
        series.fallback = f"--country {annual.region}"
    note = None
    if settings.carbon_live:
        from analytics.carbon_live import load_forecast

        series, note = load_forecast(settings.carbon_live, series)
    if series is None:
        return None, f"no carbon intensity data for this window; {carbon.NO_CARBON_HINT}"
    return series, note


def load_context(store: Store, window: Window, settings: Settings | None = None,
                 progress: Progress | None = None) -> Context:
    """Read the window once: GPU, job, CPU and facility buckets and the carbon series."""
    settings = settings or Settings()
    step = progress or (lambda _name: None)
    bucket = settings.bucket_s or bucket_for_window(window)
    got: dict[str, Any] = queries.gather(store, {
        "gpu": lambda: queries.gpu_buckets(store, window, bucket),
        "job": lambda: queries.job_buckets(store, window, bucket),
        "cpu": lambda: queries.energy_buckets(store, window, "cpu", bucket, ("host", "method")),
        "facility": lambda: queries.facility_buckets(store, window, 3600),
        "carbon": lambda: load_carbon(store, window, settings),
        "job owners": lambda: queries.job_energy_by_tags(store, window,
                                                     (*OWNER_TAGS, "idle_policy")),
    }, step)
    series, message = got["carbon"]
    ctx = Context(window, bucket, got["gpu"], got["job"], got["cpu"], got["facility"], series,
                  message, settings)
    owners, ctx.job_idle, ctx.idle_policies = job_owners(got["job owners"])
    ctx.job_teams, ctx.job_namespaces = owners["team"], owners["namespace"]
    derive(ctx)
    return ctx


OWNER_TAGS = ("team", "namespace")  # who a job's energy is shown back to (analytics.teams)


def job_owners(rows: Mapping[tuple[str, ...], tuple[float, float]]) -> tuple[
        dict[str, dict[tuple[str, str], str]], dict[tuple[str, str], float],
        dict[str, tuple[float, float]]]:
    """From (job, host, team, namespace, idle_policy) energies: each job's team and namespace on
    each host (the one with the most energy, should it have changed), its idle energy, and the
    energy and idle energy under each idle policy."""
    best: dict[str, dict[tuple[str, str], tuple[float, str]]] = {t: {} for t in OWNER_TAGS}
    idle: dict[tuple[str, str], float] = defaultdict(float)
    policies: dict[str, tuple[float, float]] = {}
    for (job, host, *owners, policy), (energy_j, idle_j) in rows.items():
        idle[(job, host)] += idle_j
        for tag, value in zip(OWNER_TAGS, owners, strict=True):
            if value and energy_j >= best[tag].get((job, host), (-1.0, ""))[0]:
                best[tag][(job, host)] = (energy_j, value)
        if policy:
            e, i = policies.get(policy, (0.0, 0.0))
            policies[policy] = (e + energy_j, i + idle_j)
    owners_out = {t: {k: v for k, (_e, v) in best[t].items()} for t in OWNER_TAGS}
    return owners_out, dict(idle), policies


def derive(ctx: Context) -> None:
    """Fill the Context's derived fields from its buckets (also after analytics.filters narrows them)."""
    ctx.job_aggs = aggregate_jobs(ctx.jobs)
    it_j = sum(g.energy_j for g in ctx.gpus) + sum(e for _k, _t, e in ctx.cpu)
    ctx.fac = facility_energy(ctx.facility, it_j)
    it_by_hour: dict[int, float] = defaultdict(float)
    for g in ctx.gpus:
        it_by_hour[hour_of(g.time_ns)] += g.energy_j
    for _k, t, e in ctx.cpu:
        it_by_hour[hour_of(t)] += e
    ctx.it_by_hour = dict(it_by_hour)
    grid = grid_energy(ctx.it_by_hour, ctx.facility, ctx.fac)
    ctx.pue_by_hour, ctx.grid_by_hour, ctx.grid_basis = grid.pue_by_hour, grid.by_hour, grid.basis


def load_headline(store: Store, window: Window, settings: Settings | None = None) -> Headline:
    """The headline figures of a window from hourly aggregates alone (the dashboard's cards):
    the same definition as ``Context.headline()``, at a fraction of the read."""
    settings = settings or Settings()
    got: dict[str, Any] = queries.gather(store, {
        "gpu": lambda: queries.energy_buckets(store, window, "gpu", 3600, ("method",)),
        "cpu": lambda: queries.energy_buckets(store, window, "cpu", 3600, ("method",)),
        "work": lambda: queries.work_buckets(store, window, 3600),
        "facility": lambda: queries.facility_buckets(store, window, 3600),
        "carbon": lambda: load_carbon(store, window, settings),
        "covered": lambda: queries.covered_s(store, window),
    })
    gpu: dict[int, float] = defaultdict(float)
    cpu: dict[int, float] = defaultdict(float)
    estimated = 0.0
    for measurement, acc in (("gpu", gpu), ("cpu", cpu)):
        for (method,), t, e in got[measurement]:
            acc[hour_of(t)] += e
            estimated += e if method == "estimated" else 0.0
    work: dict[str, float] = defaultdict(float)
    for _t, w in got["work"]:
        for unit, v in w.items():
            work[unit] += v
    series, message = got["carbon"]
    return headline(window, got["covered"], gpu, cpu, estimated, got["facility"], work,
                    series, message, settings.tariff)
