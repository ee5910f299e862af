"""The engine over a real SQLite store: every rule kind, state across restarts, dedup, repeats, resolves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from analytics.alerts.engine import FIRING, PENDING, RESOLVED, Engine, EvalResult
from analytics.alerts.hooks import Dispatcher
from analytics.alerts.rules import RuleSet, parse_rules
from collector.store.base import AggregateQuery
from collector.store.sqlite import SQLiteStore
from tests.analytics.alerts.helpers import (
    IDLE_GPUS,
    MIN,
    NS,
    STEP_NS,
    carbon_points,
    gpu_points,
    job_points,
    write_fleet,
)
from tests.analytics.alerts.receivers import Receiver, SilentReceiver

SECRET = "engine-test-secret"
# 08:05 UTC: node-00's first four GPUs sat idle 07:50-08:00 between two llm-pretrain runs.
T = int(datetime(2026, 11, 28, 8, 5, tzinfo=UTC).timestamp()) * NS


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "wattlens.db")
    yield s
    s.close()


def fired(results: list[EvalResult]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for res in results:
        for t in res.transitions:
            out.setdefault(t.to, set()).add(f"{t.rule}:{t.target}")
    return out


def webhook_rules(url: str, body: str, repeat: str = "4h") -> RuleSet:
    return parse_rules(f'''
[defaults]
repeat_interval = "{repeat}"

[[hook]]
name = "ops"
type = "webhook"
url = "{url}"
secret_env = "TEST_SECRET"
backoff_s = 0.01
backoff_max_s = 0.05
{body}''')


def test_idle_waste_fires_for_the_simulated_fleets_idle_gpus_only(store: SQLiteStore) -> None:
    write_fleet(store, T - 40 * MIN, T)
    rs = parse_rules('[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\nfor = "15m"\n')
    engine = Engine(store, rs)
    results = [engine.evaluate(T - k * MIN) for k in range(20, -1, -1)]
    seen = fired(results)
    assert seen[FIRING] == {f"idle:{g}" for g in IDLE_GPUS}
    # GPUs idle for a 10-minute gap between runs became pending, then went back to work
    assert "idle:node-00/gpu0" in seen[PENDING]
    assert "idle:node-00/gpu0" in seen["inactive"]
    assert {s.target for s in engine.firing()} == IDLE_GPUS
    for s in engine.firing():
        assert s.labels["host"] == "node-01" and s.labels["model"] == "NVIDIA A100-SXM4-80GB"
        assert 50 < s.value < 60  # the A100's idle draw, W
        assert s.fired_ns is not None and s.fired_ns - s.active_since_ns >= 15 * MIN


def test_state_survives_restarts_without_duplicates_then_repeats_and_resolves(
        store: SQLiteStore, tmp_path: Path) -> None:
    write_fleet(store, T - 30 * MIN, T + 12 * MIN)
    receiver = Receiver(secret=SECRET.encode())
    rs = webhook_rules(receiver.url, '[[rule]]\nname = "idle"\nkind = "idle_waste"\n'
                                     'above_w = 40\nfor = "15m"\nseverity = "critical"\n',
                       repeat="5m")
    env = {"TEST_SECRET": SECRET}
    state = tmp_path / "state" / "alerts.json"

    def round_at(now_ns: int) -> EvalResult:
        """One evaluation by a freshly started process: new engine, new delivery threads."""
        dispatcher = Dispatcher.from_ruleset(rs, tmp_path, env=env)
        try:
            res = Engine(store, rs, state, dispatcher).evaluate(now_ns)
            assert dispatcher.flush(30)
        finally:
            dispatcher.close()
        return res

    try:
        round_at(T - 16 * MIN)  # pending
        assert receiver.requests == []
        assert {a["state"] for a in json.loads(state.read_text())["alerts"]} == {PENDING}
        round_at(T)  # firing: one request carrying both GPUs
        round_at(T + 1 * MIN)  # still firing: nothing new
        round_at(T + 2 * MIN)
        assert len(receiver.requests) == 1
        first = receiver.requests[0].json()
        assert {a["target"] for a in first["alerts"]} == IDLE_GPUS
        assert {a["status"] for a in first["alerts"]} == {"firing"}
        assert not any(a["repeat"] for a in first["alerts"])
        round_at(T + 5 * MIN)  # repeat_interval after firing: one reminder
        assert len(receiver.requests) == 2
        assert all(a["repeat"] for a in receiver.requests[1].json()["alerts"])
        round_at(T + 6 * MIN)
        assert len(receiver.requests) == 2
        # node-01/gpu6 gets work; gpu7 stays idle
        store.write(gpu_points("node-01", "6", T + 6 * MIN, T + 9 * MIN, power_w=300, util_pct=95,
                               uuid=_uuid_of(store, "node-01", "6")))
        round_at(T + 9 * MIN)
        assert len(receiver.requests) == 3
        resolved = receiver.requests[2].json()["alerts"]
        assert [(a["target"], a["status"]) for a in resolved] == [("node-01/gpu6", "resolved")]
        assert resolved[0]["ends_at"] is not None
        assert all(r.status == 200 for r in receiver.requests)
    finally:
        receiver.close()
    # transitions are in the store's `alert` measurement: two firings, one resolve
    rows = store.query(AggregateQuery("alert", (("max", "state"), ("min", "state"), ("count", "state")),
                                      T - MIN, T + 20 * MIN, group_by=("rule", "severity", "target")))
    got = {r.tags["target"]: (r.values["max_state"], r.values["min_state"],
                              r.values["count_state"]) for r in rows}
    assert got == {"node-01/gpu6": (1.0, 0.0, 2.0), "node-01/gpu7": (1.0, 1.0, 1.0)}
    assert {r.tags["severity"] for r in rows} == {"critical"}


def _uuid_of(store: SQLiteStore, host: str, gpu: str) -> str:
    rows = store.query(AggregateQuery("gpu", (("count", "power_w"),), 0, 2**62,
                                      group_by=("uuid",), where={"host": host, "gpu": gpu}))
    return rows[0].tags["uuid"]


def test_a_receiver_that_never_answers_does_not_stall_evaluation(store: SQLiteStore,
                                                                 tmp_path: Path) -> None:
    events: list[str] = []
    silent = SilentReceiver(events)
    rs = parse_rules(f'''
[[hook]]
name = "slow"
type = "slack"
url = "{silent.url}"
timeout_s = 120
max_attempts = 1

[[rule]]
name = "hot"
kind = "threshold"
above_w = 100
''')
    dispatcher = Dispatcher.from_ruleset(rs, tmp_path)
    engine = Engine(store, rs, tmp_path / "state.json", dispatcher)
    delivery = dispatcher.deliveries["slow"]
    try:
        for i in range(6):
            # each round a new GPU runs hot, so each round has a new alert to send
            store.write(gpu_points("node-09", str(i), T + i * MIN - 2 * STEP_NS, T + 10 * MIN,
                                   power_w=300, util_pct=90))
            res = engine.evaluate(T + i * MIN)
            events.append(f"evaluated {i}: {len(res.notifications.get('slow', []))} queued")
            if i == 0:
                assert silent.connected.wait(30)  # the first request is in flight, unanswered
        # every later evaluation finished while the first request still hung
        assert sorted(events[:2]) == ["evaluated 0: 1 queued",
                                      "receiver: connection accepted, never answering"]
        assert events[2:] == [f"evaluated {i}: 1 queued" for i in range(1, 6)]
        assert silent.connections == 1
        assert delivery.stats.delivered == 0 and delivery.stats.dead_lettered == 0
        assert delivery.pending == 6
        assert len(engine.firing()) == 6
    finally:
        silent.close()
        dispatcher.close()
    # nothing is lost: the hung request failed when the receiver dropped it, the rest were
    # dead-lettered at shutdown
    lines = (tmp_path / "dead-letter-slow.jsonl").read_text().splitlines()
    assert len(lines) == 6


def test_hysteresis_holds_the_alert_until_the_value_clears_by_more(store: SQLiteStore) -> None:
    rs = parse_rules('[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\n'
                     'hysteresis = 10\nwindow = "1m"\n')
    engine = Engine(store, rs)
    states = []
    for i, watts in enumerate([45, 35, 45, 35, 25, 35]):
        store.write(gpu_points("n", "0", T + i * MIN - MIN, T + i * MIN, power_w=watts, util_pct=0))
        engine.evaluate(T + i * MIN)
        st = engine.states.get(("idle", "n/gpu0"))
        states.append(st.state if st else None)
    # 35 W keeps a firing alert (above 40 - 10) but never starts one
    assert states == [FIRING, FIRING, FIRING, FIRING, RESOLVED, RESOLVED]


def test_threshold_against_the_power_cap(store: SQLiteStore) -> None:
    store.write(gpu_points("n", "0", T - MIN, T, power_w=396, util_pct=99, power_limit_w=400))
    store.write(gpu_points("n", "1", T - MIN, T, power_w=300, util_pct=99, power_limit_w=400))
    store.write(gpu_points("n", "2", T - MIN, T, power_w=396, util_pct=99, power_limit_w=700))
    rs = parse_rules('[[rule]]\nname = "cap"\nkind = "threshold"\nabove_cap_pct = 98\n')
    engine = Engine(store, rs)
    engine.evaluate(T)
    [alert] = engine.firing()
    assert alert.target == "n/gpu0"
    assert alert.threshold == pytest.approx(392.0)


def test_trend_fires_when_per_drops_against_the_jobs_baseline(store: SQLiteStore) -> None:
    base_times = range(T - 75 * MIN, T - 15 * MIN, STEP_NS)
    now_times = range(T - 15 * MIN, T, STEP_NS)
    store.write(job_points("slowing", "n", base_times, energy_j=1000, samples=100))
    store.write(job_points("slowing", "n", now_times, energy_j=1000, samples=70))  # -30 %
    store.write(job_points("steady", "n", base_times, energy_j=1000, samples=100))
    store.write(job_points("steady", "n", now_times, energy_j=1000, samples=95))  # -5 %
    rs = parse_rules('[[rule]]\nname = "drop"\nkind = "trend"\ndrop_pct = 20\nunit = "samples"\n')
    engine = Engine(store, rs)
    engine.evaluate(T)
    [alert] = engine.firing()
    assert alert.target == "slowing"
    assert alert.value == pytest.approx(30.0)


def test_absence_fires_for_a_silent_host_and_clears_when_it_speaks(store: SQLiteStore) -> None:
    store.write(gpu_points("quiet", "0", T - 60 * MIN, T - 10 * MIN, power_w=100, util_pct=50))
    store.write(gpu_points("chatty", "0", T - 60 * MIN, T, power_w=100, util_pct=50))
    rs = parse_rules('[[rule]]\nname = "gone"\nkind = "absence"\nfor = "5m"\n')
    engine = Engine(store, rs)
    engine.evaluate(T)
    [alert] = engine.firing()
    assert alert.target == "quiet"
    # pending from its last point (to 30 s bucket precision), so it fires without waiting 5 more min
    assert 9 * 60 <= alert.value <= 10 * 60
    assert T - 10 * MIN <= alert.active_since_ns <= T - 10 * MIN + 30 * NS
    store.write(gpu_points("quiet", "0", T, T + MIN, power_w=100, util_pct=50))
    engine.evaluate(T + MIN)
    assert engine.states[("gone", "quiet")].state == RESOLVED


def test_carbon_rule_flags_the_simulated_deferrable_eval_at_the_evening_peak(
        store: SQLiteStore) -> None:
    evening = int(datetime(2026, 11, 28, 19, 30, tzinfo=UTC).timestamp()) * NS
    write_fleet(store, evening - 15 * MIN, evening, nodes=3)
    rs = parse_rules('[[rule]]\nname = "carbon"\nkind = "carbon"\nabove_g_per_kwh = 450\n'
                     'window = "15m"\n')
    engine = Engine(store, rs)
    engine.evaluate(evening)
    [alert] = engine.firing()
    # node-02's second half runs the deferrable nightly eval from 17:00 UTC; nothing else defers
    assert alert.target.startswith("nightly-eval-node-02-")
    assert alert.value > 450


def test_carbon_hysteresis_and_only_deferrable_jobs(store: SQLiteStore) -> None:
    rs = parse_rules('[[rule]]\nname = "carbon"\nkind = "carbon"\nabove_g_per_kwh = 450\n'
                     'hysteresis = 20\nwindow = "1m"\n')
    engine = Engine(store, rs)
    states = []
    for i, grams in enumerate([500, 440, 420]):
        times = range(T + i * MIN - MIN + STEP_NS, T + i * MIN, STEP_NS)
        store.write(carbon_points("grid", times, grams))
        store.write(job_points("batch", "n", times, 1000, 10, deferrable=True))
        store.write(job_points("train", "n", times, 1000, 10, deferrable=False))
        engine.evaluate(T + i * MIN)
        states.append({k[1]: s.state for k, s in engine.states.items()})
    assert states == [{"batch": FIRING}, {"batch": FIRING}, {"batch": RESOLVED}]


def test_budgets_in_kwh_and_co2(store: SQLiteStore) -> None:
    times = list(range(T - 20 * STEP_NS, T, STEP_NS))
    joules = 360_000.0  # per point; 20 points = 7.2 MJ = 2 kWh
    store.write(job_points("big", "n", times, joules, 1))
    store.write(job_points("small", "n", times, joules / 10, 1))
    store.write(carbon_points("grid", times, 500))  # 2 kWh x 500 g/kWh = 1 kg
    # yesterday's energy does not count against today's budget
    store.write(job_points("small", "n", [T - 86400 * NS], 50 * joules, 1))
    rs = parse_rules('''
[[rule]]
name = "job-kwh"
kind = "budget"
scope = "job"
max_kwh = 1.5
period = "day"

[[rule]]
name = "job-co2"
kind = "budget"
scope = "job"
job = "b*"
max_kg_co2 = 0.8
period = "24h"
''')
    engine = Engine(store, rs)
    engine.evaluate(T)
    got = {(s.rule, s.target): s.value for s in engine.firing()}
    assert got.keys() == {("job-kwh", "big"), ("job-co2", "big")}
    assert got[("job-kwh", "big")] == pytest.approx(2.0)
    assert got[("job-co2", "big")] == pytest.approx(1.0)


def test_fleet_budget_sums_gpu_energy(store: SQLiteStore) -> None:
    for gpu in range(4):
        store.write(gpu_points("n", str(gpu), T - 30 * MIN, T, power_w=500, util_pct=90))
    kwh = 4 * 500 * 30 * 60 / 3.6e6  # 1 kWh
    rs = parse_rules(f'[[rule]]\nname = "fleet"\nkind = "budget"\nscope = "fleet"\n'
                     f'max_kwh = {kwh * 0.9}\nperiod = "1h"\n')
    engine = Engine(store, rs)
    engine.evaluate(T + NS)  # windows are [start, end): the point stamped T counts from T + 1 ns
    [alert] = engine.firing()
    assert alert.target == "fleet" and alert.value == pytest.approx(kwh)


def test_a_failing_store_changes_no_alert(store: SQLiteStore, tmp_path: Path) -> None:
    store.write(gpu_points("n", "0", T - MIN, T, power_w=60, util_pct=0))
    rs = parse_rules('[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\n')
    state = tmp_path / "state.json"
    Engine(store, rs, state).evaluate(T)
    # A real outage: the store's file becomes unreachable after it was opened.
    broken = SQLiteStore(tmp_path / "gone.db")
    broken.close()
    for p in tmp_path.glob("gone.db*"):
        p.unlink()
    (tmp_path / "gone.db").mkdir()
    engine = Engine(broken, rs, state)
    res = engine.evaluate(T + 10 * MIN)
    assert res.errors and "idle" in res.errors[0]
    assert res.transitions == [] and not res.notifications
    assert engine.states[("idle", "n/gpu0")].state == FIRING


def test_a_removed_rule_resolves_its_alerts(store: SQLiteStore, tmp_path: Path) -> None:
    store.write(gpu_points("n", "0", T - MIN, T, power_w=60, util_pct=0))
    state = tmp_path / "state.json"
    idle = '[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\n'
    Engine(store, parse_rules(idle), state).evaluate(T)
    other = '[[rule]]\nname = "hot"\nkind = "threshold"\nabove_w = 500\n'
    res = Engine(store, parse_rules(other), state).evaluate(T + MIN)
    assert [(t.rule, t.to) for t in res.transitions] == [("idle", RESOLVED)]


def test_a_corrupt_state_file_is_set_aside(store: SQLiteStore, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    engine = Engine(store, parse_rules('[[rule]]\nname = "idle"\nkind = "idle_waste"\n'
                                       'above_w = 40\n'), state)
    assert engine.states == {}
    assert [p.name.startswith("state.json.corrupt-") for p in tmp_path.iterdir()].count(True) == 1


def test_for_is_judged_against_the_history_already_stored(store: SQLiteStore) -> None:
    # 40 min of the simulated fleet before T: the first evaluation already knows that
    # node-01's spare A100s idled the whole time, and that node-00's GPUs idled only
    # 07:50-08:00 between runs (10 min < 15 min: pending at most, never firing).
    write_fleet(store, T - 40 * MIN, T)
    rs = parse_rules('[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\nfor = "15m"\n')
    engine = Engine(store, rs)
    at = T - 7 * MIN  # 07:58, inside node-00's gap, after 8 idle minutes
    res = engine.evaluate(at)
    assert fired([res])[FIRING] == {f"idle:{g}" for g in IDLE_GPUS}
    pending = {s.target: s for s in engine.states.values() if s.state == PENDING}
    assert {f"node-00/gpu{i}" for i in range(4)} <= set(pending)
    for s in pending.values():  # pending from when the gap began (to a minute), not from now
        assert 7 * MIN <= at - s.active_since_ns <= 9 * MIN
    for s in engine.firing():
        assert s.fired_ns == at
        assert s.fired_ns - s.active_since_ns >= 15 * MIN


def test_a_break_in_the_history_restarts_the_for_clock(store: SQLiteStore) -> None:
    # idle for 30 min, except a 5-minute busy stretch that ended 8 min ago; a second GPU idle
    # for 30 min, but with no data at all for 4 minutes that ended 10 min ago
    store.write(gpu_points("n", "0", T - 30 * MIN, T - 13 * MIN, power_w=55, util_pct=0))
    store.write(gpu_points("n", "0", T - 13 * MIN, T - 8 * MIN, power_w=300, util_pct=90))
    store.write(gpu_points("n", "0", T - 8 * MIN, T, power_w=55, util_pct=0))
    store.write(gpu_points("n", "1", T - 30 * MIN, T - 14 * MIN, power_w=55, util_pct=0))
    store.write(gpu_points("n", "1", T - 10 * MIN, T, power_w=55, util_pct=0))
    store.write(gpu_points("n", "2", T - 30 * MIN, T, power_w=55, util_pct=0))
    rs = parse_rules('[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\nfor = "15m"\n')
    engine = Engine(store, rs)
    engine.evaluate(T)
    states = {s.target: s for s in engine.states.values()}
    assert states["n/gpu2"].state == FIRING
    assert states["n/gpu0"].state == PENDING and states["n/gpu1"].state == PENDING
    assert 7 * MIN <= T - states["n/gpu0"].active_since_ns <= 8 * MIN
    assert 9 * MIN <= T - states["n/gpu1"].active_since_ns <= 10 * MIN
    # and it fires once the run reaches `for`, measured from that start
    engine.evaluate(T + 8 * MIN)  # no new data: the GPUs went quiet, so nothing is observed
    store.write(gpu_points("n", "0", T, T + 8 * MIN, power_w=55, util_pct=0))
    engine.evaluate(T + 8 * MIN)
    assert engine.states[("idle", "n/gpu0")].state == FIRING
