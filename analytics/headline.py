"""The fleet's headline figures over a window, one definition each: the report, the dashboard
cards and the CLI all show these (IT and facility energy, PUE, carbon, cost, fleet PER)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics import carbon
from analytics.cost import Tariff, energy_cost
from analytics.levels import FacilityEnergy, facility_energy
from analytics.per import PER_UNITS, per_by_unit, primary_unit
from analytics.queries import FacilityBucket
from analytics.timeutil import NS, Window

HOUR_NS = 3600 * NS
MIN_COVERAGE = 0.9  # a change against a prior window needs that window this well covered
NOT_ENOUGH_HISTORY = "n/a (not enough history)"
PER_ENERGY = "GPU + CPU energy"  # what fleet PER divides by; GPU-only PER is the labelled second


def hour_of(t_ns: int) -> int:
    return t_ns // HOUR_NS * HOUR_NS


@dataclass(frozen=True)
class Grid:
    """The energy the grid supplied per hour, which carbon and cost use, and the rule that made it."""

    by_hour: dict[int, float]
    basis: str
    pue_by_hour: dict[int, float]


def grid_energy(it_by_hour: Mapping[int, float], fac_rows: Sequence[FacilityBucket],
                fac: FacilityEnergy) -> Grid:
    """The facility meter's energy where it has energy; else GPU + CPU energy × each hour's PUE
    (facility power ÷ IT power); else GPU + CPU energy alone, and the basis says so."""
    fac_it: dict[int, float] = defaultdict(float)
    fac_total: dict[int, float] = defaultdict(float)
    for b in fac_rows:
        if b.it_energy_j and b.facility_energy_j:
            fac_it[hour_of(b.time_ns)] += b.it_energy_j
            fac_total[hour_of(b.time_ns)] += b.facility_energy_j
        elif b.it_power_w and b.facility_power_w:
            fac_it[hour_of(b.time_ns)] += b.it_power_w
            fac_total[hour_of(b.time_ns)] += b.facility_power_w
    pue_by_hour = {h: fac_total[h] / fac_it[h] for h in fac_it if fac_it[h] > 0}
    if any(b.facility_energy_j for b in fac_rows):
        grid: dict[int, float] = defaultdict(float)
        for b in fac_rows:
            grid[hour_of(b.time_ns)] += b.facility_energy_j or 0.0
        return Grid(dict(grid), "facility energy (facility meter)", pue_by_hour)
    if fac.pue is not None:
        return Grid({h: e * pue_by_hour.get(h, fac.pue) for h, e in it_by_hour.items()},
                    "facility energy (GPU + CPU energy × PUE from facility power)", pue_by_hour)
    return Grid(dict(it_by_hour), "IT energy (GPU + CPU; no facility data: cooling and power "
                                  "losses not counted)", pue_by_hour)


@dataclass(frozen=True)
class Headline:
    """The headline figures of one window. Carbon and cost are of ``grid_energy_j`` (facility
    energy when there is facility data, else IT energy); PUE = facility ÷ IT energy; fleet PER
    is work ÷ (GPU + CPU energy), GPU-only PER is work ÷ GPU energy."""

    window: Window
    span_s: float
    gpu_energy_j: float
    cpu_energy_j: float
    estimated_energy_j: float
    it_energy_j: float
    it_basis: str
    facility_energy_j: float | None
    pue: float | None
    pue_source: str
    grid_energy_j: float
    grid_basis: str
    emissions: carbon.Emissions
    cost: float
    tariff: Tariff
    work: dict[str, float]
    grid_by_hour: dict[int, float] = field(default_factory=dict, repr=False)

    @property
    def coverage(self) -> float:
        """Share of the window the data covers (0..1)."""
        return min(1.0, self.span_s / self.window.seconds) if self.window.seconds > 0 else 0.0

    @property
    def enough_history(self) -> bool:
        """Whether this window is covered well enough to be compared against (MIN_COVERAGE)."""
        return self.coverage >= MIN_COVERAGE

    @property
    def unit(self) -> str | None:
        return primary_unit(self.work)

    @property
    def per(self) -> dict[str, float]:
        """Fleet PER by unit: work ÷ (GPU + CPU energy)."""
        return per_by_unit(self.work, self.gpu_energy_j + self.cpu_energy_j)

    @property
    def per_gpu_only(self) -> dict[str, float]:
        """GPU-only PER by unit: work ÷ GPU energy (a labelled second figure)."""
        return per_by_unit(self.work, self.gpu_energy_j)

    def to_dict(self) -> dict[str, Any]:
        em = self.emissions
        return {
            "gpu_energy_j": self.gpu_energy_j, "cpu_energy_j": self.cpu_energy_j,
            "estimated_energy_j": self.estimated_energy_j,
            "it_energy_j": self.it_energy_j, "it_energy_basis": self.it_basis,
            "facility_energy_j": self.facility_energy_j, "pue": self.pue,
            "pue_source": self.pue_source, "grid_energy_j": self.grid_energy_j,
            "grid_energy_basis": self.grid_basis, "emissions": em.to_dict(), "kg_co2": em.kg_co2,
            "cost": self.cost, "currency": self.tariff.currency, "tariff": self.tariff.to_dict(),
            "tariff_text": self.tariff.describe(), "work": dict(self.work),
            "fleet_per": {"unit": self.unit, "energy": PER_ENERGY, "per": self.per,
                          "per_units": {u: PER_UNITS[u] for u in self.per},
                          "gpu_only_per": self.per_gpu_only},
            "span_s": self.span_s, "coverage": self.coverage,
        }


def headline(window: Window, span_s: float, gpu_by_hour: Mapping[int, float],
             cpu_by_hour: Mapping[int, float], estimated_j: float,
             fac_rows: Sequence[FacilityBucket], work: Mapping[str, float],
             series: carbon.IntensitySeries | None, carbon_message: str | None,
             tariff: Tariff) -> Headline:
    """The headline figures from per-hour GPU and CPU energy (J, keyed by any time in the hour),
    the facility rows, the work done and the carbon series (pure)."""
    gpu_j = float(sum(gpu_by_hour.values()))
    cpu_j = float(sum(cpu_by_hour.values()))
    it_by_hour: dict[int, float] = defaultdict(float)
    for src in (gpu_by_hour, cpu_by_hour):
        for t, e in src.items():
            it_by_hour[hour_of(t)] += e
    fac = facility_energy(fac_rows, gpu_j + cpu_j)
    grid = grid_energy(it_by_hour, fac_rows, fac)
    grid_j = float(sum(grid.by_hour.values()))
    it_j, it_basis = gpu_j + cpu_j, "GPU + CPU, measured"
    facility_j, pue = fac.facility_energy_j, fac.pue
    if fac.it_energy_j is not None and not fac.scales_measured_it:
        it_j, it_basis = fac.it_energy_j, "facility meter"
    elif fac.scales_measured_it:
        facility_j = grid_j  # each hour's PUE applied: the energy carbon and cost use
        pue = grid_j / it_j if it_j > 0 else fac.pue
    em = carbon.emissions(grid.by_hour, series)
    if em.g_co2 is None and carbon_message and not em.message:
        em = carbon.Emissions(None, em.energy_j, 0.0, em.energy_j, None, None, None, carbon_message)
    clean = {u: w for u, w in work.items() if w > 0}
    return Headline(window, span_s, gpu_j, cpu_j, estimated_j, it_j, it_basis, facility_j, pue,
                    fac.source, grid_j, grid.basis, em, energy_cost(grid.by_hour, tariff), tariff,
                    clean, grid.by_hour)
