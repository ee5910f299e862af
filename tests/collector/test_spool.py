"""The durable spool: outages, bounds, rejects, restarts; and an agent riding out a real InfluxDB outage."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.agent import Agent
from collector.errors import ConfigError, StoreRejected, StoreUnavailable
from collector.schema import Point, escape_key, point, to_line
from collector.sources.base import Probe, Tick
from collector.spool import SpoolingSink, parse_line
from collector.store.influx import InfluxStore
from collector.store.sqlite import SQLiteStore
from tests.fixtures_influx import influx_query
from tests.servers import ServerProcess, wait_until

NS = 1_000_000_000
T0 = 1_795_000_000 * NS


class MemorySink:
    """A sink that can be switched down or made to refuse some points, recording who called it."""

    def __init__(self, reject: Callable[[Point], bool] = lambda p: False) -> None:
        self.points: list[Point] = []
        self.down = False
        self.accept_max: int | None = None  # goes down after accepting this many points
        self.reject = reject
        self.callers: list[str] = []
        self.lock = threading.Lock()

    def write(self, points: Sequence[Point]) -> None:
        with self.lock:
            self.callers.append(threading.current_thread().name)
            if self.down or (self.accept_max is not None
                             and len(self.points) + len(points) > self.accept_max):
                raise StoreUnavailable("down for the test")
            bad = [p for p in points if self.reject(p)]
            if bad:
                raise StoreRejected(f"{len(bad)} bad points")
            self.points.extend(points)

    def close(self) -> None:
        pass


def _pts(n: int, start: int = 0, host: str = "h") -> list[Point]:
    return [point("gpu", {"host": host, "gpu": str(i % 4)},
                  {"power_w": 100.0 + i, "energy_j": 0.5}, T0 + i * NS)
            for i in range(start, start + n)]


def _spool(inner: object, path: Path, max_bytes: int = 1 << 20, **kw: object) -> SpoolingSink:
    options: dict[str, object] = {"retry_initial_s": 0.05, "retry_max_s": 0.2, **kw}
    return SpoolingSink(inner, path, max_bytes, **options)  # type: ignore[arg-type]


def _writable(text: str) -> bool:
    try:
        escape_key(text)
    except ValueError:
        return False
    return "\n" not in text and "\r" not in text


names = st.text(min_size=1, max_size=12).filter(_writable)
values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                   st.text(max_size=12).filter(lambda s: "\n" not in s and "\r" not in s))


@settings(max_examples=200)
@given(st.dictionaries(names, names, max_size=4), st.dictionaries(names, values, min_size=1,
                                                                   max_size=4),
       st.integers(0, 2**62))
def test_spool_lines_read_back_as_the_same_points(tags: dict[str, str],
                                                  fields: dict[str, object], t: int) -> None:
    p = point("m x,y", tags, fields, t)  # type: ignore[arg-type]
    assert parse_line(to_line(p)) == p
    raw = Point("m", (("k", "v"),), (("n", 7),), 1)  # ints survive too, as InfluxDB integers
    assert parse_line(to_line(raw)) == raw


def test_parse_line_names_the_bad_line() -> None:
    with pytest.raises(ValueError, match="line protocol 'gpu,host=h power_w=abc 1'"):
        parse_line("gpu,host=h power_w=abc 1")


def test_healthy_writes_go_straight_to_the_store(tmp_path: Path) -> None:
    inner = MemorySink()
    sink = _spool(inner, tmp_path / "spool")
    for k in range(5):
        sink.write(_pts(10, 10 * k))
    assert inner.points == _pts(50)
    assert sink.depth_points == 0 and sink.points_delivered == 50 and sink.points_spooled == 0
    assert not list((tmp_path / "spool").iterdir())
    assert sink.last_good_write_wall_s > 0
    sink.close()


def test_outage_is_spooled_then_replayed_in_order_exactly_once(tmp_path: Path) -> None:
    inner = MemorySink()
    sink = _spool(inner, tmp_path / "spool")
    inner.down = True
    for k in range(50):
        sink.write(_pts(10, 10 * k))
    # While spooling, the caller never waits on the store: only the first write tried it.
    assert inner.callers.count(threading.current_thread().name) == 1
    assert sink.depth_points == 500 and sink.depth_bytes > 0 and sink.write_errors >= 1
    inner.down = False
    assert sink.flush(30)
    assert inner.points == _pts(500)  # every point, once, in order
    assert sink.points_replayed == 500 and sink.depth_points == 0 and sink.depth_bytes == 0
    assert not list((tmp_path / "spool").iterdir())
    sink.write(_pts(1, 500))  # and back to direct writes
    assert inner.callers[-1] == threading.current_thread().name
    sink.close()


def test_a_full_spool_drops_the_oldest_counts_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inner = MemorySink()
    inner.down = True
    max_bytes = 32 * 1024
    sink = _spool(inner, tmp_path / "spool", max_bytes, segment_bytes=4096)
    total = 2000
    for k in range(total // 20):
        sink.write(_pts(20, 20 * k))
        assert sink.depth_bytes <= max_bytes
    assert sink.points_dropped > 0
    assert sum("is full" in r.getMessage() for r in caplog.records) == 1
    inner.down = False
    assert sink.flush(30)
    delivered = [p.time_ns for p in inner.points]
    assert len(delivered) + sink.points_dropped == total
    # What survived is the newest, contiguous, in order.
    assert delivered == [T0 + t * NS for t in range(total - len(delivered), total)]
    sink.close()


def test_rejected_points_are_isolated_and_dropped_not_retried(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inner = MemorySink(reject=lambda p: p.tag("host") == "bad")
    sink = _spool(inner, tmp_path / "spool")
    batch = _pts(40) + _pts(3, 100, host="bad") + _pts(40, 200)
    sink.write(batch)
    assert [p.tag("host") for p in inner.points] == ["h"] * 80
    assert sink.points_rejected == 3 and sink.depth_points == 0
    # The same through the replay path.
    inner.down = True
    sink.write(_pts(5, 300) + _pts(2, 400, host="bad"))
    inner.down = False
    assert sink.flush(30)
    assert len(inner.points) == 85 and sink.points_rejected == 5
    assert "store rejected 1 point(s), dropped: 1 bad points" in caplog.text
    sink.close()


def test_the_spool_survives_a_restart(tmp_path: Path) -> None:
    inner = MemorySink()
    inner.down = True
    first = _spool(inner, tmp_path / "spool", close_timeout_s=0.5)
    for k in range(30):
        first.write(_pts(10, 10 * k))
    first.close()  # the store is still down: everything stays on disk
    segments = sorted((tmp_path / "spool").glob("*.lp"))
    assert segments
    with segments[-1].open("ab") as fh:  # the process died in the middle of an append
        fh.write(b"gpu,host=h power_w=1")
    again = MemorySink()
    second = _spool(again, tmp_path / "spool")
    assert second.flush(30)
    assert again.points == _pts(300)
    second.close()


def test_a_restart_replays_only_what_was_not_acknowledged(tmp_path: Path) -> None:
    inner = MemorySink()
    inner.down = True
    sink = _spool(inner, tmp_path / "spool", replay_batch_points=25, close_timeout_s=0.5)
    for k in range(20):
        sink.write(_pts(10, 10 * k))
    inner.down = False
    inner.accept_max = 100  # the store takes four replay chunks, then goes down again
    wait_until(lambda: len(inner.points) == 100 and sink.write_errors >= 2, 30, "partial replay")
    sink.close()
    again = MemorySink()
    second = _spool(again, tmp_path / "spool")
    assert second.flush(30)
    assert inner.points + again.points == _pts(200)  # each point exactly once
    second.close()


def test_replays_into_a_real_sqlite_store_that_was_locked(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    store = SQLiteStore(db, timeout_s=0.05)
    sink = _spool(store, tmp_path / "spool")
    sink.write(_pts(10))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    for k in range(1, 20):
        sink.write(_pts(10, 10 * k))
    assert sink.depth_points > 0
    blocker.execute("ROLLBACK")
    blocker.close()
    assert sink.flush(30)
    assert store.count("gpu") == 200
    sink.close()


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        SpoolingSink(MemorySink(), tmp_path, 10)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="spool dir"):
        SpoolingSink(MemorySink(), tmp_path / "file" / "spool", 1 << 20)


class TickSource:
    """Three GPUs and a job per round, stamped with the round's time; remembers every stamp."""

    name = "ticks"

    def __init__(self) -> None:
        self.stamps: list[int] = []

    def probe(self) -> Probe:
        return Probe.found("test source")

    def sample(self, tick: Tick) -> list[Point]:
        self.stamps.append(tick.wall_ns)
        return [point("gpu", {"host": "h", "gpu": str(g)}, {"power_w": 100.0 + g,
                                                           "energy_j": 1.0}, tick.wall_ns)
                for g in range(3)] + [point("job", {"job": "j", "host": "h"},
                                            {"samples": 1.0}, tick.wall_ns)]

    def close(self) -> None:
        pass


