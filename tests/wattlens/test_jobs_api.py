"""The job API against a real agent (Agent + its HTTP server + ingest) and alone, measuring in-process."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import wattlens
from collector.agent import Agent
from collector.exporter import Exporter
from collector.ingest import IngestApp, JobTracker, with_jobs
from collector.sources.cpu_estimate import CpuEstimateSource
from collector.store.base import AggregateQuery
from collector.store.sqlite import SQLiteStore
from tests.servers import free_port

AGENT_TOKEN = "jobs-api-test-token-0123456"


@dataclass
class LiveAgent:
    agent: Agent
    tracker: JobTracker
    exporter: Exporter
    store: SQLiteStore
    thread: threading.Thread

    @property
    def url(self) -> str:
        return self.exporter.url

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every reported job has had its last point, then stop and flush the agent."""
        wait_for(lambda: self.tracker.active_jobs() == [], "jobs' last points", timeout_s)
        self.agent.stop()
        self.thread.join(30)


@contextlib.contextmanager
def live_agent(tmp_path: Path, interval_s: float = 0.1) -> Iterator[LiveAgent]:
    """A real agent on this host: CPU estimate energy, job tracking, HTTP server with ingest."""
    store = SQLiteStore(tmp_path / "agent.db")
    sources, tracker = with_jobs([CpuEstimateSource(host="node-1")], "node-1")
    agent = Agent(sources, store, interval_s)
    # Jobs reach it as they would a real one: its Unix socket by default, TCP with its token.
    sock = Path(tempfile.mkdtemp(prefix="wl-")) / "ingest.sock"  # Unix paths are <108 bytes
    exporter = Exporter(agent.stats, host="127.0.0.1", port=0, token=AGENT_TOKEN, unix_socket=sock)
    agent.observers.append(exporter)
    IngestApp(tracker, token=AGENT_TOKEN, socket_path=str(sock)).mount(exporter)
    exporter.start()
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    saved = {k: os.environ.get(k) for k in ("WATTLENS_AGENT_TOKEN", "WATTLENS_AGENT_SOCKET")}
    os.environ.update({"WATTLENS_AGENT_TOKEN": AGENT_TOKEN, "WATTLENS_AGENT_SOCKET": str(sock)})
    try:
        yield LiveAgent(agent, tracker, exporter, store, thread)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        agent.stop()
        thread.join(30)
        exporter.stop()
        store.close()
        sock.parent.rmdir()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)


def job_sums(store: SQLiteStore, job: str) -> dict[str, float]:
    fields = ("samples", "tokens", "steps", "flops", "energy_j", "active_s")
    rows = store.query(AggregateQuery("job", tuple(("sum", f) for f in fields), 0, 2**62,
                                      where={"job": job}))
    return {f: (rows[0].values.get(f"sum_{f}") or 0.0) if rows else 0.0 for f in fields}


def busy_work(seconds: float) -> float:
    """Real CPU work for the in-process meter to see."""
    end = time.monotonic() + seconds
    x = 0.0
    while time.monotonic() < end:
        x += sum(math.sqrt(i) for i in range(2000))
    return x


def test_counts_reach_the_agent_in_few_reports_with_their_metadata(tmp_path: Path) -> None:
    with live_agent(tmp_path) as live:
        with wattlens.job("bert-ft", batch_size=64, precision="bf16", tags={"team": "nlp"},
                          planned_samples=64_000, flush_interval_s=0.2) as job:  # the socket
            assert job.mode == "agent"
            for _ in range(2000):
                job.step(samples=64, tokens=64 * 128, flops=1e9)
            busy_work(1.0)  # rounds enough for a CPU share after the pid is known, even loaded
            job.add(samples=1)
        live.drain()
        sums = job_sums(live.store, "bert-ft")
        assert job.totals == {"samples": 2000 * 64 + 1, "tokens": 2000 * 64 * 128, "steps": 2000,
                              "flops": 2000 * 1e9}
        assert {k: sums[k] for k in job.totals} == job.totals
        # 2000 steps, a handful of reports: counting does no I/O, the flush thread does.
        assert live.tracker.reports_accepted < 20
        assert sums["active_s"] > 0 and sums["energy_j"] > 0
        rows = live.store.query(AggregateQuery(
            "job", (("max", "batch_size"), ("max", "planned_samples")), 0, 2**62,
            group_by=("precision", "team", "kind"), where={"job": "bert-ft"}))
        assert [(r.tags["precision"], r.tags["team"], r.tags["kind"]) for r in rows] == [
            ("bf16", "nlp", "train")]
        assert rows[0].values["max_batch_size"] == 64
        assert rows[0].values["max_planned_samples"] == 64_000


