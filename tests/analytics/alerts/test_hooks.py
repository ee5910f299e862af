"""Hooks: signed webhooks verified by a real local receiver, retries with backoff, dead letters, payload shapes."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from analytics.alerts.hooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    AlertEvent,
    HookDelivery,
    ReplayCache,
    SignatureError,
    alertmanager_payload,
    sign,
    slack_payload,
    verify_signature,
    webhook_payload,
)
from analytics.alerts.rules import HookSpec
from tests.analytics.alerts.receivers import Receiver

SECRET = b"test-secret-\x00\xff-not-logged"
NS = 1_000_000_000


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(secret=SECRET)
    yield r
    r.close()


def spec(**kw: object) -> HookSpec:
    base: dict[str, object] = {"name": "ops", "type": "webhook", "url": "http://127.0.0.1/x",
                               "secret_env": "X", "timeout_s": 5.0, "max_attempts": 4,
                               "backoff_s": 0.01, "backoff_max_s": 0.05}
    base.update(kw)
    return HookSpec(**base)  # type: ignore[arg-type]


def event(status: str = "firing", target: str = "node-01/gpu6") -> AlertEvent:
    t = 1_790_000_000 * NS
    return AlertEvent(
        id="abc", rule="idle", kind="idle_waste", severity="warning", target=target,
        status=status, value=55.2, unit="W", threshold=40.0, summary=f"{target} idle",
        labels={"host": "node-01", "gpu": "6", "team": "ml"}, active_since_ns=t,
        fired_ns=t + 900 * NS, resolved_ns=t + 1800 * NS if status == "resolved" else None)


def post(url: str, headers: dict[str, str], body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --- signatures ------------------------------------------------------------------------
def test_signature_round_trip_and_failures() -> None:
    body = b'{"alerts":[]}'
    now = 1_790_000_000
    headers = {SIGNATURE_HEADER: sign(SECRET, body, now)}
    assert verify_signature(SECRET, headers, body, now_s=now + 10) == now
    # header lookup is case-insensitive, as HTTP headers are
    assert verify_signature(SECRET, {SIGNATURE_HEADER.lower(): headers[SIGNATURE_HEADER]}, body,
                            now_s=now) == now
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, headers, body + b" ", now_s=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(b"other", headers, body, now_s=now)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(SECRET, headers, body, tolerance_s=300, now_s=now + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify_signature(SECRET, {}, body, now_s=now)
    with pytest.raises(SignatureError, match="expected t="):
        verify_signature(SECRET, {SIGNATURE_HEADER: "v1=00"}, body, now_s=now)
    # secret rotation: a header carrying an old and a new signature verifies with either
    rotated = {SIGNATURE_HEADER: headers[SIGNATURE_HEADER] + ",v1="
               + sign(b"new", body, now).split("v1=")[1]}
    assert verify_signature(b"new", rotated, body, now_s=now) == now
    # a timestamp cannot be moved forward without the secret
    forged = {SIGNATURE_HEADER: headers[SIGNATURE_HEADER].replace(f"t={now}", f"t={now + 600}")}
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, forged, body, now_s=now + 600)


def test_replay_cache_rejects_a_second_use() -> None:
    body = b"{}"
    now = 1_790_000_000
    headers = {SIGNATURE_HEADER: sign(SECRET, body, now)}
    cache = ReplayCache()
    verify_signature(SECRET, headers, body, now_s=now, replay_cache=cache)
    with pytest.raises(SignatureError, match="replayed"):
        verify_signature(SECRET, headers, body, now_s=now + 1, replay_cache=cache)


def test_receiver_verifies_and_rejects_tampered_and_replayed(receiver: Receiver,
                                                             tmp_path: Path) -> None:
    d = HookDelivery(spec(), receiver.url, tmp_path / "dead.jsonl", secret=SECRET)
    try:
        delivery_id = d.submit(json.dumps(webhook_payload([event()], time.time_ns())).encode())
        assert d.flush(30)
    finally:
        d.close()
    [first] = receiver.wait_for(1)
    assert first.status == 200, first.reason
    assert first.headers[DELIVERY_HEADER] == delivery_id
    assert first.json()["alerts"][0]["target"] == "node-01/gpu6"
    # the body changed in transit: rejected
    tampered = first.body.replace(b"node-01/gpu6", b"node-01/gpu7")
    assert post(receiver.url, first.headers, tampered) == 401
    # the same request sent again: rejected by the receiver's replay cache
    assert post(receiver.url, first.headers, first.body) == 401
    # and replayed later with a fresh receiver memory: rejected by the timestamp tolerance
    receiver.cache = ReplayCache()
    receiver.clock_offset_s = 3600
    assert post(receiver.url, first.headers, first.body) == 401
    reasons = [r.reason for r in receiver.requests[1:]]
    assert "does not match" in reasons[0]
    assert "replayed" in reasons[1]
    assert "tolerance" in reasons[2]
    assert len(receiver.accepted) == 1
    assert not (tmp_path / "dead.jsonl").exists()


# --- retries and dead letters -----------------------------------------------------------
def test_500_is_retried_then_delivered_once(tmp_path: Path) -> None:
    receiver = Receiver(secret=SECRET, script=[500, 503])
    d = HookDelivery(spec(), receiver.url, tmp_path / "dead.jsonl", secret=SECRET,
                     rng=random.Random(7))
    try:
        d.submit(json.dumps(webhook_payload([event()], time.time_ns())).encode())
        assert d.flush(30)
    finally:
        d.close()
        receiver.close()
    statuses = [r.status for r in receiver.requests]
    assert statuses == [500, 503, 200]
    assert len(receiver.accepted) == 1
    # the same delivery each time (receivers de-duplicate on its id), freshly signed
    assert len({r.headers[DELIVERY_HEADER] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    assert (d.stats.attempts, d.stats.retries, d.stats.delivered, d.stats.dead_lettered) == (
        3, 2, 1, 0)
    assert not (tmp_path / "dead.jsonl").exists()


def test_backoff_grows_exponentially_with_jitter_and_a_cap(tmp_path: Path) -> None:
    d = HookDelivery(spec(backoff_s=1.0, backoff_max_s=8.0), "http://127.0.0.1:9/x",
                     tmp_path / "dead.jsonl", rng=random.Random(3))
    try:
        for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)):
            delays = {d.backoff_s(attempt) for _ in range(50)}
            assert all(base / 2 <= x <= base for x in delays), (attempt, delays)
            assert len(delays) > 1  # jittered, so a fleet of agents does not retry in step
    finally:
        d.close()


def test_failures_go_to_the_dead_letter_file_without_secrets(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    receiver = Receiver(secret=SECRET, script=[500] * 10)
    dead = tmp_path / "dl" / "dead.jsonl"
    d = HookDelivery(spec(max_attempts=3), receiver.url, dead, secret=SECRET)
    try:
        with caplog.at_level("DEBUG", logger="wattlens.alerts"):
            d.submit(json.dumps(webhook_payload([event()], time.time_ns())).encode())
            assert d.flush(30)
    finally:
        d.close()
        receiver.close()
    assert len(receiver.requests) == 3
    [record] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert record["attempts"] == 3
    assert record["error"] == "HTTP 500"
    assert record["payload"]["alerts"][0]["rule"] == "idle"
    assert dead.stat().st_mode & 0o077 == 0  # only the owner can read it
    text = dead.read_text() + caplog.text
    assert SECRET.decode("latin-1") not in text and "v1=" not in text


def test_4xx_is_not_retried(tmp_path: Path) -> None:
    receiver = Receiver(script=[400])
    d = HookDelivery(spec(type="slack", secret_env=None), receiver.url, tmp_path / "dead.jsonl")
    try:
        d.submit(b'{"text":"x"}')
        assert d.flush(30)
    finally:
        d.close()
        receiver.close()
    assert [r.status for r in receiver.requests] == [400]
    assert d.stats.dead_lettered == 1
    assert "HTTP 400" in (tmp_path / "dead.jsonl").read_text()


def test_a_full_queue_dead_letters_instead_of_blocking(tmp_path: Path) -> None:
    from tests.analytics.alerts.receivers import SilentReceiver

    silent = SilentReceiver()
    d = HookDelivery(spec(queue_max=2, timeout_s=120, max_attempts=1), silent.url,
                     tmp_path / "dead.jsonl")
    try:
        d.submit(b'{"n":0}')
        assert silent.connected.wait(30)  # message 0 is in flight, the queue is empty
        for i in range(1, 5):
            d.submit(json.dumps({"n": i}).encode())
        # two fit in the queue; the other two are dead-lettered at once, nothing waited
        lines = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
        assert [x["payload"]["n"] for x in lines] == [3, 4]
        assert all("queue full" in x["error"] for x in lines)
    finally:
        silent.close()
        d.close()
    assert d.stats.submitted == 5 and d.stats.delivered == 0


# --- payload shapes ---------------------------------------------------------------------
def test_webhook_payload_is_versioned() -> None:
    now = 1_790_000_100 * NS
    body = webhook_payload([event(), event("resolved", "node-01/gpu7")], now)
    assert body["version"] == "1" and body["sender"] == "wattlens"
    firing, resolved = body["alerts"]
    assert firing["status"] == "firing" and firing["ends_at"] is None
    assert resolved["status"] == "resolved" and resolved["ends_at"].endswith("Z")
    assert firing["labels"] == {"host": "node-01", "gpu": "6", "team": "ml"}
    assert set(firing) == {"id", "status", "rule", "kind", "severity", "target", "value", "unit",
                           "threshold", "summary", "labels", "starts_at", "fired_at", "ends_at",
                           "repeat"}


def test_slack_payload_is_incoming_webhook_json() -> None:
    body = slack_payload([event(), event("resolved", "node-01/gpu7")], 1_790_000_100 * NS)
    assert body["text"] == "wattlens: 1 firing, 1 resolved"
    titles = [a["title"] for a in body["attachments"]]
    assert titles == ["[FIRING] idle: node-01/gpu6", "[RESOLVED] idle: node-01/gpu7"]
    assert all(isinstance(a["ts"], int) for a in body["attachments"])


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000) * 1_000_000


def test_alertmanager_payload_times() -> None:
    now = 1_790_000_100 * NS
    e_firing, e_resolved = event(), event("resolved")
    firing, resolved = alertmanager_payload([e_firing, e_resolved], now, resend_s=60)
    assert firing["labels"]["alertname"] == "idle"
    assert firing["labels"]["severity"] == "warning" and firing["labels"]["host"] == "node-01"
    # a firing alert expires by itself four resend intervals ahead, unless pushed again
    assert _ns(firing["endsAt"]) == now + 4 * 60 * NS
    assert _ns(resolved["endsAt"]) == e_resolved.resolved_ns
    assert _ns(firing["startsAt"]) == _ns(resolved["startsAt"]) == e_firing.active_since_ns