@pytest.mark.integration
@pytest.mark.slow
def test_agent_rides_out_an_influxdb_outage(tmp_path: Path,
                                            influxdb_factory: Callable[..., ServerProcess]) -> None:
    server = influxdb_factory("outage")
    influx_query(server, 'CREATE DATABASE "outage"')
    store = InfluxStore(f"influxdb://127.0.0.1:{server.port}/outage?timeout_s=2")
    spool = SpoolingSink(store, tmp_path / "spool", 64 << 20, retry_initial_s=0.2,
                         retry_max_s=1.0)
    source = TickSource()
    interval_s = 0.25
    agent = Agent([source], spool, interval_s)
    runner = threading.Thread(target=agent.run)
    started = time.monotonic()
    runner.start()
    wait_until(lambda: agent.stats.rounds >= 8, 30, "first rounds")
    server.kill()  # SIGKILL: no goodbye
    wait_until(lambda: spool.depth_points > 0, 30, "spooling")
    time.sleep(20)
    assert spool.depth_points >= 60 * 4  # the agent kept sampling into the spool
    server.start()  # same port, same data directory
    wait_until(lambda: spool.depth_points == 0 and spool.points_replayed > 0, 60, "replay")
    time.sleep(1.0)
    stopped = time.monotonic()
    agent.stop()
    runner.join(60)
    assert spool.flush(30)
    spool.close()

    rounds = agent.stats.rounds
    assert len(source.stamps) == rounds
    assert abs(rounds - (stopped - started) / interval_s) <= 1  # the rate held
    assert agent.stats.rounds_missed == 0
    # Exactly once: each stamp stored once per series, none missing, none sent twice.
    assert spool.points_delivered == agent.stats.points_sampled == 4 * rounds
    for measurement, series_tag, n_series in (("gpu", "gpu", 3), ("job", "job", 1)):
        body = json.loads(influx_query(
            server, f'SELECT * FROM "{measurement}" GROUP BY "{series_tag}"', db="outage"))
        series = body["results"][0]["series"]
        assert len(series) == n_series
        for s in series:
            assert [v[0] for v in s["values"]] == sorted(source.stamps)
    assert spool.points_dropped == 0 and spool.points_rejected == 0