def test_counts_made_while_the_agent_is_away_arrive_once_it_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with live_agent(tmp_path) as live:
        job = wattlens.job("resilient", agent_url=live.url, flush_interval_s=0.1).start()
        job.step(samples=10)
        wait_for(lambda: live.tracker.reports_accepted >= 2, "first counts")
        live.exporter.server.stop()  # the agent's HTTP server goes away (restart, upgrade)
        with caplog.at_level(logging.WARNING, logger="wattlens.jobs"):
            job.step(samples=5)
            wait_for(lambda: "report failed, will retry" in caplog.text, "a failed report")
            job.step(samples=7)
            live.exporter.server.start()  # same port
            wait_for(lambda: live.tracker.reports_accepted >= 3, "the retried report")
        job.finish()
        live.drain()
        assert job_sums(live.store, "resilient")["samples"] == 10 + 5 + 7
        assert job_sums(live.store, "resilient")["steps"] == 3


def test_without_an_agent_the_job_measures_itself_and_writes_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wattlens")  # which sources the meter found
    monkeypatch.setenv("WATTLENS_INTERVAL", "0.2")
    url = f"sqlite:///{tmp_path / 'alone.db'}"
    nobody = f"http://127.0.0.1:{free_port()}"
    with wattlens.job("alone", kind="eval", agent_url=nobody, store_url=url) as job:
        assert job.mode == "standalone"
        for _ in range(5):
            busy_work(0.2)
            job.step(samples=8, tokens=8 * 64)
    store = SQLiteStore(tmp_path / "alone.db")
    try:
        sums = job_sums(store, "alone")
        assert sums["samples"] == 40 and sums["tokens"] == 40 * 64 and sums["steps"] == 5
        # Seen once in a full CI run: energy 0 with the work counted. Say what the meter saw.
        assert sums["energy_j"] > 0 and sums["active_s"] > 0, (
            sums, store.tag_values("job", "method", 0, 2**62), store.count("job"), caplog.text)
        # Only job points: the in-process meter does not pose as a node agent.
        assert store.time_range("cpu") is None and store.time_range("gpu") is None
        kinds = store.tag_values("job", "kind", 0, 2**62)
        assert "eval" in kinds
    finally:
        store.close()


def test_a_meter_thread_that_starts_late_still_measures_from_the_job_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loaded machine the meter's thread may first run after the job's work: its energy
    is still measured from the start (the baseline round is taken before the job runs)."""
    worked = threading.Event()
    run = Agent.run

    def late_run(self: Agent, rounds: int | None = None) -> None:
        worked.wait(30)  # the thread gets no CPU until the work is done
        run(self, rounds)

    monkeypatch.setattr(Agent, "run", late_run)
    monkeypatch.setenv("WATTLENS_INTERVAL", "0.2")
    url = f"sqlite:///{tmp_path / 'late.db'}"
    with wattlens.job("late", kind="eval", agent_url=f"http://127.0.0.1:{free_port()}",
                      store_url=url) as job:
        for _ in range(3):
            busy_work(0.2)
            job.step(samples=8)
        worked.set()
    store = SQLiteStore(tmp_path / "late.db")
    try:
        sums = job_sums(store, "late")
        assert sums["samples"] == 24
        # 0.6 s of busy work: its share of the package's estimated energy is tens of joules.
        assert sums["energy_j"] > 0.6 * 0.2 * 10, sums
    finally:
        store.close()


def test_store_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLENS_INTERVAL", "0.1")
    monkeypatch.setenv("WATTLENS_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("WATTLENS_AGENT_URL", f"http://127.0.0.1:{free_port()}")
    with wattlens.job("env-job") as job:
        job.step(samples=3)
    assert job.mode == "standalone"
    store = SQLiteStore(tmp_path / "env.db")
    try:
        assert job_sums(store, "env-job")["samples"] == 3
    finally:
        store.close()


def test_forcing_agent_mode_without_an_agent_fails_before_training() -> None:
    with pytest.raises(ConnectionError, match="unreachable"):
        wattlens.job("x", agent_url=f"http://127.0.0.1:{free_port()}", mode="agent").start()


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"name": "bad name"}, "job id"),
    ({"name": "ok", "kind": "training"}, "kind"),
    ({"name": "ok", "precision": "fp12"}, "precision"),
    ({"name": "ok", "batch_size": 0}, "batch_size"),
    ({"name": "ok", "gpus": [0, 0]}, "gpus"),
    ({"name": "ok", "tags": {"host": "x"}}, "tags"),
    ({"name": "ok", "agent_url": "ftp://x"}, "agent_url"),
    ({"name": "ok", "mode": "remote"}, "mode"),
    ({"name": "ok", "team": "ml team"}, r"team: .* got 'ml team'"),
    ({"name": "ok", "team": "unattributed"}, "team"),
    ({"name": "ok", "team": 7}, "team: .* got 7"),
    ({"name": "ok", "tags": {"idle_policy": "even"}}, "tags"),
])
def test_bad_arguments_name_the_field(kwargs: dict[str, object], named: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=named):
        wattlens.job(str(name), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf")])
def test_bad_counts_name_the_field(value: float) -> None:
    job = wattlens.Job("counts")
    with pytest.raises(ValueError, match="tokens"):
        job.add(samples=1, tokens=value)
    assert job.totals["samples"] == 0  # nothing half-added
