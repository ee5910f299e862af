"""prometheus:// without a server: URL parsing, PromQL building, bucket spans, joins, exporter formats."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.errors import ConfigError
from collector.simexport import SimExporter
from collector.sources.simulated import SimulatedFleet
from collector.store import open_store
from collector.store.base import AggregateQuery
from collector.store.prometheus import (
    MAX_POINTS,
    PrometheusStore,
    Span,
    _no_cycle_collection,
    numbers,
    spans,
)
from collector.store.prommap import MAPPINGS, combine
from collector.store.promql import Merger, plan, quote, selector
from tests.servers import free_port, wait_until

NS = 1_000_000_000


def test_url_parsing_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLENS_PROMETHEUS_TOKEN", "s3cret")
    store = open_store("prometheus://vm.example:8428/select/0/prometheus?mapping=dcgm-exporter,vllm")
    assert isinstance(store, PrometheusStore)
    assert store.base == "http://vm.example:8428/select/0/prometheus"
    assert store._token == "s3cret"
    assert "s3cret" not in store.url
    assert set(store.mapping) == {"gpu", "job"}
    assert open_store("prometheus://h?tls=1").base == "https://h:9090"  # type: ignore[attr-defined]


@pytest.mark.parametrize("url, field", [
    ("prometheus://user:pw@h:9090", "credentials"),
    ("prometheus://h:9090?mapping=nvidia", "mapping"),
    ("prometheus://h:9090?mapping=", "mapping"),
    ("prometheus://h:9090?step=5", "step"),
    ("prometheus://h:9090?timeout=-1", "timeout"),
    ("prometheus://:9090", "host"),
    ("prometheus://h:99999", "port"),
])
def test_bad_urls_are_one_clear_error(url: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        open_store(url)


def test_writes_are_refused_before_any_network() -> None:
    from collector.errors import StoreRejected
    from collector.schema import point

    store = open_store("prometheus://127.0.0.1:1")
    with pytest.raises(StoreRejected, match="read-only"):
        store.write([point("gpu", {"host": "h"}, {"power_w": 1.0}, 1)])
    store.write([])  # nothing to write is not an error


def test_quoting_cannot_break_out_of_a_matcher() -> None:
    src = combine("wattlens")["gpu"].fields["power_w"][0]
    sel = selector(src, {"host": 'a"} or vector(1) #\\'})
    assert sel == '{__name__="wattlens_gpu_power_watts",host="a\\"} or vector(1) #\\\\"}'
    assert quote("x\ny") == '"x\\ny"'
    many = selector(src, {"host": ("n.1", "n|2")})
    assert many is not None and 'host=~"n\\\\.1|n\\\\|2"' in many
    assert selector(src, {"host": ()}) is None
    assert selector(src, {"no_such_tag": "x"}) is None


def test_counter_sum_is_increase_and_mig_shares_split_a_device_once() -> None:
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("mean", "power_w"), ("max", "util_pct")),
                       0, 3600 * NS, group_by=("host",), bucket_s=60)
    p = plan(q, combine("dcgm-exporter")["gpu"])
    texts = [e.text for e in p.exprs]
    assert texts[0].startswith("(sum by (Hostname) ((increase(")
    assert "/ on(Hostname,UUID) group_left() count by (Hostname,UUID)" in texts[0]
    assert texts[0].endswith("* 0.001")  # mJ -> J
    # One source per field, groups the rows' own: the mean is divided in the engine.
    assert [e.part for e in p.exprs] == ["sum_energy_j", "mean_power_w", "max_util_pct"]
    assert texts[1] == ('(sum by (Hostname) (sum_over_time({__name__="DCGM_FI_DEV_POWER_USAGE"}'
                        '[{{RANGE}}]))) / (sum by (Hostname) (count_over_time('
                        '{__name__="DCGM_FI_DEV_POWER_USAGE"}[{{RANGE}}])))')


def test_a_mean_over_several_sources_or_a_join_keeps_sums_and_counts() -> None:
    """Means are divided here only once every source's sum and count is in."""
    q = AggregateQuery("gpu", (("mean", "power_w"),), 0, 3600 * NS, group_by=("host",))
    two = plan(q, combine("wattlens,dcgm-exporter")["gpu"])
    assert [e.part for e in two.exprs] == ["mean_power_w#s", "mean_power_w#c"] * 2
    m = Merger(q, two)
    m.add(two.exprs[0], None, {"host": "n1"}, 300.0)  # wattlens: 300 W over 1 sample
    m.add(two.exprs[1], None, {"host": "n1"}, 1.0)
    m.add(two.exprs[2], None, {"Hostname": "n1"}, 600.0)  # dcgm: 200 W x 3 samples
    m.add(two.exprs[3], None, {"Hostname": "n1"}, 3.0)
    assert [(r.tags, r.values) for r in m.result()] == [({"host": "n1"}, {"mean_power_w": 225.0})]
    job = AggregateQuery("job", (("mean", "util_pct"), ("sum", "tokens")), 0, 60 * NS,
                         group_by=("job", "gpu_model"))
    joined = plan(job, combine("dcgm-exporter,vllm")["job"])
    assert joined.rollup and [e.part for e in joined.exprs] == [
        "mean_util_pct#s", "mean_util_pct#c", "sum_tokens"]


