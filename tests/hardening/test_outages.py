"""The agent process through repeated InfluxDB outages, scraped by Prometheus clients all along."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures_influx import influx_query
from tests.servers import ServerProcess, free_port, wait_until


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of a /metrics page (enough for the agent's health metrics)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? ([-+.\deEinfNa]+)$", line)
        if m:
            key = m.group(1) + (m.group(2) or "")
            out[key] = float(m.group(3))
    return out


def count(server: ServerProcess, measurement: str, field: str) -> int:
    body = json.loads(influx_query(server, f'SELECT COUNT("{field}") FROM "{measurement}"',
                                   db="wattlens"))
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


@pytest.mark.integration
@pytest.mark.slow
def test_three_outages_lose_nothing_and_metrics_stay_up(
        tmp_path: Path, influxdb_factory: Callable[..., ServerProcess]) -> None:
    server = influxdb_factory("outages")
    port = free_port()
    log = tmp_path / "agent.log"
    agent = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", "1",
         "--gpus", "2", "--interval", "0.5", "--store",
         f"influxdb://127.0.0.1:{server.port}/wattlens?timeout_s=2", "--prometheus-port",
         str(port), "--spool-dir", str(tmp_path / "spool"), "--host", "soak"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: count(server, "gpu", "power_w") >= 4, 60, "first points stored")
        for _ in range(3):
            server.kill()
            wait_until(lambda: scrape(metrics).get("wattlens_spool_points", 0) > 0, 30,
                       "points spooled during the outage")
            during = scrape(metrics)  # Prometheus can still scrape the agent
            assert any(k.startswith("wattlens_gpu_power_watts{") for k in during)
            time.sleep(3)
            server.start()
            wait_until(lambda: scrape(metrics).get("wattlens_spool_points", 1) == 0, 90,
                       "spool drained after the outage")
        rounds_before_stop = scrape(metrics)["wattlens_agent_rounds_total"]
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(60)
    output = log.read_text()
    assert rc == 0, output
    m = re.search(r"stopped: (\d+) rounds, (\d+) points written, (\d+) spooled; lost: (\d+) in the "
                  r"write queue \S+, (\d+) to a full spool \S+, (\d+) refused", output)
    assert m, output
    rounds, _written, spooled, dropped, spool_full, refused = (int(g) for g in m.groups())
    assert rounds >= rounds_before_stop and spooled == 0
    assert dropped == spool_full == refused == 0
    # Every round is stored exactly once: 2 GPU series and 1 carbon series per round.
    assert count(server, "gpu", "power_w") == 2 * rounds
    assert count(server, "carbon", "intensity_g_per_kwh") == rounds
    assert "Traceback" not in output


def test_points_lost_to_a_full_spool_agree_between_the_exit_line_and_metrics(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from wattlens.cli import build_parser
    from wattlens.commands.collect import AgentProcess, build_sources
    from wattlens.config import resolve

    parser = build_parser()
    args = parser.parse_args([
        "collect", "--source", "sim", "--nodes", "1", "--gpus", "8", "--interval", "0.05",
        "--store", f"influxdb://127.0.0.1:{free_port()}/nowhere", "--spool-dir", str(tmp_path / "sp"),
        "--spool-max-mb", "0.02", "--prometheus-port", str(free_port()), "--ingest-socket", "off",
        "--audit-log", str(tmp_path / "audit.jsonl")])
    resolve(args._parser, args, args._section)
    agent = AgentProcess.build(args, build_sources(args))
    thread = agent.start_background()
    try:
        wait_until(lambda: agent.spool.points_dropped > 0, 60, "a full spool dropping points")
    finally:
        agent.agent.stop()
        thread.join(30)
    exposition = agent.exporter.render()[0].decode()
    metrics = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in exposition.splitlines() if line and not line.startswith("#")}
    with caplog.at_level(logging.INFO, logger="wattlens.collect"):
        agent.close()
    m = re.search(r"lost: (\d+) in the write queue \S+, (\d+) to a full spool \S+, (\d+) refused",
                  caplog.text)
    assert m, caplog.text
    queue, spool_full, refused = (int(g) for g in m.groups())
    assert spool_full > 0
    assert spool_full == metrics["wattlens_spool_dropped_points_total"]
    assert queue == metrics["wattlens_agent_dropped_points_total"]
    assert refused == metrics["wattlens_spool_rejected_points_total"]
