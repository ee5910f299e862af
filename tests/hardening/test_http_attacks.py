"""Attacks on a running agent (`wattlens collect` as a subprocess) over loopback, each with its exact outcome.

Smuggling (chunked, duplicate Content-Length), 1,000 simultaneous connects,
slowloris, oversized and unfinished bodies, a client that hangs up early,
/v1/cap without NVML, and a PID claim across UIDs over the Unix socket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.servers import free_port

TOKEN = "attack-suite-token-0123456789"
HTTP_TIMEOUT_S = 2.0


@dataclass
class RunningAgent:
    proc: subprocess.Popen[str]
    port: int
    sock: Path
    log: Path

    def request(self, raw: bytes, timeout_s: float = 10.0) -> bytes:
        """Send raw bytes on a fresh connection; everything the agent answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as s:
            s.sendall(raw)
            return _read_all(s)

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return int(resp.status), resp.read()

    def jobs(self) -> list[str]:
        raw = self.request(b"GET /v1/jobs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                           b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        return [j["job"] for j in json.loads(raw.split(b"\r\n\r\n", 1)[1])["jobs"]]

    def rounds(self) -> float:
        _, body = self.get("/metrics")
        match = re.search(rb"^wattlens_agent_rounds_total (\S+)$", body, re.M)
        assert match, "rounds counter missing"
        return float(match.group(1))

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _closed_by_agent(socks: list[socket.socket]) -> int:
    """How many of the connections the agent closed (EOF or reset) within 10x its timeout."""
    closed = 0
    for s in socks:
        s.settimeout(HTTP_TIMEOUT_S * 10)
        try:
            closed += s.recv(1024) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
    return closed


def _responses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


@pytest.fixture(scope="module")
def agent() -> Iterator[RunningAgent]:
    tmp = Path(tempfile.mkdtemp(prefix="wl-atk-"))
    os.chmod(tmp, 0o755)  # noqa: S103 - the throwaway UID must reach the socket inside
    port = free_port()
    log = tmp / "agent.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")},
           "WATTLENS_AGENT_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", "1",
             "--gpus", "2", "--interval", "0.1", "--prometheus-port", str(port),
             "--store", f"sqlite:///{tmp / 'w.db'}", "--spool-dir", str(tmp / "spool"),
             "--audit-log", str(tmp / "audit.jsonl"), "--ingest-socket", str(tmp / "ingest.sock"),
             "--http-timeout", str(HTTP_TIMEOUT_S)],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    running = RunningAgent(proc, port, tmp / "ingest.sock", log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if running.rounds() >= 2:
                break
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "agent did not start"
        time.sleep(0.2)
    try:
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        for path in sorted(tmp.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        tmp.rmdir()


def _post_head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\n{extra}").encode()


SMUGGLED = (b"POST /v1/jobs/smuggled/progress HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
            + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
            b'{"samples": 99}')


def test_a_chunked_body_is_one_request_and_a_request_inside_it_is_never_run(agent: RunningAgent) -> None:
    chunk = SMUGGLED
    raw = (_post_head("/v1/jobs/carrier/progress", "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
           + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
    answer = agent.request(raw)
    assert _responses(answer) == [400]  # one answer: the body (a request) is not JSON
    assert b"body: not valid UTF-8 JSON" in answer
    # A chunked body that is good JSON is read whole, whatever Content-Length claims.
    body = b'{"samples": 7}'
    raw = (_post_head("/v1/jobs/chunked-ok/progress",
                      "Content-Length: 0\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
           + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" + SMUGGLED)
    assert _responses(agent.request(raw)) == [200]
    jobs = agent.jobs()
    assert "chunked-ok" in jobs and "smuggled" not in jobs and "carrier" not in jobs


def test_two_content_lengths_are_refused_and_the_rest_is_not_read_as_a_request(
        agent: RunningAgent) -> None:
    raw = _post_head("/v1/jobs/dup-cl/progress",
                     "Content-Length: 14\r\nContent-Length: 0\r\n\r\n") + b'{"samples": 1}' + SMUGGLED
    assert _responses(agent.request(raw)) == [400]
    assert not {"dup-cl", "smuggled"} & set(agent.jobs())


def test_a_thousand_simultaneous_connects_are_all_served(agent: RunningAgent) -> None:
    socks = [socket.create_connection(("127.0.0.1", agent.port), timeout=60) for _ in range(1000)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        statuses = [(_responses(_read_all(s)) or [0])[0] for s in socks]
    finally:
        for s in socks:
            s.close()
    assert statuses.count(200) == 1000


def test_slowloris_connections_are_closed_after_the_timeout_while_sampling_goes_on(
        agent: RunningAgent) -> None:
    socks = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", agent.port), timeout=30)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Slow: ")  # headers never finished
        socks.append(s)
    try:
        rounds_before = agent.rounds()  # /metrics answers while 200 connections hang
        time.sleep(0.5)
        assert agent.get("/metrics")[0] == 200
        # Every one is closed by the agent, within its timeout plus the cleanup pass.
        assert _closed_by_agent(socks) == 200
        assert agent.rounds() > rounds_before
    finally:
        for s in socks:
            s.close()


def test_a_slowloris_that_keeps_sending_header_lines_is_cut_off_too(agent: RunningAgent) -> None:
    # The classic tool sends one more header line every few seconds, so the connection is never
    # silent: it is closed because its request has not arrived whole within the timeout.
    socks = [socket.create_connection(("127.0.0.1", agent.port), timeout=30) for _ in range(50)]
    alive = set(range(50))
    try:
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
        for i in range(int(HTTP_TIMEOUT_S * 20)):  # at most 20 timeouts, a line every 0.5 s
            time.sleep(0.5)
            for n in sorted(alive):
                try:
                    socks[n].sendall(b"X-Trickle-%d: 1\r\n" % i)
                except OSError:  # reset or broken pipe: the agent closed it
                    alive.discard(n)
            if not alive:
                break
        assert agent.get("/metrics")[0] == 200
    finally:
        for s in socks:
            s.close()
    assert alive == set()


def test_an_oversized_body_is_refused_on_its_headers(agent: RunningAgent) -> None:
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(_post_head("/v1/jobs/big/progress", "Content-Length: 10485760\r\n\r\n"))
        answer = s.recv(4096)  # not a byte of the 10 MiB was sent
    assert _responses(answer) == [413]


def test_unfinished_bodies_are_bounded_in_memory_and_dropped_after_the_timeout(
        agent: RunningAgent) -> None:
    rss_before = agent.rss_bytes()
    socks = []
    for _ in range(300):  # each declares 60 KiB (under the 64 KiB limit) and sends half
        s = socket.create_connection(("127.0.0.1", agent.port), timeout=30)
        s.sendall(_post_head("/v1/jobs/slow-body/progress", "Content-Length: 61440\r\n\r\n")
                  + b"x" * 30720)
        socks.append(s)
    try:
        time.sleep(0.5)
        grown = agent.rss_bytes() - rss_before
        assert grown < 40 * 1024 * 1024, f"RSS grew {grown / 2**20:.1f} MiB"  # 300 x 30 KiB = 9 MiB
        assert agent.get("/metrics")[0] == 200
        assert _closed_by_agent(socks) == 300
    finally:
        for s in socks:
            s.close()
    assert "slow-body" not in agent.jobs()


def test_a_client_hanging_up_early_leaves_no_traceback(agent: RunningAgent) -> None:
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    assert agent.get("/")[0] == 200
    assert "Traceback" not in agent.log.read_text()


def test_cap_on_the_simulated_agent_answers_from_the_simulated_gpus(agent: RunningAgent) -> None:
    # (a host without NVML answers 503 no_nvml: tests/collector/test_actuation.py)
    for body, status in ((b'{"gpu": 0, "watts": 300}', 200),  # a dry run: the plan
                         (b'{"gpu": 0, "watts": 300, "host": "node-99"}', 400),
                         (b'{"gpu": 7, "watts": 300}', 400)):  # no such GPU on node-00
        answer = agent.request(_post_head("/v1/cap", f"Content-Length: {len(body)}\r\n"
                                                     "Connection: close\r\n\r\n") + body)
        assert _responses(answer) == [status], answer[:300]
        payload = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        if status == 200:
            assert payload["dry_run"] and payload["host"] == "node-00" and payload["after_w"] == 300
        else:
            assert payload["error"].startswith(("host:", "gpu index 7"))
    assert "Traceback" not in agent.log.read_text()


CLAIM = r"""
import json, os, socket, sys
path, job, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path)
body = json.dumps({"samples": 1, "pid": pid if pid else os.getpid()}).encode()
s.sendall(b"POST /v1/jobs/%s/progress HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
          b"Connection: close\r\nContent-Length: %d\r\n\r\n" % (job.encode(), len(body)) + body)
print(s.recv(4096).split(b" ")[1].decode())
"""


def _claim_as_nobody(agent: RunningAgent, job: str, pid: int) -> int:
    out = subprocess.run([sys.executable, "-I", "-c", CLAIM, str(agent.sock), job, str(pid)],
                         capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a throwaway UID needs root")
def test_a_pid_claim_across_uids_is_refused_over_the_unix_socket(agent: RunningAgent) -> None:
    assert stat.S_ISSOCK(agent.sock.stat().st_mode)
    assert _claim_as_nobody(agent, "nobody-steals", 1) == 403  # PID 1 is root's
    assert _claim_as_nobody(agent, "nobody-own", 0) == 200  # its own process
    # A job belongs to the UID that first posts to it: root's job is not nobody's to feed.
    body = json.dumps({"samples": 1, "pid": os.getpid()}).encode()
    conn_raw = (b"POST /v1/jobs/roots-job/progress HTTP/1.1\r\nHost: a\r\nContent-Type: "
                b"application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(agent.sock))
        s.sendall(conn_raw)
        assert _responses(_read_all(s)) == [200]
    assert _claim_as_nobody(agent, "roots-job", 0) == 403
    jobs = agent.jobs()
    assert "nobody-own" in jobs and "nobody-steals" not in jobs
    assert "belongs to another user" in agent.log.read_text()