def test_merger_places_runs_and_pairs_on_the_bucket_grid() -> None:
    """A run of consecutive buckets lands in one slice; edges and gaps come as pairs; rows
    come out bucket by bucket in tag order, a count with no answer is 0, NaN is no answer."""
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("count", "power_w")), 90 * NS, 400 * NS,
                       group_by=("host",), bucket_s=60)
    p = plan(q, combine("wattlens")["gpu"])
    energy, count = p.exprs
    m = Merger(q, p)
    assert (m.k0, m.size) == (1, 6)  # buckets 60, 120, ... 360
    m.add_run(energy, {"host": "b"}, 120 * NS, [1.0, 2.0, 3.0, 4.0])
    m.add_series(energy, {"host": "b"}, [(60 * NS, 0.5), (360 * NS, 0.25)])  # the cut edges
    m.add_series(energy, {"host": "a"}, [(180 * NS, 7.0), (300 * NS, float("nan"))])
    m.add_run(energy, {"host": "a"}, 180 * NS, [1.0])  # a second answer for a group adds up
    m.add_run(count, {"host": "b"}, 120 * NS, [60.0, 60.0])
    got = [(r.time_ns // NS if r.time_ns else None, r.tags["host"], r.values) for r in m.result()]
    assert got == [
        (60, "b", {"sum_energy_j": 0.5, "count_power_w": 0.0}),
        (120, "b", {"sum_energy_j": 1.0, "count_power_w": 60.0}),
        (180, "a", {"sum_energy_j": 8.0, "count_power_w": 0.0}),
        (180, "b", {"sum_energy_j": 2.0, "count_power_w": 60.0}),
        (240, "b", {"sum_energy_j": 3.0, "count_power_w": 0.0}),
        (300, "b", {"sum_energy_j": 4.0, "count_power_w": 0.0}),
        (360, "b", {"sum_energy_j": 0.25, "count_power_w": 0.0}),
    ]
    with pytest.raises(ValueError, match="window"):
        m.add_run(energy, {"host": "a"}, 300 * NS, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="window"):
        m.add_series(energy, {"host": "a"}, [(0, 1.0)])


def test_a_mean_divided_in_the_engine_is_never_combined() -> None:
    q = AggregateQuery("gpu", (("mean", "power_w"),), 0, 60 * NS, group_by=("host",))
    p = plan(q, combine("wattlens")["gpu"])
    assert [e.op for e in p.exprs] == ["mean"]
    m = Merger(q, p)
    m.add(p.exprs[0], None, {"host": "a"}, 300.0)
    with pytest.raises(ValueError, match="cannot be combined"):
        m.add(p.exprs[0], None, {"host": "a"}, 200.0)


@pytest.mark.parametrize("texts", [
    ["1234.5", "0", "-0.001", "700.1234567890123", "99999999999999999999", "3"],
    [repr(x) for x in (0.1, 1 / 3, 2.5e-3, 123456.789, 5e15)],
])
def test_value_strings_parse_in_one_call_exactly_as_float_does(texts: list[str]) -> None:
    plain = [t for t in texts if "e" not in t]
    got = numbers(plain)
    assert got == [float(t) for t in plain]
    assert got is not None and all(type(v) is float for v in got)


@pytest.mark.parametrize("texts", [["1", "NaN"], ["+Inf"], ["-Inf", "2"], ["1e-05"], ["1,2"],
                                   ['1"'], ["[1]"], ["1", "2, 3"], [""]])
def test_value_strings_that_are_not_plain_decimals_are_left_to_float(texts: list[str]) -> None:
    assert numbers(texts) is None


def test_a_range_answer_with_a_gap_or_a_nan_is_read_point_by_point() -> None:
    span = Span(120 * NS, 4, 60 * NS, 60 * NS, None)
    whole = {"metric": {"host": "a"}, "values": [[120, "1.5"], [180, "2"], [240.0, "3"],
                                                 [300, "4"]]}
    assert span.answer(whole) == ({"host": "a"}, 60 * NS, [1.5, 2.0, 3.0, 4.0], [])
    gap = {"metric": {"host": "a"}, "values": [[120, "1.5"], [240, "3"], [300, "4"]]}
    assert span.answer(gap) == ({"host": "a"}, None, None, [(60 * NS, 1.5), (180 * NS, 3.0),
                                                            (240 * NS, 4.0)])
    nan = {"metric": {}, "values": [[120, "1.5"], [180, "NaN"]]}
    _metric, _first, run, pairs = span.answer(nan)
    assert run is None and pairs[0] == (60 * NS, 1.5) and pairs[1][1] != pairs[1][1]
    edge = Span(150 * NS, 1, 0, 30 * NS, 120 * NS)
    assert edge.answer({"metric": {}, "value": [150, "2.5"]}) == ({}, None, None,
                                                                  [(120 * NS, 2.5)])


def test_cycle_collection_pauses_during_reads_only() -> None:
    import gc
    import threading

    assert gc.isenabled()
    inside = threading.Event()
    release = threading.Event()

    def reader() -> None:
        with _no_cycle_collection():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=reader)
    t.start()
    inside.wait(10)
    with _no_cycle_collection():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other read is still going
    release.set()
    t.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with _no_cycle_collection():
            pass
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()


def test_spans_align_to_the_epoch_cut_edges_and_stay_under_the_point_limit() -> None:
    q = AggregateQuery("gpu", (("sum", "energy_j"),), 95 * NS, 3605 * NS, bucket_s=60)
    s = spans(q)
    edges = [(x.bucket_start_ns, x.first_end_ns, x.range_ns) for x in s if x.step_ns == 0]
    assert edges == [(60 * NS, 120 * NS, 25 * NS), (3600 * NS, 3605 * NS, 5 * NS)]
    full = [x for x in s if x.step_ns]
    assert [(x.first_end_ns, x.count) for x in full] == [(180 * NS, 58)]
    covered = sum(x.range_ns * x.count for x in s)
    assert covered == q.end_ns - q.start_ns  # every nanosecond once
    big = spans(AggregateQuery("gpu", (("sum", "energy_j"),), 0, 25_000 * NS, bucket_s=1))
    assert max(x.count for x in big) <= MAX_POINTS and sum(x.count for x in big) == 25_000


def test_rows_from_different_exporters_join_on_the_keys() -> None:
    """dcgm-exporter energy (with gpu_model) and vLLM tokens (with kind) of one pod: one row."""
    q = AggregateQuery("job", (("sum", "energy_j"), ("sum", "tokens")), 0, 60 * NS,
                       group_by=("job", "kind", "gpu_model"))
    p = plan(q, combine("dcgm-exporter,vllm")["job"])
    assert p.rollup and p.group_by == ("job", "kind", "gpu_model", "host")
    m = Merger(q, p)
    energy = next(e for e in p.exprs if e.part == "sum_energy_j")
    tokens = next(e for e in p.exprs if e.part == "sum_tokens")
    m.add(energy, None, {"pod": "chat", "Hostname": "n1", "modelName": "L4"}, 100.0)
    m.add(tokens, None, {"pod": "chat", "node": "n1"}, 5000.0)
    m.add(energy, None, {"pod": "chat", "Hostname": "n2", "modelName": "L4"}, 50.0)
    m.add(tokens, None, {"pod": "chat", "node": "n2"}, 1000.0)
    m.add(tokens, None, {"pod": "other", "node": "n1"}, float("nan"))
    rows = m.result()
    assert len(rows) == 1
    assert rows[0].tags == {"job": "chat", "kind": "infer", "gpu_model": "L4"}
    assert rows[0].values == {"sum_energy_j": 150.0, "sum_tokens": 6000.0}


def test_every_mapping_builds() -> None:
    for name in MAPPINGS:
        assert combine(name)


@pytest.mark.parametrize("fmt, names", [
    ("dcgm-exporter", {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_POWER_USAGE",
                       "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_SM_CLOCK"}),
    ("kepler", {"kepler_node_cpu_joules", "kepler_node_cpu_watts",
                "kepler_container_cpu_joules"}),
    ("vllm", {"vllm:generation_tokens", "vllm:request_success"}),
])
def test_simulated_exporters_parse_and_count_up(fmt: str, names: set[str]) -> None:
    t0 = 1_800_000_000 * NS
    exp = SimExporter(SimulatedFleet(4, 2), fmt, start_ns=t0)
    first = {f.name: f for f in text_string_to_metric_families(exp.metrics(t0 + 30 * NS))}
    assert names <= set(first)
    second = {f.name: f for f in text_string_to_metric_families(exp.metrics(t0 + 60 * NS))}
    for name, fam in second.items():
        if fam.type != "counter":
            continue
        before = {tuple(sorted(s.labels.items())): s.value for s in first[name].samples}
        for s in fam.samples:
            key = tuple(sorted(s.labels.items()))
            assert s.value >= before.get(key, 0.0), name


def test_dcgm_energy_counter_is_the_simulated_energy_in_millijoules() -> None:
    t0 = 1_800_000_000 * NS
    fleet = SimulatedFleet(4, 2)
    exp = SimExporter(fleet, "dcgm-exporter", mig=3, start_ns=t0)
    fams = {f.name: f for f in text_string_to_metric_families(exp.metrics(t0 + 60 * NS))}
    samples = fams["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].samples
    assert {s.labels["GPU_I_ID"] for s in samples} == {"0", "1", "2"}
    per_gpu = {(s.labels["Hostname"], s.labels["gpu"]): s.value for s in samples}
    truth = {(p.tag("host"), p.tag("gpu")): float(p.field_map["energy_j"])
             for p in fleet.points_between(t0, t0 + 60 * NS) if p.measurement == "gpu"}
    assert per_gpu == pytest.approx({k: v * 1000 for k, v in truth.items()}, abs=1)


def test_bad_exporter_options() -> None:
    with pytest.raises(ValueError, match="--as"):
        SimExporter(SimulatedFleet(1, 1), "nvidia-smi")
    with pytest.raises(ValueError, match="--mig"):
        SimExporter(SimulatedFleet(1, 1), "dcgm-exporter", mig=8)


def test_simulate_serve_command_serves_on_loopback() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "wattlens", "simulate", "serve", "--as", "vllm",
                             "--port", str(port), "--nodes", "4", "--gpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                    return True
            except OSError:
                return False
        wait_until(up, 60, "simulate serve")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "# TYPE vllm:generation_tokens_total counter" in text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"127.0.0.1:{port}" in out.decode()


@pytest.mark.parametrize("argv, message", [
    (["--as", "nvidia-smi", "--port", "0"], "--as"),
    (["--as", "vllm", "--port", "70000"], "--port"),
    (["--as", "vllm", "--port", "0", "--gpus", "0"], "--gpus"),
    (["--as", "vllm", "--port", "0", "--host", "0.0.0.0"], "WATTLENS_AGENT_TOKEN"),
])
def test_simulate_serve_bad_input_exits_2(argv: list[str], message: str) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != "WATTLENS_AGENT_TOKEN"}
    res = subprocess.run([sys.executable, "-m", "wattlens", "simulate", "serve", *argv],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2
    assert message in res.stderr


@pytest.mark.parametrize("seed", range(8))
def test_merger_equals_a_cell_by_cell_merge_of_the_same_answers(seed: int) -> None:
    """Random answers from two mappings (so groups get two answers), with gaps, runs and NaN:
    the columns give the rows a plain (bucket, group) -> value merge gives."""
    import random

    rnd = random.Random(seed)
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("max", "power_w"), ("count", "util_pct")),
                       7 * NS, 3607 * NS, group_by=("host",), bucket_s=300)
    p = plan(q, combine("wattlens,dcgm-exporter")["gpu"])
    m = Merger(q, p)
    want: dict[tuple[int, str], dict[str, float]] = {}
    for expr in p.exprs:
        label = "host" if expr.source.metric.startswith("wattlens") else "Hostname"
        for host in rnd.sample(["a", "b", "c"], rnd.randint(1, 3)):
            k = rnd.randint(0, m.size - 1)
            while k < m.size:
                n = rnd.randint(1, m.size - k)
                values = [float(rnd.randint(0, 50)) for _ in range(n)]
                start = (m.k0 + k) * 300 * NS
                if rnd.random() < 0.5:
                    m.add_run(expr, {label: host}, start, values)
                else:
                    if rnd.random() < 0.3:
                        values[0] = float("nan")
                    m.add_series(expr, {label: host},
                                 [(start + i * 300 * NS, v) for i, v in enumerate(values)])
                for i, v in enumerate(values):
                    if v == v:
                        cell = want.setdefault((start + i * 300 * NS, host), {})
                        old = cell.get(expr.part)
                        cell[expr.part] = v if old is None else (
                            old + v if expr.op == "sum" else max(old, v))
                k += n + rnd.randint(1, 3)
    rows = m.result()
    assert [(r.time_ns, r.tags["host"]) for r in rows] == sorted(want)
    for r in rows:
        cell = want[(r.time_ns or 0, r.tags["host"])]
        assert r.values == {"sum_energy_j": cell.get("sum_energy_j"),
                            "max_power_w": cell.get("max_power_w"),
                            "count_util_pct": cell.get("count_util_pct", 0.0)}
