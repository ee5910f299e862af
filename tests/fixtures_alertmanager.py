"""Session fixture for a real Alertmanager (Debian's prometheus-alertmanager) on a free loopback port."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServerProcess, free_port, require_binary


class Alertmanager(ServerProcess):
    """A running Alertmanager with a helper to read its alerts through API v2."""

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the active alerts (resolved ones are not listed)."""
        query = "&".join(f"filter={k}%3D%22{v}%22" for k, v in filters.items())
        url = f"{self.url}/api/v2/alerts" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            data: list[dict[str, Any]] = json.loads(resp.read())
        return data


def alertmanager_process(root: Path) -> Alertmanager:
    """An Alertmanager (not started) with one no-op receiver, its data under ``root``."""
    binary = require_binary("prometheus-alertmanager")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    return Alertmanager(
        name="alertmanager",
        argv=[binary, f"--storage.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
              "--cluster.listen-address=", f"--config.file={config}", "--log.level=warn"],
        port=port, data_dir=root, log_path=root / "alertmanager.log", ready_path="/-/ready",
    )


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """A real Alertmanager for the session; a missing binary fails the test, never skips it."""
    server = alertmanager_process(tmp_path_factory.mktemp("alertmanager"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
