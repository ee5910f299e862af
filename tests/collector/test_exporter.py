"""The Prometheus exporter: values and units, promtool's lint, a real Prometheus scraping it, extra routes."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.agent import Agent, AgentStats
from collector.exporter import Exporter, Request, Response
from collector.schema import point
from collector.sources.simulated import SimulatedFleet
from collector.spool import SpoolingSink
from collector.store.sqlite import SQLiteStore
from tests.servers import ServerProcess, wait_until

NS = 1_000_000_000
T0 = 1_795_000_000 * NS
GPU = {"host": "n1", "gpu": "0", "uuid": "GPU-1", "model": "H100", "method": "counter"}


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exp = Exporter(AgentStats(), port=0)
    exp.start()
    try:
        yield exp
    finally:
        exp.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # An empty label is no label in Prometheus (job series off Kubernetes have namespace="").
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_gauges_in_base_units_and_counters_that_accumulate(exporter: Exporter) -> None:
    for k in range(3):
        exporter([
            point("gpu", GPU, {"power_w": 300.0 + k, "energy_j": 150.0, "util_pct": 50.0,
                               "sm_clock_mhz": 1500.0, "temp_c": 60.0}, T0 + k * NS),
            point("cpu", {"host": "n1", "domain": "package-0"}, {"power_w": 90.0,
                                                                 "energy_j": 45.0}, T0),
            point("job", {"job": "llm", "host": "n1", "kind": "train"},
                  {"samples": 10.0, "tokens": 4096.0, "energy_j": 300.0, "flops": 1e15,
                   "gpus": 8.0}, T0 + k * NS),
        ])
    status, body, headers = _get(exporter.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    got = _samples(body.decode())
    gpu = tuple(sorted({k: v for k, v in GPU.items() if k != "method"}.items()))
    assert got[("wattlens_gpu_power_watts", gpu)] == 302.0
    assert got[("wattlens_gpu_utilization_ratio", gpu)] == 0.5
    assert got[("wattlens_gpu_sm_clock_hertz", gpu)] == 1.5e9
    assert got[("wattlens_gpu_temperature_celsius", gpu)] == 60.0
    assert got[("wattlens_gpu_energy_joules_total", gpu)] == 450.0
    cpu = (("domain", "package-0"), ("host", "n1"))
    assert got[("wattlens_cpu_energy_joules_total", cpu)] == 135.0
    job = (("host", "n1"), ("job", "llm"))  # only bounded identity labels
    assert got[("wattlens_job_samples_total", job)] == 30.0
    assert got[("wattlens_job_tokens_total", job)] == 3 * 4096.0
    assert got[("wattlens_job_flops_total", job)] == 3e15
    assert got[("wattlens_job_energy_joules_total", job)] == 900.0
    assert got[("wattlens_job_gpus", job)] == 8.0
    assert got[("wattlens_agent_rounds_total", ())] == 0.0


def test_bad_values_never_reach_a_counter(exporter: Exporter) -> None:
    exporter([point("gpu", GPU, {"energy_j": 10.0}, T0)])
    exporter([point("gpu", GPU, {"energy_j": -5.0, "power_w": "n/a"}, T0 + NS)])
    got = _samples(exporter.render()[0].decode())
    assert [v for (n, _), v in got.items() if n == "wattlens_gpu_energy_joules_total"] == [10.0]
    assert not [n for (n, _) in got if n == "wattlens_gpu_power_watts"]


def test_every_metric_has_help_and_unit_in_openmetrics(tmp_path: Path) -> None:
    spool = SpoolingSink(SQLiteStore(tmp_path / "w.db"), tmp_path / "spool", 1 << 20)
    exp = Exporter(AgentStats(), spool, port=0)
    exp(SimulatedFleet(nodes=1, gpus_per_node=2).points_between(T0, T0 + 10 * NS))
    body, content_type = exp.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(families) > 30
    for fam in families:
        assert f"# HELP {fam} " in text, fam
        assert f"# UNIT {fam} " in text, fam
        assert fam.startswith("wattlens_")
    assert "wattlens_spool_points" in families and "wattlens_agent_queue_batches" in families
    spool.close()


def test_stale_devices_and_idle_jobs_leave_the_exposition() -> None:
    now = [0.0]
    exp = Exporter(AgentStats(), port=0, stale_after_s=60, counter_idle_s=600)
    exp.collector.clock = lambda: now[0]
    exp([point("gpu", GPU, {"power_w": 1.0, "energy_j": 1.0}, T0)])
    now[0] = 120.0
    names = {n for (n, _) in _samples(exp.render()[0].decode())}
    assert "wattlens_gpu_power_watts" not in names  # a gone GPU stops reporting power
    assert "wattlens_gpu_energy_joules_total" in names  # its counter lingers a while
    now[0] = 1000.0
    names = {n for (n, _) in _samples(exp.render()[0].decode())}
    assert "wattlens_gpu_energy_joules_total" not in names


def test_series_are_bounded() -> None:
    exp = Exporter(AgentStats(), port=0, max_series=10)
    exp([point("job", {"job": f"j{i}", "host": "h"}, {"samples": 1.0}, T0) for i in range(50)])
    got = _samples(exp.render()[0].decode())
    assert sum(1 for (n, _) in got if n == "wattlens_job_samples_total") == 10
    assert got[("wattlens_exporter_dropped_series_total", ())] == 40.0


def test_more_routes_mount_on_the_same_server(exporter: Exporter) -> None:
    seen: list[Request] = []

    def progress(request: Request) -> Response:
        seen.append(request)
        return Response(202, b'{"ok": true}', "application/json")

    exporter.route("POST", "/v1/jobs/{id}/progress", progress)
    req = urllib.request.Request(exporter.url + "/v1/jobs/run%2F7/progress?x=1", method="POST",
                                 data=b'{"samples": 3}',
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202 and json.loads(resp.read()) == {"ok": True}
    assert seen[0].params == {"id": "run/7"} and seen[0].body == b'{"samples": 3}'
    assert seen[0].query == {"x": ["1"]}
    assert _get(exporter.url + "/v1/jobs/a/progress")[0] == 405
    assert _get(exporter.url + "/nope")[0] == 404
    # A body above the limit is refused on its headers, before a byte of it is read.
    with socket.create_connection(("127.0.0.1", exporter.server.port), timeout=10) as s:
        s.sendall(b"POST /v1/jobs/a/progress HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")
    status, body, _ = _get(exporter.url + "/")
    assert status == 200 and b"/metrics" in body


def test_binds_loopback_by_default() -> None:
    exp = Exporter(AgentStats())
    assert exp.url == "http://127.0.0.1:9464"


@pytest.mark.integration
def test_promtool_finds_nothing_to_complain_about(promtool: str, tmp_path: Path) -> None:
    spool = SpoolingSink(SQLiteStore(tmp_path / "w.db"), tmp_path / "spool", 1 << 20)
    exp = Exporter(AgentStats(), spool, port=0)
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4)
    exp(fleet.points_between(T0, T0 + 10 * NS))
    exp(fleet.points_between(T0 + 10 * NS, T0 + 20 * NS))
    body, _ = exp.render()
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    spool.close()


def _query(prom: ServerProcess, expr: str) -> list[dict[str, object]]:
    url = f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success"
    result: list[dict[str, object]] = body["data"]["result"]
    return result


@pytest.mark.integration
@pytest.mark.slow
def test_prometheus_scrapes_power_and_a_rising_energy_counter(
        prometheus_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    agent = Agent([SimulatedFleet(nodes=1, gpus_per_node=4, seed=3)], store, 0.5)
    exp = Exporter(agent.stats, port=0)
    agent.observers.append(exp)
    exp.start()
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        prom = prometheus_factory([f"127.0.0.1:{exp.server.port}"], scrape_interval_s=1)

        def target_up() -> bool:
            return any(r["value"][1] == "1" for r in _query(prom, "up"))  # type: ignore[index]

        wait_until(target_up, 60, "Prometheus scraping the exporter")
        time.sleep(10)  # about ten scrapes
        power = _query(prom, "wattlens_gpu_power_watts")
        assert len(power) == 4
        assert {r["metric"]["gpu"] for r in power} == {"0", "1", "2", "3"}  # type: ignore[index]
        rising = _query(prom, "increase(wattlens_gpu_energy_joules_total[30s]) > 0")
        assert len(rising) == 4
        # Prometheus parsed the OpenMetrics exposition, units and all.
        meta = json.loads(urllib.request.urlopen(
            f"{prom.url}/api/v1/metadata?metric=wattlens_gpu_energy_joules", timeout=10).read())
        assert meta["data"]["wattlens_gpu_energy_joules"][0]["unit"] == "joules"
        assert _query(prom, "wattlens_agent_rounds_total > 10")
    finally:
        agent.stop()
        runner.join(30)
        exp.stop()
        store.close()


def test_a_second_agent_on_the_same_socket_never_takes_or_removes_the_first_ones() -> None:
    import tempfile
    from pathlib import Path

    from collector.http_server import RouteServer

    sock = Path(tempfile.mkdtemp(prefix="wl-")) / "ingest.sock"
    first = RouteServer(unix_socket=sock)
    first.start()
    try:
        optional = RouteServer(unix_socket=sock, unix_optional=True)
        optional.start()  # goes on without local ingest
        assert optional.unix_socket is None
        optional.stop()
        required = RouteServer(unix_socket=sock)
        with pytest.raises(OSError, match="another agent is listening"):
            required.start()
        assert sock.exists()  # still the first agent's
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(sock))
        probe.close()
    finally:
        first.stop()
    assert not sock.exists()
    sock.parent.rmdir()


def test_the_socket_is_never_made_in_a_folder_others_can_write() -> None:
    import os
    import tempfile
    from pathlib import Path

    from collector.http_server import RouteServer

    folder = Path(tempfile.mkdtemp(prefix="wl-"))
    os.chmod(folder, 0o777)  # noqa: S103 - the squatted folder under test
    server = RouteServer(unix_socket=folder / "ingest.sock")
    with pytest.raises(OSError, match="writable by no one else"):
        server.start()
    assert not (folder / "ingest.sock").exists()
    folder.rmdir()
