"""The job ingest endpoint: strict validation, auth beyond loopback, and a flood that never stops sampling."""

from __future__ import annotations

import http.client
import json
import math
import os
import tempfile
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
from collector.http_server import Peer
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
    ("ok", b'{"team": "a b"}', 400, "team: must be"),
    ("ok", b'{"team": ""}', 400, "team: must be"),
    ("ok", b'{"team": ["x"]}', 400, "team: must be"),
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


TOKEN = "s3cret-token-0123456789"


def _post(app: IngestApp, client: str, headers: dict[str, str] | None = None, *,
          peer: Peer | None = None, job: str = "j1", body: bytes = b'{"samples": 1}') -> int:
    status, _, _ = app.handle("POST", f"/v1/jobs/{job}/progress", headers or {}, body, client, peer)
    return status


def test_tcp_ingest_needs_the_token_even_from_loopback() -> None:
    tracker = JobTracker("h")
    open_app = IngestApp(tracker, token="")
    for client in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.7"):
        assert _post(open_app, client) == 403  # no token on the agent: TCP ingest is off
    _, _, body = open_app.handle("POST", "/v1/jobs/j1/progress", {}, b"{}", "127.0.0.1")
    assert b"Unix socket" in body
    app = IngestApp(tracker, token=TOKEN)
    assert _post(app, "127.0.0.1") == 401
    assert _post(app, "10.0.0.7") == 401
    assert _post(app, "10.0.0.7", {"Authorization": "Bearer wrong"}) == 401
    assert _post(app, "10.0.0.7", {"Authorization": f"Basic {TOKEN}"}) == 401
    assert _post(app, "10.0.0.7", {"Authorization": TOKEN}) == 401  # a raw token, no scheme
    assert _post(app, "10.0.0.7", {"Authorization": f"Bearer {TOKEN}é"}) == 401
    assert _post(app, "10.0.0.7", {"authorization": f"Bearer {TOKEN}"}) == 200
    assert _post(app, "127.0.0.1", {"Authorization": f"bEARER {TOKEN}"}) == 200  # scheme: any case
    _, headers, body = app.handle("POST", "/v1/jobs/j1/progress", {}, b"{}", "10.0.0.7")
    assert headers.get("WWW-Authenticate") == "Bearer" and b"s3cret" not in body


def test_a_token_shorter_than_16_characters_is_refused_where_it_is_configured() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        IngestApp(JobTracker("h"), token="short-token")


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLENS_AGENT_TOKEN", "from-env-0123456789")
    app = IngestApp(JobTracker("h"))
    assert _post(app, "192.0.2.1", {"Authorization": "Bearer from-env-0123456789"}) == 200
    assert _post(app, "192.0.2.1", {"Authorization": "Bearer other-0123456789abc"}) == 401


