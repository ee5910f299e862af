"""Where a job's reports go: the agent over HTTP or its Unix socket, or an in-process meter."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger("wattlens.jobs")


class Transport(Protocol):
    mode: str

    def send(self, payload: dict[str, Any]) -> None:
        """Deliver one report; raise OSError (retry later) or ValueError (refused: drop)."""
        ...

    def close(self) -> None: ...


class AgentTransport:
    """Reports to the agent's ingest endpoint over HTTP."""

    mode = "agent"

    def __init__(self, base_url: str, job: str, token: str | None, timeout_s: float) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/jobs/{job}/progress"
        self.token = token
        self.timeout_s = timeout_s

    def send(self, payload: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310 - http(s) URL checked in Job.__init__
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read().decode()).get("error", "")
            except (ValueError, AttributeError, OSError):
                message = ""
            if 400 <= exc.code < 500 and exc.code != 429:
                raise ValueError(f"agent refused the report (HTTP {exc.code}): {message}") from None
            raise OSError(f"agent answered HTTP {exc.code}: {message}") from None
        except urllib.error.URLError as exc:
            raise OSError(f"agent at {self.url} unreachable: {exc.reason}") from None

    def close(self) -> None:
        pass


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the agent's Unix socket (the kernel tells the agent which user posts)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SocketTransport:
    """Reports to the agent over its Unix socket: no token, the agent checks who posts."""

    mode = "agent"

    def __init__(self, path: str, job: str, timeout_s: float) -> None:
        self.path = path
        self.target = f"/v1/jobs/{job}/progress"
        self.timeout_s = timeout_s

    def send(self, payload: dict[str, Any]) -> None:
        conn = UnixConnection(self.path, self.timeout_s)
        try:
            conn.request("POST", self.target, body=json.dumps(payload).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:
            raise OSError(f"agent socket {self.path} unreachable: {exc}") from None
        finally:
            conn.close()
        if resp.status < 300:
            return
        try:
            message = json.loads(raw.decode()).get("error", "")
        except (ValueError, AttributeError):
            message = ""
        if 400 <= resp.status < 500 and resp.status != 429:
            raise ValueError(f"agent refused the report (HTTP {resp.status}): {message}")
        raise OSError(f"agent answered HTTP {resp.status}: {message}")

    def close(self) -> None:
        pass


class JobsOnly:
    """A sink that passes only ``job`` points to the store: this process measures for its job only."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def write(self, points: Sequence[Any]) -> None:
        jobs = [p for p in points if p.measurement == "job"]
        if jobs:
            self.store.write(jobs)

    def close(self) -> None:
        self.store.close()


class LocalTransport:
    """No agent: sample this machine's power in-process and write job points to a store."""

    mode = "standalone"

    def __init__(self, job: str, store_url: str, host: str, interval_s: float) -> None:
        from collector.agent import Agent
        from collector.ingest import with_jobs
        from collector.store import open_store

        try:
            from collector.sources.autodetect import autodetect
        except ImportError:  # sensors not installed: the CPU estimate is always there
            from collector.sources.cpu_estimate import CpuEstimateSource

            found: list[Any] = [CpuEstimateSource(host=host)]
        else:
            found, lines = autodetect(host, interval_s=interval_s)
            log.info("wattlens job: measuring in-process: %s", "; ".join(lines))
        self.job = job
        self.sources, self.tracker = with_jobs(found, host)
        self.store = open_store(store_url)
        self.agent = Agent(self.sources, JobsOnly(self.store), interval_s)
        # The baseline round here, before the job runs: the meter's thread may first run long
        # after (a loaded machine, a job holding the GIL), and what its sources did not see
        # begin cannot be measured: a 1 s job on a loaded CI machine got 0 J.
        self.agent.sample_once()
        self.thread = threading.Thread(target=self.agent.run, name="wattlens-job-meter",
                                       daemon=True)
        self.thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        from collector.ingest import parse_progress

        # The same validation as the agent's endpoint: one contract, wherever the report goes.
        self.tracker.record(parse_progress(self.job, json.dumps(payload).encode()))

    def close(self) -> None:
        self.agent.stop()
        self.thread.join(30)
        try:
            # One more round after the final report, so its last interval is written. A job
            # that ended before the meter's first round needs two: the first sets baselines.
            points: list[Any] = []
            for attempt in range(2):
                points = [p for p in self.agent.sample_once() if p.measurement == "job"]
                if points or attempt:
                    break
                time.sleep(0.05)
            if points:
                self.store.write(points)
        finally:
            for s in self.sources:
                with contextlib.suppress(Exception):
                    s.close()
            self.store.close()
