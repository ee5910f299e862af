"""Session fixtures for a real Prometheus server and promtool."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, require_binary

_counter = itertools.count(1)


def prometheus_process(root: Path, targets: Sequence[str], scrape_interval_s: float = 1.0
                       ) -> ServerProcess:
    """A Prometheus server (not started) scraping ``targets`` (host:port) under ``root``."""
    binary = require_binary("prometheus")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "prometheus.yml"
    quoted = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval_s:g}s\n"
        f"  scrape_timeout: {scrape_interval_s:g}s\n"
        "scrape_configs:\n"
        "  - job_name: wattlens\n"
        f"    static_configs:\n      - targets: [{quoted}]\n"
    )
    return ServerProcess(
        name="prometheus",
        argv=[binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
              f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        port=port, data_dir=root, log_path=root / "prometheus.log", ready_path="/-/ready",
    )


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool; missing is an error (CI installs it), never a skip."""
    return require_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServerProcess]]:
    """Start Prometheus servers scraping given targets; all are stopped at the end of the session."""
    started: list[ServerProcess] = []

    def make(targets: Sequence[str], scrape_interval_s: float = 1.0) -> ServerProcess:
        root = tmp_path_factory.mktemp(f"prometheus-{next(_counter)}")
        server = prometheus_process(root, targets, scrape_interval_s)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
