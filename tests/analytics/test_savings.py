"""The all-applied total counts each joule once: overlapping recommendations do not add."""

from __future__ import annotations

from analytics.recommend import Recommendation
from analytics.savings import combined


def rec(rid: str, kwh: float, kg: float | None, cost: float, jobs: tuple[str, ...] = (),
        gpus: tuple[str, ...] = ()) -> Recommendation:
    return Recommendation(id=rid, kind="x", target="t", title=rid, detail="", evidence={},
                          savings_kwh_per_day=kwh, savings_kg_co2_per_day=kg,
                          savings_cost_per_day=cost, estimate_method="", gpus=gpus, jobs=jobs)


def test_items_on_the_same_job_or_gpu_count_once_and_independent_ones_add() -> None:
    items = [
        rec("fp8", 8.0, 3.0, 1.2, jobs=("infer-a",)),
        rec("clock", 3.0, 1.0, 0.5, jobs=("infer-a",), gpus=("n0/1",)),  # same job as fp8
        rec("idle", 2.0, 0.8, 0.3, gpus=("n0/1",)),  # same GPU as the clock lock: one group of three
        rec("shift", 0.0, 4.0, 0.0, jobs=("eval",)),
        rec("cap", 5.0, None, 0.9, jobs=("train",)),
        rec("pue", 1.0, 0.5, 0.2),  # touches no job or GPU: stands alone
    ]
    c = combined(items)
    assert c.kwh_per_day == 8.0 + 0.0 + 5.0 + 1.0
    assert c.kg_co2_per_day == 3.0 + 4.0 + 0.5
    assert c.cost_per_day == 1.2 + 0.0 + 0.9 + 0.2
    assert set(c.counted) == {"fp8", "shift", "cap", "pue"}
    assert c.overlaps == (("fp8", "clock", "idle"),)
    assert "2 items" in c.note and c.kwh_per_day < sum(r.savings_kwh_per_day for r in items)


def test_without_overlaps_the_total_is_the_plain_sum() -> None:
    items = [rec("a", 1.5, 0.5, 0.2, jobs=("a",)), rec("b", 2.5, None, 0.4, gpus=("n/0",))]
    c = combined(items)
    assert (c.kwh_per_day, c.kg_co2_per_day, c.cost_per_day) == (4.0, 0.5, 0.2 + 0.4)
    assert c.overlaps == () and c.note == "if all were applied"
    assert combined([]).kg_co2_per_day is None
