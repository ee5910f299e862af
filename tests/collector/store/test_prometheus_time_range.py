"""time_range on a real VictoriaMetrics when every sample is newer than the last minute step.

A session that starts and ends within one minute has no sample at any minute step the
engine answers (VictoriaMetrics hides the newest samples from queries, 30 s by default);
time_range must still find the first and last sample, not report an empty store.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store import open_store
from tests.fixtures_influx import victoria_metrics_process
from tests.servers import ServerProcess

pytestmark = [pytest.mark.integration]

NS = 1_000_000_000


@pytest.fixture
def vm_no_offset(tmp_path: Path) -> Iterator[ServerProcess]:
    server = victoria_metrics_process(tmp_path / "vm")
    server.argv.append("-search.latencyOffset=0s")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_samples_all_after_the_last_minute_step(vm_no_offset: ServerProcess) -> None:
    if time.time() % 60 > 50:  # leave room for ten samples after the minute
        time.sleep(61 - time.time() % 60)
    minute = int(time.time()) // 60 * 60
    while time.time() < minute + 6:
        time.sleep(0.2)
    # Even with no latency offset, VictoriaMetrics does not answer for its last second: here a
    # sample 0.8 s old was never seen by a query at "now", one 1.2 s old always (50 tries each).
    stamps = [minute + 1 + k * 0.25 for k in range(12) if minute + 1 + k * 0.25 < time.time() - 2.5]
    lines = [f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{Hostname="node-00",gpu="0"}} {k * 1000} '
             f'{round(t * 1000)}' for k, t in enumerate(stamps)]
    url = vm_no_offset.url
    urllib.request.urlopen(urllib.request.Request(
        url + "/api/v1/import/prometheus", data="\n".join(lines).encode()), timeout=30).read()
    urllib.request.urlopen(url + "/internal/force_flush", timeout=30).read()
    store = open_store(f"prometheus://127.0.0.1:{vm_no_offset.port}?mapping=dcgm-exporter")
    assert time.time() < minute + 60, "the check must run within the samples' minute"
    assert store.time_range("gpu") == (round(stamps[0] * 1000) * 1_000_000,
                                       round(stamps[-1] * 1000) * 1_000_000)
