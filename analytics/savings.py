"""What a set of recommendations saves together: each joule counted once, however many items touch it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analytics.recommend import Recommendation


@dataclass(frozen=True)
class Combined:
    """Savings per day if every recommendation were applied.

    Two items that touch the same job or the same GPU (fp8 and a clock lock on one job)
    both claim part of the same energy, and their savings do not add. Items are grouped
    by shared jobs and GPUs, and each group counts only its largest saving of each quantity
    (kWh, kg CO2, money): a lower bound that never counts a joule twice. ``overlaps`` lists the groups that were merged.
    """

    kwh_per_day: float
    kg_co2_per_day: float | None
    cost_per_day: float
    counted: tuple[str, ...]
    overlaps: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, object]:
        return {"kwh_per_day": self.kwh_per_day, "kg_co2_per_day": self.kg_co2_per_day,
                "cost_per_day": self.cost_per_day, "counted": list(self.counted),
                "overlaps": [list(g) for g in self.overlaps], "note": self.note}

    @property
    def note(self) -> str:
        if not self.overlaps:
            return "if all were applied"
        n = sum(len(g) - 1 for g in self.overlaps)
        return (f"if all were applied; {n} item{'s' if n != 1 else ''} touching the same jobs or "
                f"GPUs as a larger one not added again")


def _groups(items: Sequence[Recommendation]) -> list[list[Recommendation]]:
    """Connected groups of items that share a job or a GPU (items with neither stand alone)."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, r in enumerate(items):
        for key in (*(f"job:{j}" for j in r.jobs), *(f"gpu:{g}" for g in r.gpus)):
            if key in owner:
                parent[find(i)] = find(owner[key])
            else:
                owner[key] = i
    groups: dict[int, list[Recommendation]] = {}
    for i, r in enumerate(items):
        groups.setdefault(find(i), []).append(r)
    return list(groups.values())


def combined(items: Sequence[Recommendation]) -> Combined:
    """The savings of applying all ``items``, each joule once (see :class:`Combined`)."""
    kwh = cost = 0.0
    kg: float | None = None
    counted: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    for group in _groups(items):
        # Each quantity's largest claim in the group: moving a job to a low-carbon hour saves
        # CO2 but no kWh, so the kWh and the CO2 of one group may come from different items.
        top = max(group, key=lambda r: (r.savings_kwh_per_day, r.savings_cost_per_day, r.id))
        kwh += top.savings_kwh_per_day
        cost += max(r.savings_cost_per_day for r in group)
        grams = [r.savings_kg_co2_per_day for r in group if r.savings_kg_co2_per_day is not None]
        if grams:
            kg = (kg or 0.0) + max(grams)
        counted.append(top.id)
        if len(group) > 1:
            overlaps.append(tuple(r.id for r in group))
    return Combined(kwh, kg, cost, tuple(counted), tuple(overlaps))
