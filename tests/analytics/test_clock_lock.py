"""Clock-lock savings: measured where the fleet already runs some of a class at locked SM clocks
(the clock-lock scenario plants such a twin), the published estimate otherwise."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from analytics.clock_lock import DVFS_SAVINGS, LOCKED_BELOW, measure_lock
from analytics.queries import JobBucket
from analytics.recommend import Recommendation, recommendations
from analytics.timeutil import Window
from collector.schema import point
from collector.sim.fleet import build_fleet
from collector.sim.score import score
from collector.sim.truth import truth
from collector.sources.simulated import SimulatedFleet
from collector.store import open_store
from collector.store.base import AggregateQuery
from collector.store.sqlite import SQLiteStore
from tests.analytics.simstore import END_NS, NS, SimStore, sim_store

SCENARIO = "clock-lock"


@pytest.fixture(scope="module")
def locked_day(tmp_path_factory: pytest.TempPathFactory) -> SimStore:
    return sim_store(tmp_path_factory, 24, scenario=SCENARIO)


@pytest.fixture(scope="module")
def locks(locked_day: SimStore) -> dict[str, Recommendation]:
    recs = recommendations(open_store(locked_day.url), locked_day.window, lam=0.5)
    return {r.target: r for r in recs if r.kind == "clock_lock"}


def _independent(store_url: str, window: Window, workload: str) -> dict[str, Any]:
    """The saving from the stored job points, per job (not per bucket): jobs whose mean SM clock is
    below LOCKED_BELOW of the highest are locked; tokens per joule of each side."""
    rows = open_store(store_url).query(AggregateQuery(
        "job", (("sum", "energy_j"), ("sum", "tokens"), ("mean", "sm_clock_mhz")), window.start_ns,
        window.end_ns, group_by=("job", "host", "workload")))
    mine = [r for r in rows if r.tags["workload"] == workload]
    top = max(r.values["mean_sm_clock_mhz"] for r in mine)
    side: dict[bool, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in mine:
        locked = r.values["mean_sm_clock_mhz"] < LOCKED_BELOW * top
        side[locked][0] += r.values["sum_energy_j"]
        side[locked][1] += r.values["sum_tokens"]
    frac = 1 - (side[True][0] / side[True][1]) / (side[False][0] / side[False][1])
    return {"frac": frac, "kwh_per_day": frac * side[False][0] / 3.6e6 * 86400 / window.seconds,
            "locked_mhz": min(r.values["mean_sm_clock_mhz"] for r in mine)}


@pytest.mark.parametrize("workload", ["bert-large", "chat-7b"])
def test_a_measured_lock_gives_the_saving_the_stored_points_give(
        locked_day: SimStore, locks: dict[str, Recommendation], workload: str) -> None:
    rec = next(r for t, r in locks.items() if t.startswith(workload))
    want = _independent(locked_day.url, locked_day.window, workload)
    assert rec.measured and rec.estimate_method.startswith("measured in this fleet over ")
    assert "GPU-hours" in rec.estimate_method and "Tang" not in rec.estimate_method
    assert rec.evidence["saving_fraction"] == pytest.approx(want["frac"], rel=0.02)
    assert rec.savings_kwh_per_day == pytest.approx(want["kwh_per_day"], rel=0.02)
    assert rec.action is not None and rec.action["sm_clock_mhz"] == pytest.approx(want["locked_mhz"], abs=2)


def test_only_the_full_clock_gpus_are_named_never_the_locked_twins(locks: dict[str, Recommendation]) -> None:
    fleet = build_fleet(4, 8, SCENARIO)
    for workload in ("bert-large", "chat-7b"):
        rec = next(r for t, r in locks.items() if t.startswith(workload))
        groups = [g for g in fleet.groups if g.runs[0].job.workload == workload]
        assert set(rec.gpus) == {x for g in groups if g.clock_lock is None for x in g.gpus}
        locked = {x for g in groups if g.clock_lock is not None for x in g.gpus}
        assert locked and not set(rec.gpus) & locked
        assert all(j.endswith("-a") or "-a-" in j for j in rec.jobs)


@pytest.mark.parametrize("lam", [0.3, 0.8])
def test_measured_locks_within_15_pct_of_the_truth_and_nothing_on_the_locked_twins(
        locked_day: SimStore, lam: float) -> None:
    recs = [r.to_dict() for r in recommendations(open_store(locked_day.url), locked_day.window, lam=lam)]
    result = score(truth(SimulatedFleet(scenario=SCENARIO), END_NS - 24 * 3600 * NS, END_NS), recs, lam)
    assert result["planted"] == 2 and result["recall"] == 1.0, result["missed"]
    assert result["false_positives"] == 0, result["false_positive_ids"]
    assert len(result["savings_errors_pct"]) == 2 and result["estimate_errors_pct"] == {}
    assert abs(result["max_savings_error_pct"]) <= 15, result["savings_errors_pct"]


def test_without_clocks_on_the_job_points_the_saving_is_the_labelled_published_estimate(
        tmp_path: Any) -> None:
    """A reporter that cannot read the SM clock: no measured basis, the published range instead."""
    store = SQLiteStore(tmp_path / "noclock.db")
    fleet = SimulatedFleet(scenario=SCENARIO)
    start = END_NS - 6 * 3600 * NS
    for t in range(start, END_NS, 60 * NS):
        store.write([point("job", dict(p.tags), {k: v for k, v in p.fields if k != "sm_clock_mhz"},
                           p.time_ns) if p.measurement == "job" else p
                     for p in fleet.points_between(t, t + 60 * NS)])
    recs = recommendations(store, Window(start + 1, END_NS + 1), lam=0.5)
    locks = [r for r in recs if r.kind == "clock_lock"]
    assert {r.target.split(" ")[0] for r in locks} == {"bert-large", "chat-7b"}
    for r in locks:
        pub = DVFS_SAVINGS["training" if "(train," in r.target else "inference"]
        assert not r.measured and r.estimate_method.startswith("estimate, not measured in this fleet")
        assert r.evidence["saving_fraction"] == pytest.approx(pub.mid) and "Tang et al." in r.estimate_method
        assert r.action is not None and r.action["sm_clock_fraction"] == 0.8
        # the locked twins cannot be told apart without clocks: the whole class is named
        assert len(r.gpus) == 16


def _jb(job: str, t: int, energy: float, tokens: float, clock: float | None, util: float = 90.0,
        host: str = "h") -> JobBucket:
    return JobBucket(job, host, "infer", "fp8", "NVIDIA L4", t, energy,
                     {"samples": 0.0, "tokens": tokens, "flops": 0.0, "steps": 0.0}, 3600.0, 2,
                     None, 72.0, util, util, False, None, "chat", sm_clock_mhz=clock)


def test_measure_lock_by_hand() -> None:
    """Two hours: a full-clock and a locked run in each, plus an hour only the full-clock run has
    (left out of the comparison, so a diurnal load weighs both alike)."""
    h = 3600 * NS
    buckets = [_jb("full", 0, 400_000.0, 8e6, 2040.0), _jb("full", h, 300_000.0, 6e6, 2040.0),
               _jb("full", 2 * h, 100_000.0, 1e6, 2040.0),
               _jb("lock", 0, 300_000.0, 7e6, 1632.0, host="g"),
               _jb("lock", h, 250_000.0, 5e6, 1632.0, host="g")]
    m = measure_lock(buckets, "tokens")
    assert m is not None
    assert m.j_per_unit_full == pytest.approx(700_000.0 / 14e6)
    assert m.j_per_unit_locked == pytest.approx(550_000.0 / 12e6)
    assert m.saving_frac == pytest.approx(1 - (550_000.0 / 12e6) / (700_000.0 / 14e6))
    assert m.clock_share == pytest.approx(0.8) and m.locked_jobs == ("lock",)
    assert m.slowdown == pytest.approx(14e6 / 12e6 - 1)


@pytest.mark.parametrize("case", ["no clocks", "one clock", "no common hour", "lighter load"])
def test_no_measured_lock_without_a_like_for_like_pair(case: str) -> None:
    h = 3600 * NS
    clock, t, util = {"no clocks": (None, 0, 90.0), "one clock": (2040.0, 0, 90.0),
                      "no common hour": (1632.0, h, 90.0), "lighter load": (1632.0, 0, 40.0)}[case]
    buckets = [_jb("full", 0, 400_000.0, 8e6, None if clock is None else 2040.0),
               _jb("lock", t, 300_000.0, 7e6, clock, util=util, host="g")]
    assert measure_lock(buckets, "tokens") is None
