"""The embedded SQLite store: round trip, aggregates pushed into SQL, idempotent writes, shared file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.errors import ConfigError
from collector.schema import point
from collector.sources.simulated import NS, SimulatedFleet
from collector.store import AggregateQuery, open_store
from collector.store.sqlite import SQLiteStore

T0 = 1_795_000_000 * NS
HOSTILE = ["x' OR '1'='1", 'a"b', "back\\slash", "空格 name", "semi;colon", "drop table"]


def test_hostile_tag_values_round_trip_and_do_not_widen_filters(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    pts = [point("job", {"job": name, "host": "h"}, {"energy_j": float(i + 1), "samples": 10.0},
                 T0 + i * NS) for i, name in enumerate(HOSTILE)]
    store.write(pts)
    rows = store.query(AggregateQuery("job", (("sum", "energy_j"),), T0, T0 + 100 * NS,
                                      group_by=("job",)))
    assert {r.tags["job"]: r.values["sum_energy_j"] for r in rows} == {
        name: float(i + 1) for i, name in enumerate(HOSTILE)}
    for i, name in enumerate(HOSTILE):
        only = store.query(AggregateQuery("job", (("sum", "energy_j"),), T0, T0 + 100 * NS,
                                          where={"job": name}))
        assert [r.values["sum_energy_j"] for r in only] == [float(i + 1)]
    assert store.tag_values("job", "job", T0, T0 + 100 * NS) == sorted(HOSTILE)


def test_hostile_measurement_tag_and_field_names(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    store.write([point('m"x', {'t"ag': "v"}, {'f"ld': 2.0}, T0)])
    rows = store.query(AggregateQuery('m"x', (("max", 'f"ld'),), T0, T0 + 1, group_by=('t"ag',)))
    assert rows[0].tags == {'t"ag': "v"} and rows[0].values == {'max_f"ld': 2.0}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3599), st.sampled_from(["a", "b", "c"]),
                          st.floats(0, 1e6, allow_nan=False)), min_size=1, max_size=60),
       st.sampled_from([60, 300, 900]))
def test_aggregates_match_a_python_reference(tmp_path_factory: pytest.TempPathFactory,
                                             rows: list[tuple[int, str, float]],
                                             bucket_s: int) -> None:
    store = SQLiteStore(tmp_path_factory.mktemp("agg") / "w.db")
    latest: dict[tuple[int, str], float] = {}
    for t, host, v in rows:
        latest[(t, host)] = v  # the same series and time twice: the later write wins
    store.write([point("gpu", {"host": h}, {"energy_j": v}, T0 + t * NS) for t, h, v in rows])
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("max", "energy_j"), ("count", "energy_j"),
                               ("mean", "energy_j"), ("last", "energy_j")),
                       T0, T0 + 3600 * NS, group_by=("host",), bucket_s=bucket_s)
    got = {(r.time_ns, r.tags["host"]): r.values for r in store.query(q)}
    ref: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for (t, h), v in latest.items():
        b = (T0 + t * NS) // (bucket_s * NS) * bucket_s * NS  # epoch-aligned, like InfluxDB
        ref.setdefault((b, h), []).append((t, v))
    assert set(got) == set(ref)
    for key, vals in ref.items():
        values = [v for _, v in vals]
        assert got[key]["sum_energy_j"] == pytest.approx(sum(values))
        assert got[key]["max_energy_j"] == max(values)
        assert got[key]["count_energy_j"] == len(values)
        assert got[key]["mean_energy_j"] == pytest.approx(sum(values) / len(values))
        assert got[key]["last_energy_j"] == max(vals)[1]


def test_window_is_half_open_and_missing_columns_are_none(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    store.write([point("gpu", {"host": "a"}, {"power_w": 1.0}, T0 + k * NS) for k in range(10)])
    rows = store.query(AggregateQuery("gpu", (("count", "power_w"), ("sum", "tokens")),
                                      T0 + 2 * NS, T0 + 5 * NS, group_by=("nope",)))
    assert len(rows) == 1
    assert rows[0].values == {"count_power_w": 3.0, "sum_tokens": None}
    assert rows[0].tags == {"nope": ""}
    assert store.query(AggregateQuery("nothing", (("sum", "x"),), T0, T0 + 1)) == []
    assert store.time_range("gpu") == (T0, T0 + 9 * NS)
    assert store.time_range("nothing") is None


def test_writing_the_same_points_twice_does_not_double_count(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    pts = SimulatedFleet(seed=4).points_between(T0, T0 + 60 * NS)
    store.write(pts)
    store.write(pts)  # a spool replay after an ambiguous failure
    gpu_energy = sum(float(p.field("energy_j") or 0) for p in pts if p.measurement == "gpu")
    rows = store.query(AggregateQuery("gpu", (("sum", "energy_j"),), T0, T0 + 61 * NS))
    assert rows[0].values["sum_energy_j"] == pytest.approx(gpu_energy)
    assert store.count("gpu") == 32


def test_a_later_write_merges_fields_into_the_same_row(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    store.write([point("gpu", {"host": "a"}, {"power_w": 5.0}, T0)])
    store.write([point("gpu", {"host": "a"}, {"energy_j": 7.0}, T0)])
    rows = store.query(AggregateQuery("gpu", (("sum", "power_w"), ("sum", "energy_j")), T0, T0 + 1))
    assert rows[0].values == {"sum_power_w": 5.0, "sum_energy_j": 7.0}


WRITER = """
import sys, time
from collector.schema import point
from collector.store import open_store
store = open_store(sys.argv[1])
for k in range(200):
    store.write([point("gpu", {"host": "w"}, {"energy_j": 1.0}, 1795000000000000000 + k * 10**9)])
print("done")
"""


def test_an_agent_process_and_a_reader_share_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    reader = open_store(url)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True)
    seen = []
    while proc.poll() is None:
        rows = reader.query(AggregateQuery("gpu", (("sum", "energy_j"),), T0, T0 + 1000 * NS))
        seen.append(rows[0].values["sum_energy_j"] if rows else 0.0)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "done"
    rows = reader.query(AggregateQuery("gpu", (("sum", "energy_j"),), T0, T0 + 1000 * NS))
    assert rows[0].values["sum_energy_j"] == 200.0
    assert seen == sorted(seen)  # reads saw consistent, growing snapshots


def test_bad_urls_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scheme 'mysql'"):
        open_store("mysql://x/y")
    with pytest.raises(ConfigError, match="is a directory"):
        open_store(str(tmp_path))
    with pytest.raises(ConfigError, match="expected a store URL"):
        open_store("")


def test_bad_queries_name_the_field() -> None:
    with pytest.raises(ValueError, match="end_ns"):
        AggregateQuery("gpu", (("sum", "x"),), 10, 10)
    with pytest.raises(ValueError, match="aggregate: unknown 'median'"):
        AggregateQuery("gpu", (("median", "x"),), 0, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bucket_s"):
        AggregateQuery("gpu", (("sum", "x"),), 0, 10, bucket_s=0)
