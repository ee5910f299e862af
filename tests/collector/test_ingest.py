"""The job ingest endpoint: strict validation, auth beyond loopback, and a flood that never stops sampling."""

from __future__ import annotations

import http.client
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.agent import Agent
from collector.exporter import Exporter
from collector.ingest import (
    MAX_BODY_BYTES,
    IngestApp,
    IngestError,
    JobTracker,
    Progress,
    parse_progress,
    with_jobs,
)
from collector.sources.cpu_estimate import CpuEstimateSource
from collector.store.base import AggregateQuery
from collector.store.sqlite import SQLiteStore

GOOD = {"samples": 64, "tokens": 32768, "steps": 1, "flops": 1.5e12, "kind": "train",
        "precision": "bf16", "batch_size": 64, "gpus": [0, 1], "planned_samples": 1e6,
        "tags": {"team": "nlp"}, "deferrable": False, "pid": 4242, "seq": 1}


def test_a_full_report_parses() -> None:
    p = parse_progress("bert-ft:run.1", json.dumps(GOOD).encode())
    assert (p.samples, p.tokens, p.steps, p.flops) == (64, 32768, 1, 1.5e12)
    assert p.gpus == (0, 1) and p.tags == {"team": "nlp"} and p.pid == 4242 and p.seq == 1
    assert p.precision == "bf16" and p.batch_size == 64 and p.final is False


@pytest.mark.parametrize(("job", "body", "status", "named"), [
    ("ok", b'{"samples": -1}', 400, "samples"),
    ("ok", b'{"samples": NaN}', 400, "NaN"),
    ("ok", b'{"tokens": 1e999}', 400, "tokens"),
    ("ok", b'{"steps": true}', 400, "steps"),
    ("ok", b'{"flops": "12"}', 400, "flops"),
    ("ok", b'{"samples": 1, "samples": 2}', 400, "samples"),
    ("ok", b'{"speed": 1}', 400, "speed"),
    ("ok", b'[1, 2]', 400, "body"),
    ("ok", b'{"samples": 1', 400, "body"),
    ("ok", b'\xff\xfe', 400, "body"),
    ("ok", b'{"gpus": [0, 0]}', 400, "gpus"),
    ("ok", b'{"gpus": [-1]}', 400, "gpus"),
    ("ok", b'{"batch_size": 0}', 400, "batch_size"),
    ("ok", b'{"precision": "fp12"}', 400, "precision"),
    ("ok", b'{"kind": "training"}', 400, "kind"),
    ("ok", b'{"tags": {"host": "x"}}', 400, "tags"),
    ("ok", b'{"tags": {"team": "a b"}}', 400, "tags.team"),
    ("ok", b'{"pid": 0}', 400, "pid"),
    ("ok", b'{"final": 1}', 400, "final"),
    ("a/b", b"{}", 400, "job id"),
    ("x" * 129, b"{}", 400, "job id"),
    ("unattributed", b"{}", 400, "job id"),
    ("ok", b"[" * 100_000, 413, "body"),
    ("ok", b"[" * 50_000, 400, "body"),
])
def test_bad_reports_are_refused_naming_the_field(job: str, body: bytes, status: int,
                                                  named: str) -> None:
    with pytest.raises(IngestError) as info:
        parse_progress(job, body)
    assert info.value.status == status
    assert named in str(info.value) and "\n" not in str(info.value)


# --- auth -----------------------------------------------------------------------------------


def _post(app: IngestApp, peer: str, headers: dict[str, str] | None = None) -> int:
    status, _, _ = app.handle("POST", "/v1/jobs/j1/progress", headers or {}, b'{"samples": 1}', peer)
    return status


