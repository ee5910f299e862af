"""Session fixtures for a real Prometheus server and promtool."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, require_binary

_counter = itertools.count(1)


def scrape_config(targets: Sequence[str], scrape_interval_s: float, honor_labels: bool) -> str:
    """A scrape config both Prometheus and VictoriaMetrics (-promscrape.config) read."""
    quoted = ", ".join(f"'{t}'" for t in targets)
    return (
        "global:\n"
        f"  scrape_interval: {scrape_interval_s:g}s\n"
        f"  scrape_timeout: {scrape_interval_s:g}s\n"
        "scrape_configs:\n"
        "  - job_name: wattlens\n"
        + ("    honor_labels: true\n" if honor_labels else "")
        + f"    static_configs:\n      - targets: [{quoted}]\n"
    )


def prometheus_process(root: Path, targets: Sequence[str], scrape_interval_s: float = 1.0,
                       honor_labels: bool = False) -> ServerProcess:
    """A Prometheus server (not started) scraping ``targets`` (host:port) under ``root``.

    ``honor_labels`` keeps the targets' own ``job`` and ``instance`` labels (wattlens'
    job label), as docker/prometheus/prometheus.yml does.
    """
    binary = require_binary("prometheus")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "prometheus.yml"
    config.write_text(scrape_config(targets, scrape_interval_s, honor_labels))
    return ServerProcess(
        name="prometheus",
        argv=[binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
              f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        port=port, data_dir=root, log_path=root / "prometheus.log", ready_path="/-/ready",
    )


def victoria_scrape_process(root: Path, targets: Sequence[str], scrape_interval_s: float = 1.0,
                            honor_labels: bool = False) -> ServerProcess:
    """A VictoriaMetrics (not started) scraping ``targets`` itself (-promscrape.config)."""
    binary = require_binary("victoria-metrics")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "scrape.yml"
    config.write_text(scrape_config(targets, scrape_interval_s, honor_labels))
    return ServerProcess(
        name="victoria-metrics",
        argv=[binary, f"-storageDataPath={root / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
              f"-promscrape.config={config}", "-search.latencyOffset=0s",
              "-search.disableCache", "-loggerLevel=WARN"],
        port=port, data_dir=root, log_path=root / "victoria-metrics.log", ready_path="/health",
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

    def make(targets: Sequence[str], scrape_interval_s: float = 1.0, honor_labels: bool = False,
             engine: str = "prometheus") -> ServerProcess:
        root = tmp_path_factory.mktemp(f"{engine}-{next(_counter)}")
        build = victoria_scrape_process if engine == "victoria-metrics" else prometheus_process
        server = build(root, targets, scrape_interval_s, honor_labels)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