def _proc_of(tmp_path: Path, owners: dict[int, int]) -> str:
    """A /proc tree whose process directories belong to the given UIDs (needs root to chown)."""
    root = tmp_path / "proc"
    for pid, uid in owners.items():
        (root / str(pid)).mkdir(parents=True)
        os.chown(root / str(pid), uid, uid)
    return str(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown of the fake /proc needs root")
def test_a_unix_socket_peer_claims_only_its_own_pids_and_jobs(tmp_path: Path) -> None:
    tracker = JobTracker("h")
    app = IngestApp(tracker, token="", proc_root=_proc_of(tmp_path, {4242: 1000, 4343: 1001}))
    alice, bob, root = Peer(4242, 1000, 1000), Peer(4343, 1001, 1001), Peer(1, 0, 0)
    assert _post(app, "unix", peer=alice, job="a", body=b'{"samples": 1, "pid": 4242}') == 200
    assert _post(app, "unix", peer=alice, job="a2", body=b'{"pid": 4343}') == 403  # bob's process
    assert _post(app, "unix", peer=alice, job="a3", body=b'{"pid": 4444}') == 400  # no such process
    assert _post(app, "unix", peer=bob, job="a", body=b'{"samples": 5}') == 403  # alice's job
    assert _post(app, "unix", peer=bob, job="b", body=b'{"pid": 4343}') == 200
    assert _post(app, "unix", peer=root, job="a", body=b'{"pid": 4343}') == 200  # root may
    assert {j["job"] for j in tracker.active_jobs()} == {"a", "b"}
    with tracker._lock:
        assert tracker._jobs["a"].work["samples"] == 1 and tracker._jobs["a"].pids == {4242, 4343}


def test_methods_paths_and_content_types() -> None:
    app = IngestApp(JobTracker("h"), token="")
    me = Peer(os.getpid(), os.getuid(), os.getgid())

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        status, _, payload = app.handle(method, path, headers, body, "unix", me)
        return status, payload

    assert handle("GET", "/v1/jobs/j/progress", {}, b"")[0] == 405
    assert handle("POST", "/v1/jobs/j/other", {}, b"{}")[0] == 404
    assert handle("POST", "/v1/jobs/j/progress", {"Content-Type": "text/plain"}, b"{}")[0] == 415
    assert handle("POST", "/v1/jobs/j/progress?x=1", {"Content-Type": "application/json; "
                  "charset=utf-8"}, b"{}")[0] == 200
    status, body = handle("GET", "/v1/jobs", {}, b"")
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

    def unix_connection(self) -> http.client.HTTPConnection:
        from wattlens.job_transports import UnixConnection as _UnixConnection

        assert self.exporter.server.unix_socket is not None
        return _UnixConnection(str(self.exporter.server.unix_socket), 5)


@pytest.fixture
def running_agent(tmp_path: Path) -> Iterator[RunningAgent]:
    store = SQLiteStore(tmp_path / "w.db")
    sources, tracker = with_jobs([CpuEstimateSource(host="node-1")], "node-1")
    agent = Agent(sources, store, 0.05)
    sock = Path(tempfile.mkdtemp(prefix="wl-")) / "ingest.sock"  # short: Unix paths are <108 bytes
    exporter = Exporter(agent.stats, host="127.0.0.1", port=0, token=TOKEN, unix_socket=sock)
    agent.observers.append(exporter)
    app = IngestApp(tracker, token=TOKEN, socket_path=str(sock))
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
        sock.parent.rmdir()


def _job_sum(store: SQLiteStore, job: str, field: str) -> float:
    rows = store.query(AggregateQuery("job", (("sum", field),), 0, 2**62, where={"job": job}))
    return (rows[0].values.get(f"sum_{field}") or 0.0) if rows else 0.0


def _wait(check: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)


def test_reports_over_the_unix_socket_become_job_points_with_energy(
        running_agent: RunningAgent) -> None:
    conn = running_agent.unix_connection()
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
            conn.request("POST", path, body, {"Content-Type": "application/json",
                                              "Authorization": f"Bearer {TOKEN}"})
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


@pytest.mark.skipif(os.geteuid() != 0, reason="chown of the fake /proc needs root")
def test_a_process_of_another_user_cannot_join_a_job_by_naming_it_in_its_environment(
        tmp_path: Path) -> None:
    from collector.attribution import ProcTree
    from tests.collector.test_attribution import write_host, write_proc

    root = tmp_path / "proc"
    write_host(root, uptime_s=100.0, busy=10, idle=10)
    for pid, uid in ((500, 1001), (600, 1000)):
        write_proc(root, pid, environ={"WATTLENS_JOB": "victim"})
        os.chown(root / str(pid), uid, uid)
    tracker = JobTracker("h", proc=ProcTree(root))
    tracker.record(Progress("victim", samples=1), owner=1000)
    jobs = {n: j.snapshot() for n, j in tracker._jobs.items()}
    assert tracker._proc_jobs(jobs, {0: [500, 600]}) == {500: None, 600: "victim"}
