"""The agent's HTTP under load an attacker can make from one host: memory, threads and /metrics latency.

Starts `wattlens collect --source sim` on loopback, measures RSS, thread count and
/metrics latency idle (the reference, same run), then with 300 connections each
holding an unfinished 60 KiB body, then with 1,700 more holding unfinished
headers (slowloris). Prints each as a ratio to the idle reference.

    python benchmarks/bench_http_attacks.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

TOKEN = "bench-attack-token-0123456789"  # noqa: S105 - a throwaway loopback token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics_s(port: int) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as resp:
        resp.read()
    return time.perf_counter() - start


def _state(proc: psutil.Process, port: int) -> tuple[float, int, float]:
    latency = min(_metrics_s(port) for _ in range(5))
    return proc.memory_info().rss / 2**20, proc.num_threads(), latency


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="wl-bench-"))
    port = _free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", "1", "--gpus", "8",
         "--interval", "0.5", "--prometheus-port", str(port), "--store", f"sqlite:///{tmp / 'w.db'}",
         "--spool-dir", str(tmp / "spool"), "--audit-log", str(tmp / "audit.jsonl"),
         "--ingest-socket", str(tmp / "ingest.sock")],
        env={**os.environ, "WATTLENS_AGENT_TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _metrics_s(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("agent did not start") from None
                time.sleep(0.2)
        proc = psutil.Process(agent.pid)
        time.sleep(1)
        rows = [("idle (reference)", *_state(proc, port))]
        head = (f"POST /v1/jobs/x/progress HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Length: 61440\r\n\r\n").encode()
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head + b"x" * 60_000)
            socks.append(s)
        time.sleep(1)
        rows.append(("300 unfinished 60 KiB bodies", *_state(proc, port)))
        for _ in range(1700):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            socks.append(s)
        time.sleep(1)
        rows.append(("+1,700 slowloris (2,000 held)", *_state(proc, port)))
    finally:
        for s in socks:
            s.close()
        agent.terminate()
        agent.wait(30)
    ref_rss, _ref_threads, ref_latency = rows[0][1:]
    print(f"{'condition':32} {'RSS MiB':>8} {'x ref':>6} {'threads':>8} {'/metrics ms':>12} {'x ref':>6}")
    for name, rss, threads, latency in rows:
        print(f"{name:32} {rss:8.1f} {rss / ref_rss:6.2f} {threads:8d} {latency * 1000:12.1f} "
              f"{latency / ref_latency:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