def test_loopback_needs_no_token_and_anything_else_needs_the_right_one() -> None:
    tracker = JobTracker("h")
    open_app = IngestApp(tracker, token="")
    assert _post(open_app, "127.0.0.1") == 200
    assert _post(open_app, "::1") == 200
    assert _post(open_app, "::ffff:127.0.0.1") == 200
    assert _post(open_app, "10.0.0.7") == 403  # no token on the agent: loopback only
    assert _post(open_app, "10.0.0.7", {"Authorization": "Bearer guess"}) == 403
    app = IngestApp(tracker, token="s3cret-token")
    assert _post(app, "10.0.0.7") == 401
    assert _post(app, "10.0.0.7", {"Authorization": "Bearer wrong"}) == 401
    assert _post(app, "10.0.0.7", {"Authorization": "Basic s3cret-token"}) == 401
    assert _post(app, "10.0.0.7", {"Authorization": "Bearer s3cret-tokén"}) == 401
    assert _post(app, "10.0.0.7", {"authorization": "Bearer s3cret-token"}) == 200
    assert _post(app, "127.0.0.1", {"Authorization": "Bearer wrong"}) == 401  # wrong is wrong anywhere
    _, headers, body = app.handle("POST", "/v1/jobs/j1/progress", {}, b"{}", "10.0.0.7")
    assert headers.get("WWW-Authenticate") == "Bearer" and b"s3cret" not in body


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLENS_AGENT_TOKEN", "from-env")
    app = IngestApp(JobTracker("h"))
    assert _post(app, "192.0.2.1", {"Authorization": "Bearer from-env"}) == 200
    assert _post(app, "192.0.2.1", {"Authorization": "Bearer other"}) == 401


def test_methods_paths_and_content_types() -> None:
    app = IngestApp(JobTracker("h"))
    assert app.handle("GET", "/v1/jobs/j/progress", {}, b"", "127.0.0.1")[0] == 405
    assert app.handle("POST", "/v1/jobs/j/other", {}, b"{}", "127.0.0.1")[0] == 404
    assert app.handle("POST", "/v1/jobs/j/progress", {"Content-Type": "text/plain"}, b"{}",
                      "127.0.0.1")[0] == 415
    assert app.handle("POST", "/v1/jobs/j/progress?x=1", {"Content-Type": "application/json; "
                      "charset=utf-8"}, b"{}", "127.0.0.1")[0] == 200
    status, _, body = app.handle("GET", "/v1/jobs", {}, b"", "127.0.0.1")
    assert status == 200 and json.loads(body)["jobs"][0]["job"] == "j"


# --- the tracker's bookkeeping -------------------------------------------------------------------


def test_a_retried_report_counts_once_and_ranks_count_separately() -> None:
    tracker = JobTracker("h")
    assert tracker.record(Progress("ddp", samples=8, pid=1, seq=1))
    assert not tracker.record(Progress("ddp", samples=8, pid=1, seq=1))  # the retry
    assert tracker.record(Progress("ddp", samples=8, pid=2, seq=1))  # another rank
    assert tracker.reports_duplicate == 1 and tracker.reports_accepted == 2


def test_too_many_jobs_is_429_and_ended_jobs_free_their_slot() -> None:
    now = [0.0]
    tracker = JobTracker("h", max_jobs=2, clock=lambda: now[0], job_timeout_s=30)
    tracker.record(Progress("a"))
    tracker.record(Progress("b", final=True))
    with pytest.raises(IngestError) as info:
        tracker.record(Progress("c"))
    assert info.value.status == 429
    from collector.sources.base import Tick

    tracker.sample(Tick(1, 0.5))
    now[0] = 1.0
    points = tracker.sample(Tick(2, 1.0))  # b ended (and did nothing): its slot is free
    assert {p.tag("job") for p in points} == {"a"}
    tracker.record(Progress("c"))
    now[0] = 50.0
    tracker.record(Progress("a", samples=5))  # a's last word
    now[0] = 100.0
    points = tracker.sample(Tick(3, 100.0))  # a and c went silent: they end at their last report
    active = {p.tag("job"): p.field("active_s") for p in points}
    assert active == {"a": pytest.approx(50.0 - 1.0)}  # c's last report was its first: no run time
    assert tracker.active_jobs() == []


# --- a real agent with its HTTP server ----------------------------------------------------------


@dataclass
class RunningAgent:
    agent: Agent
    tracker: JobTracker
    app: IngestApp
    exporter: Exporter
    store: SQLiteStore
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.exporter.server.port


