"""A resolved notice dead-lettered while the receiver is down is delivered once the receiver is back."""

from __future__ import annotations

import json
import time
from pathlib import Path

from analytics.alerts.hooks import DELIVERY_HEADER, HookDelivery, webhook_payload
from analytics.alerts.rules import RuleSet
from tests.analytics.alerts.receivers import Receiver
from tests.analytics.alerts.test_hooks import SECRET, event, spec


def _wait(check: object, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_dead_lettered_resolved_notice_is_sent_again_when_the_receiver_is_back(tmp_path: Path) -> None:
    receiver = Receiver(secret=SECRET, script=[503, 503, 503])  # down for three attempts
    dead = tmp_path / "dead.jsonl"
    d = HookDelivery(spec(max_attempts=3, backoff_max_s=0.2), receiver.url, dead, secret=SECRET)
    try:
        body = json.dumps(webhook_payload([event("resolved")], time.time_ns())).encode()
        delivery_id = d.submit(body, owed=True)
        assert _wait(lambda: d.stats.dead_lettered == 1)
        assert json.loads(dead.read_text())["delivery_id"] == delivery_id
        # Idle, nothing else to send: the owed notice is tried again and now gets through.
        assert _wait(lambda: receiver.accepted)
        assert d.owed == 0
    finally:
        d.close()
        receiver.close()
    [accepted] = receiver.accepted
    assert accepted.headers[DELIVERY_HEADER] == delivery_id  # the same id: receivers de-duplicate
    assert json.loads(accepted.body)["alerts"][0]["status"] == "resolved"
    assert len(dead.read_text().splitlines()) == 1  # the record is written once


def test_a_firing_notice_or_a_refused_one_is_not_sent_again(tmp_path: Path) -> None:
    receiver = Receiver(secret=SECRET, script=[503, 503, 400])
    d = HookDelivery(spec(max_attempts=2, backoff_max_s=0.1), receiver.url,
                     tmp_path / "dead.jsonl", secret=SECRET)
    try:
        d.submit(json.dumps(webhook_payload([event()], time.time_ns())).encode())  # firing
        assert _wait(lambda: d.stats.dead_lettered == 1)
        d.submit(json.dumps(webhook_payload([event("resolved")], time.time_ns())).encode(),
                 owed=True)
        assert _wait(lambda: d.stats.dead_lettered == 2)  # refused with a 400
        time.sleep(0.5)
        assert d.owed == 0
    finally:
        d.close()
        receiver.close()
    assert [r.status for r in receiver.requests] == [503, 503, 400]


def test_the_dispatcher_marks_resolved_batches_as_owed(tmp_path: Path) -> None:
    from analytics.alerts.hooks import Dispatcher

    receiver = Receiver(secret=SECRET, script=[503])
    delivery = HookDelivery(spec(max_attempts=1, backoff_max_s=0.2), receiver.url,
                            tmp_path / "dead.jsonl", secret=SECRET)
    dispatcher = Dispatcher(RuleSet(rules=(), hooks=(delivery.spec,)), {"ops": delivery})
    try:
        dispatcher.submit("ops", [event("resolved")], time.time_ns())
        assert _wait(lambda: len(receiver.accepted) == 1)
    finally:
        dispatcher.close()
        receiver.close()
    assert receiver.requests[0].status == 503
