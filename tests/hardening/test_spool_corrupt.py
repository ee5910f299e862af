"""A damaged spool segment: reported once with counts, no raw bytes in the log, good lines kept."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import pytest

from collector.schema import point, to_line
from collector.spool import SpoolingSink
from collector.store.base import AggregateQuery
from collector.store.sqlite import SQLiteStore


def test_a_segment_of_random_bytes_among_good_lines_is_one_warning_and_the_good_lines_replay(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    good = [to_line(point("gpu", {"host": "h", "gpu": str(i % 8)}, {"power_w": 100.0 + i},
                          1_700_000_000_000_000_000 + i * 1_000_000_000)) for i in range(200)]
    rng = random.Random(7)
    junk = rng.randbytes(4 * 1024 * 1024).replace(b"\n", b"\x00")
    body = ("\n".join(good[:100]) + "\n").encode() + junk + b"\n" + ("\n".join(good[100:]) + "\n").encode()
    (spool / "0000000000000001.lp").write_bytes(body)
    store = SQLiteStore(tmp_path / "s.db")
    with caplog.at_level(logging.INFO):
        sink = SpoolingSink(store, spool, 64 * 1024 * 1024)
        deadline = time.monotonic() + 30
        while sink.depth_points and time.monotonic() < deadline:
            time.sleep(0.05)
        sink.close()
    rows = store.query(AggregateQuery("gpu", (("count", "power_w"),), 0, 2**62))
    store.close()
    assert sum(r.values["count_power_w"] or 0 for r in rows) == 200
    assert sink.points_rejected == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage()[:200] for r in warnings]
    assert "1 of 201 lines are not line protocol" in warnings[0].getMessage()
    assert all(c.isprintable() or c == "\n" for c in caplog.text)
    assert len(caplog.text) < 4096