@pytest.fixture
def running_agent(tmp_path: Path) -> Iterator[RunningAgent]:
    store = SQLiteStore(tmp_path / "w.db")
    sources, tracker = with_jobs([CpuEstimateSource(host="node-1")], "node-1")
    agent = Agent(sources, store, 0.05)
    exporter = Exporter(agent.stats, host="127.0.0.1", port=0)
    agent.observers.append(exporter)
    app = IngestApp(tracker, token="")
    app.mount(exporter)
    exporter.start()
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        yield RunningAgent(agent, tracker, app, exporter, store, thread)
    finally:
        agent.stop()
        thread.join(30)
        exporter.stop()
        store.close()


def _job_sum(store: SQLiteStore, job: str, field: str) -> float:
    rows = store.query(AggregateQuery("job", (("sum", field),), 0, 2**62, where={"job": job}))
    return (rows[0].values.get(f"sum_{field}") or 0.0) if rows else 0.0


def _wait(check: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)


def test_reports_over_http_become_job_points_with_energy(running_agent: RunningAgent) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running_agent.port, timeout=5)
    sent = {"samples": 0.0, "tokens": 0.0}
    for seq in range(1, 21):
        body: dict[str, Any] = {"samples": 32, "tokens": 32 * 128, "seq": seq, "pid": os.getpid()}
        if seq == 1:
            body |= {"kind": "train", "precision": "fp32"}
        if seq == 20:
            body["final"] = True
        conn.request("POST", "/v1/jobs/http-job/progress", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
        sent["samples"] += 32
        sent["tokens"] += 32 * 128
        time.sleep(0.01)
    conn.close()
    _wait(lambda: running_agent.tracker.active_jobs() == [], "the job's last point")
    running_agent.agent.stop()
    running_agent.thread.join(30)
    assert _job_sum(running_agent.store, "http-job", "samples") == sent["samples"]
    assert _job_sum(running_agent.store, "http-job", "tokens") == sent["tokens"]
    # The reporting process is this one (it runs the agent and its server, so it is busy):
    # its share of the CPU energy is the job's, and the host's CPU energy is all accounted for.
    job_energy = _job_sum(running_agent.store, "http-job", "energy_j")
    assert job_energy > 0
    idle = _job_sum(running_agent.store, "unattributed", "energy_j")
    cpu = running_agent.store.query(AggregateQuery("cpu", (("sum", "energy_j"),), 0, 2**62))
    cpu_j = cpu[0].values["sum_energy_j"] or 0.0
    assert cpu_j > 0
    assert job_energy + idle == pytest.approx(cpu_j, rel=1e-6)


# --- a flood of bad requests ---------------------------------------------------------------------

_FIELD_BAD_VALUES: dict[str, Any] = {
    "samples": st.one_of(st.floats(max_value=-1e-9), st.text(max_size=5), st.booleans(),
                         st.none(), st.lists(st.integers(), max_size=2), st.just(1e31)),
    "kind": st.one_of(st.text(max_size=12).filter(lambda s: s not in
                                                  ("train", "finetune", "infer", "eval", "batch",
                                                   "other")), st.integers()),
    "precision": st.one_of(st.text(max_size=8).filter(lambda s: s not in (
        "fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "amp-bf16", "amp-fp16")),
        st.floats()),
    "batch_size": st.one_of(st.integers(max_value=0), st.integers(min_value=10_000_001),
                            st.floats(), st.text(max_size=3)),
    "gpus": st.one_of(st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
                      st.lists(st.integers(min_value=1024), min_size=1, max_size=3),
                      st.lists(st.integers(0, 3), min_size=2, max_size=6).filter(
                          lambda g: len(set(g)) < len(g)),
                      st.text(max_size=4), st.integers()),
    "tags": st.one_of(st.dictionaries(st.sampled_from(["job", "host", "method", "Bad", "9x"]),
                                      st.just("v"), min_size=1, max_size=2),
                      st.dictionaries(st.just("team"), st.text(min_size=65, max_size=70), min_size=1),
                      st.lists(st.text(max_size=3), max_size=2)),
    "pid": st.one_of(st.integers(max_value=0), st.integers(min_value=(1 << 22) + 1), st.text(max_size=3)),
    "seq": st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3)),
    "final": st.one_of(st.integers(), st.text(max_size=3), st.none()),
    "deferrable": st.one_of(st.integers(), st.none(), st.text(max_size=2)),
}

_bad_field_body = st.sampled_from(sorted(_FIELD_BAD_VALUES)).flatmap(
    lambda f: _FIELD_BAD_VALUES[f].map(lambda v: json.dumps({"samples": 1, f: v},
                                                            allow_nan=True).encode()))
_bad_key_body = st.text(min_size=1, max_size=10).filter(
    lambda k: k not in GOOD and k != "final").map(lambda k: json.dumps({k: 1}).encode())
_not_json = st.binary(max_size=200).filter(lambda b: _not_a_json_object(b))
_oversize = st.integers(MAX_BODY_BYTES + 1, MAX_BODY_BYTES + 1000).map(
    lambda n: b'{"samples": 1, "pad": "' + b"x" * n + b'"}')
_too_many_keys = st.integers(33, 60).map(
    lambda n: json.dumps({f"k{i}": 1 for i in range(n)}).encode())
_bad_job_id = st.one_of(
    st.text(min_size=1, max_size=20).filter(lambda s: any(c not in
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-" for c in s)),
    st.integers(129, 300).map(lambda n: "j" * n), st.just("unattributed"))


def _not_a_json_object(b: bytes) -> bool:
    try:
        return not isinstance(json.loads(b.decode("utf-8")), dict)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return True


def _url_path(job: str) -> str:
    from urllib.parse import quote

    return f"/v1/jobs/{quote(job, safe='')}/progress"


@st.composite
def bad_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return _url_path("flood-ok"), draw(_bad_field_body)
    if kind == 1:
        return _url_path("flood-ok"), draw(_bad_key_body)
    if kind == 2:
        return _url_path("flood-ok"), draw(_not_json)
    if kind == 3:
        return _url_path("flood-ok"), draw(_oversize)
    if kind == 4:
        return _url_path("flood-ok"), draw(_too_many_keys)
    return _url_path(draw(_bad_job_id)), json.dumps({"samples": 1}).encode()


def test_a_flood_of_bad_reports_is_refused_and_sampling_goes_on(running_agent: RunningAgent) -> None:
    _wait(lambda: running_agent.agent.stats.rounds >= 2, "first rounds")
    rounds_before = running_agent.agent.stats.rounds
    statuses: list[int] = []

    @settings(max_examples=2500, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.function_scoped_fixture])
    @given(bad_requests())
    def flood(request: tuple[str, bytes]) -> None:
        path, body = request
        # A connection per request, as most clients do (keep-alive would add the server's
        # Nagle/delayed-ACK stall to every request, which tests nothing here).
        conn = http.client.HTTPConnection("127.0.0.1", running_agent.port, timeout=10)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        statuses.append(resp.status)
        assert 400 <= resp.status < 500, (path, body[:100], resp.status, payload[:200])
        if resp.status != 413:
            message = json.loads(payload)["error"]
            assert message and "\n" not in message

    flood()
    rounds_during = running_agent.agent.stats.rounds - rounds_before
    _wait(lambda: running_agent.agent.stats.rounds >= rounds_before + rounds_during + 3,
          "rounds after the flood")
    running_agent.agent.stop()
    running_agent.thread.join(30)
    assert len(statuses) >= 2000
    assert running_agent.tracker.active_jobs() == []
    assert running_agent.tracker.reports_accepted == 0
    stored_jobs = running_agent.store.tag_values("job", "job", 0, 2**62)
    assert set(stored_jobs) <= {"unattributed"}  # nothing of the flood became a point
    stats = running_agent.agent.stats
    assert rounds_during > 0 and stats.source_errors == 0 and stats.points_dropped == 0
    assert math.isfinite(stats.last_round_s)
