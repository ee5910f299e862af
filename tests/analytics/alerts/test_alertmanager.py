"""A real Alertmanager receives a simulated idle-waste alert, lists it, and gets it resolved when GPUs work again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from analytics.alerts.engine import FIRING, RESOLVED, Engine
from analytics.alerts.hooks import Dispatcher, iso
from analytics.alerts.rules import parse_rules
from collector.store.base import AggregateQuery
from collector.store.sqlite import SQLiteStore
from tests.analytics.alerts.helpers import IDLE_GPUS, MIN, aligned, gpu_points, write_fleet
from tests.fixtures_alertmanager import Alertmanager

pytestmark = pytest.mark.integration


def test_idle_waste_alert_reaches_alertmanager_and_resolves(alertmanager: Alertmanager,
                                                            tmp_path: Path) -> None:
    rule = "idle-gpu-waste-am"
    # Alertmanager judges endsAt against its own clock, so the data sits just before now.
    now = aligned(time.time_ns())
    store = SQLiteStore(tmp_path / "wattlens.db")
    write_fleet(store, now - 30 * MIN, now - 2 * MIN)
    rs = parse_rules(f'''
[[hook]]
name = "am"
type = "alertmanager"
url = "{alertmanager.url}"
resend_interval = "5m"

[[rule]]
name = "{rule}"
kind = "idle_waste"
above_w = 40
for = "15m"
severity = "warning"
labels = {{ team = "ml-infra" }}
''')
    dispatcher = Dispatcher.from_ruleset(rs, tmp_path)
    engine = Engine(store, rs, tmp_path / "state.json", dispatcher)
    try:
        # The data ends 2 min ago and wall time picks where in the schedule it falls; GPUs
        # idle between runs (10 min) cannot be idle at both evaluations 16 min apart.
        engine.evaluate(now - 19 * MIN)  # pending: nothing is sent
        assert dispatcher.flush(30)
        assert alertmanager.alerts(alertname=rule) == []
        engine.evaluate(now - 3 * MIN)  # held for 16 min: firing
        assert dispatcher.flush(30)
        assert dispatcher.deliveries["am"].stats.delivered == 1
        active = alertmanager.alerts(alertname=rule)
        got = {f"{a['labels']['host']}/gpu{a['labels']['gpu']}": a for a in active}
        assert set(got) == IDLE_GPUS
        for target, alert in got.items():
            assert alert["status"]["state"] == "active"
            assert alert["labels"]["severity"] == "warning"
            assert alert["labels"]["team"] == "ml-infra"
            assert alert["labels"]["target"] == target
            assert alert["labels"]["model"] == "NVIDIA A100-SXM4-80GB"
            # startsAt is when the GPU was first seen wasting power, not when it fired
            assert alert["startsAt"] == iso(engine.states[(rule, target)].active_since_ns)
            assert "idle" in alert["annotations"]["summary"]
        # evaluating again within the resend interval pushes nothing new
        engine.evaluate(now - 3 * MIN + 30 * 1_000_000_000)
        assert dispatcher.flush(30)
        assert dispatcher.deliveries["am"].stats.submitted == 1
        # the two GPUs get work: the next evaluation resolves them in Alertmanager
        uuids = {r.tags["gpu"]: r.tags["uuid"] for r in store.query(AggregateQuery(
            "gpu", (("count", "power_w"),), now - 30 * MIN, now, group_by=("gpu", "uuid"),
            where={"host": "node-01"}))}
        for gpu in ("6", "7"):
            store.write(gpu_points("node-01", gpu, now - 2 * MIN, now - MIN, power_w=310,
                                   util_pct=93, uuid=uuids[gpu]))
        res = engine.evaluate(now - MIN)
        assert {t.target for t in res.transitions if t.to == RESOLVED} == IDLE_GPUS
        assert dispatcher.flush(30)
        assert dispatcher.deliveries["am"].stats.delivered == 2
        assert alertmanager.alerts(alertname=rule) == []
        assert not [s for s in engine.states.values() if s.state == FIRING]
    finally:
        dispatcher.close()
        store.close()
    assert dispatcher.deliveries["am"].stats.dead_lettered == 0, alertmanager.log_tail()