def test_logs_say_where_the_spool_is(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    inner = MemorySink()
    inner.down = True
    sink = _spool(inner, tmp_path / "spool")
    sink.write(_pts(3))
    inner.down = False
    assert sink.flush(30)
    sink.close()
    assert f"spooling to {tmp_path / 'spool'}" in caplog.text
    assert "the spool has drained" in caplog.text


@pytest.mark.integration
def test_pipelined_writes_into_influxdb_isolate_a_rejected_point(
        tmp_path: Path, influxdb: ServerProcess, influx_db: str) -> None:
    store = InfluxStore(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    sink = SpoolingSink(store, tmp_path / "spool", 1 << 20)
    sink.write(_pts(100))  # power_w is a float field from now on
    clash = point("gpu", {"host": "h", "gpu": "9"}, {"power_w": "not a number"}, T0 + 500 * NS)
    sink.write([*_pts(50, 100), clash, *_pts(49, 150)])
    sink.write(_pts(100, 200))
    assert sink.flush(30)
    assert sink.points_rejected == 1 and sink.points_delivered == 299
    body = json.loads(influx_query(influxdb, 'SELECT count("power_w") FROM "gpu"', db=influx_db))
    assert body["results"][0]["series"][0]["values"][0][1] == 299
    sink.close()
