"""Session fixtures for real InfluxDB 1.6 and VictoriaMetrics servers on free loopback ports."""

from __future__ import annotations

import itertools
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, require_binary

_db_counter = itertools.count(1)


def influxdb_config(template: str, data_dir: Path, http_port: int, rpc_port: int) -> str:
    """Rewrite ``influxd config`` output: private data paths, loopback ports, no phoning home."""
    out: list[str] = []
    section = ""
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]")
            out.append(line)
            continue
        key = stripped.split("=", 1)[0].strip()
        if section == "" and key in ("reporting-enabled", "reporting-disabled"):
            line = "reporting-disabled = true"
        elif section == "" and key == "bind-address":
            line = f'bind-address = "127.0.0.1:{rpc_port}"'
        elif section == "meta" and key == "dir":
            line = f'  dir = "{data_dir / "meta"}"'
        elif section == "data" and key == "dir":
            line = f'  dir = "{data_dir / "data"}"'
        elif section == "data" and key == "wal-dir":
            line = f'  wal-dir = "{data_dir / "wal"}"'
        elif section == "data" and key == "query-log-enabled":
            line = "  query-log-enabled = false"
        elif section == "monitor" and key == "store-enabled":
            line = "  store-enabled = false"  # no _internal database writing in the background
        elif section == "http" and key == "bind-address":
            line = f'  bind-address = "127.0.0.1:{http_port}"'
        elif section == "http" and key == "log-enabled":
            line = "  log-enabled = false"
        out.append(line)
    text = "\n".join(out) + "\n"
    if "reporting-disabled" not in text:
        text = "reporting-disabled = true\n" + text
    return text


def influxdb_process(root: Path, port: int | None = None) -> ServerProcess:
    """An InfluxDB 1.x server (not started) keeping its data, config and log under ``root``.

    Start, kill and start it again: it comes back on the same port with the same data.
    """
    binary = require_binary("influxd")
    root.mkdir(parents=True, exist_ok=True)
    http_port = port or free_port()
    rpc_port = free_port()
    template = subprocess.run([binary, "config"], check=True, capture_output=True,
                              text=True).stdout
    conf = root / "influxdb.conf"
    conf.write_text(influxdb_config(template, root, http_port, rpc_port))
    return ServerProcess(
        name="influxd", argv=[binary, "-config", str(conf)], port=http_port, data_dir=root,
        log_path=root / "influxd.log", ready_path="/ping", ready_status=204,
        extra_ports=(rpc_port,),
    )


def influx_query(server: ServerProcess, statement: str, db: str = "") -> bytes:
    """Run one InfluxQL statement over HTTP, for test set-up and checks."""
    params = {"q": statement, "epoch": "ns"}
    if db:
        params["db"] = db
    req = urllib.request.Request(server.url + "/query", method="POST",
                                 data=urllib.parse.urlencode(params).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bytes(resp.read())


def victoria_metrics_process(root: Path) -> ServerProcess:
    binary = require_binary("victoria-metrics")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return ServerProcess(
        name="victoria-metrics",
        argv=[binary, f"-storageDataPath={root / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
              "-loggerLevel=WARN"],
        port=port, data_dir=root, log_path=root / "victoria-metrics.log", ready_path="/health",
    )


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One InfluxDB 1.6 for the session; tests take a fresh database each (``influx_url``)."""
    server = influxdb_process(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx_db(influxdb: ServerProcess) -> str:
    """A new, empty database on the session's InfluxDB; its name."""
    name = f"test_{next(_db_counter)}"
    influx_query(influxdb, f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture
def influx_url(influxdb: ServerProcess, influx_db: str) -> str:
    return f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"


@pytest.fixture
def influxdb_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start private InfluxDB servers (for outages and auth); all are stopped afterwards."""
    started: list[ServerProcess] = []

    def make(name: str = "influxdb", *, auth: bool = False,
             max_row_limit: int | None = None) -> ServerProcess:
        server = influxdb_process(tmp_path / name)
        conf = Path(server.argv[-1])
        if auth:
            conf.write_text(conf.read_text().replace("auth-enabled = false",
                                                     "auth-enabled = true"))
        if max_row_limit is not None:
            text, n = re.subn(r"(?m)^(\s*)max-row-limit = \d+$",
                              rf"\g<1>max-row-limit = {max_row_limit}", conf.read_text())
            assert n == 1, "influxd config has no max-row-limit line to set"
            conf.write_text(text)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = victoria_metrics_process(tmp_path_factory.mktemp("victoria-metrics"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
