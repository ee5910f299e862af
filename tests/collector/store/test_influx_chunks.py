"""Reads come back whole however influxd cuts its answer: chunked answers joined, and a server
``max-row-limit`` (which cuts a plain answer short) never shortens a total."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

import pytest

from collector.sources.simulated import SimulatedFleet
from collector.store import AggregateQuery
from collector.store.influx import InfluxStore
from collector.store.influxql import chunked_series
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

NS = 1_000_000_000
HOUR = 3600 * NS
T0 = (time.time_ns() // HOUR - 3) * HOUR
AGGS = (("sum", "energy_j"), ("mean", "power_w"), ("max", "power_w"), ("count", "power_w"))


def _write(store: InfluxStore, seconds: int = 1800, step_s: int = 10) -> float:
    """Simulated GPU points from T0; the sum of their energy (J)."""
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, seed=5)
    points = []
    for k in range(seconds // step_s):
        points.extend(fleet.points_between(T0 + k * step_s * NS, T0 + (k + 1) * step_s * NS))
    store.write(points)
    return sum(float(dict(p.fields)["energy_j"]) for p in points if p.measurement == "gpu")


def _plain_rows(server: ServerProcess, db: str, statement: str) -> int:
    """Rows of a plain (not chunked) answer, as a client that does not ask for chunks sees it."""
    body = urllib.parse.urlencode({"db": db, "q": statement, "epoch": "ns"}).encode()
    with urllib.request.urlopen(server.url + "/query", body, timeout=30) as resp:
        payload = json.loads(resp.read())
    return sum(len(s.get("values") or []) for s in payload["results"][0].get("series") or [])


def test_a_max_row_limit_below_the_rows_read_never_shortens_a_total(
        influxdb_factory: Callable[..., ServerProcess]) -> None:
    server = influxdb_factory("limited", max_row_limit=50)
    store = InfluxStore(f"influxdb://127.0.0.1:{server.port}/lim")
    store.init(raw_retention="30d")
    energy = _write(store)
    n_gpu_points = 8 * 180
    # The server does cut a plain answer: what a read without chunks would have summed.
    raw_select = f'SELECT "energy_j" FROM "gpu" WHERE time >= {T0} AND time < {T0 + HOUR}'
    assert _plain_rows(server, "lim", raw_select) == 50
    # wattlens's reads ask for chunks, and get every row.
    assert sum(len(s["values"]) for s in store.influxql(raw_select)) == n_gpu_points
    for group_by, bucket_s in (((), None), (("host", "gpu"), None), (("host",), 60), ((), 600)):
        q = AggregateQuery("gpu", AGGS, T0, T0 + HOUR, group_by=group_by,  # type: ignore[arg-type]
                           bucket_s=bucket_s)
        for rows in (store.query(q), store.raw_query(q)):
            assert sum(r.values["sum_energy_j"] or 0 for r in rows) == pytest.approx(energy), (
                group_by, bucket_s)
            assert sum(r.values["count_power_w"] or 0 for r in rows) == n_gpu_points
    store.close()


def test_an_answer_in_many_chunks_reads_as_one(influxdb: ServerProcess, influx_db: str) -> None:
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    whole, chunked = InfluxStore(url), InfluxStore(url + "?chunk_size=7")
    _write(whole, seconds=600)
    select = (f'SELECT "energy_j", "power_w" FROM "gpu" WHERE time >= {T0} '
              f'AND time < {T0 + HOUR} GROUP BY "host", "gpu"')
    a, b = whole.influxql(select), chunked.influxql(select)
    assert len(a) == 8 and [s["tags"] for s in a] == [s["tags"] for s in b]
    assert [s["values"] for s in a] == [s["values"] for s in b]
    assert all(len(s["values"]) == 60 for s in b)  # each series cut into 9 chunks, joined
    for group_by, bucket_s in ((("host", "gpu"), None), (("gpu",), 300)):
        q = AggregateQuery("gpu", AGGS, T0, T0 + HOUR, group_by=group_by,  # type: ignore[arg-type]
                           bucket_s=bucket_s)
        assert chunked.query(q) == whole.query(q)
        assert chunked.raw_query(q) == whole.raw_query(q)
    whole.close()
    chunked.close()


def test_joining_chunks_keeps_series_apart_and_raises_on_an_error() -> None:
    cols = ["time", "v"]
    chunks = [
        {"results": [{"statement_id": 0, "series": [
            {"name": "gpu", "tags": {"gpu": "0"}, "columns": cols, "values": [[1, 1.0]],
             "partial": True}], "partial": True}]},
        {"results": [{"statement_id": 0, "series": [
            {"name": "gpu", "tags": {"gpu": "0"}, "columns": cols, "values": [[2, 2.0]]},
            {"name": "gpu", "tags": {"gpu": "1"}, "columns": cols, "values": [[1, 5.0]]}]}]},
    ]
    joined = chunked_series(chunks)
    assert [(s["tags"], s["values"]) for s in joined] == [
        ({"gpu": "0"}, [[1, 1.0], [2, 2.0]]), ({"gpu": "1"}, [[1, 5.0]])]
    # Two series alike but the first not cut: kept apart, as influxd sent them.
    assert len(chunked_series([chunks[1], chunks[1]])) == 4
    with pytest.raises(ValueError, match="boom"):
        chunked_series([chunks[0], {"results": [{"statement_id": 0, "error": "boom"}]}])
