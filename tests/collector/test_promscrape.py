"""Scraping inference servers: real prometheus_client expositions on loopback, resets, mappings, failures."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from collector.errors import ConfigError
from collector.ingest import JobTracker
from collector.sources import create
from collector.sources.base import Tick
from collector.sources.promscrape import PromScrapeSource, Target, load_targets, parse_targets
from tests.servers import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scrape"


class FakeVllm:
    """A stand-in vLLM process: the metric names and labels vLLM exports, on a real HTTP exposition."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.registry = CollectorRegistry()
        self.tokens = Counter("vllm:generation_tokens", "Generated tokens.", ["model_name"],
                              registry=self.registry)
        self.requests = Counter("vllm:request_success", "Finished requests.",
                                ["model_name", "finished_reason"], registry=self.registry)
        self.iterations = Histogram("vllm:iteration_tokens_total", "Tokens per engine step.",
                                    ["model_name"], registry=self.registry)
        self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def serve(self, tokens: int, stop: int, length: int, iterations: int) -> None:
        self.tokens.labels("llama").inc(tokens)
        self.requests.labels("llama", "stop").inc(stop)
        self.requests.labels("llama", "length").inc(length)
        for _ in range(iterations):
            self.iterations.labels("llama").observe(tokens / max(iterations, 1))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def vllm() -> Iterator[FakeVllm]:
    server = FakeVllm(free_port())
    try:
        yield server
    finally:
        server.stop()


def vllm_target(url: str) -> Target:
    targets = load_targets(EXAMPLES / "vllm.toml")
    return Target(**{**targets[0].__dict__, "url": url})


def tick(i: int) -> Tick:
    return Tick(wall_ns=i * 1_000_000_000, mono_s=float(i))


def work(points: list) -> dict[str, float]:
    assert len(points) <= 1
    return {k: float(v) for k, v in points[0].fields if k in ("samples", "tokens", "steps")} if points else {}


def test_vllm_counters_become_work_increments_and_a_restart_counts_from_zero(vllm: FakeVllm) -> None:
    source = PromScrapeSource("node-1", [vllm_target(vllm.url)])
    vllm.serve(tokens=500, stop=3, length=1, iterations=7)  # before the agent started: not ours
    assert source.sample(tick(1)) == []
    vllm.serve(tokens=1200, stop=5, length=2, iterations=4)
    points = source.sample(tick(2))
    assert work(points) == {"tokens": 1200.0, "samples": 7.0, "steps": 4.0}
    p = points[0]
    assert (p.tag("job"), p.tag("kind"), p.tag("precision"), p.tag("host")) == (
        "vllm-llama3-8b", "infer", "bf16", "node-1")

    # vLLM restarts: its counters start again from zero on the same port.
    port = vllm.port
    vllm.stop()
    assert source.sample(tick(3)) == []  # down: nothing, no error escapes
    restarted = FakeVllm(port)
    try:
        restarted.serve(tokens=300, stop=2, length=0, iterations=2)
        assert work(source.sample(tick(4))) == {"tokens": 300.0, "samples": 2.0, "steps": 2.0}
        restarted.serve(tokens=40, stop=1, length=0, iterations=1)
        assert work(source.sample(tick(5))) == {"tokens": 40.0, "samples": 1.0, "steps": 1.0}
    finally:
        restarted.stop()
    state = next(iter(source._state.values()))
    assert state.failures == 1


def test_a_label_series_born_between_scrapes_counts_from_zero(vllm: FakeVllm) -> None:
    source = PromScrapeSource("node-1", [vllm_target(vllm.url)])
    vllm.serve(tokens=10, stop=1, length=0, iterations=1)
    source.sample(tick(1))
    vllm.requests.labels("llama", "abort").inc(3)  # a finish reason seen for the first time
    assert work(source.sample(tick(2))) == {"samples": 3.0}


def test_triton_mapping_filters_by_model_label() -> None:
    registry = CollectorRegistry()
    count = Counter("nv_inference_count", "Inferences.", ["model", "version"], registry=registry)
    execs = Counter("nv_inference_exec_count", "Executions.", ["model", "version"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        targets = load_targets(EXAMPLES / "triton.toml")
        target = Target(**{**targets[0].__dict__, "url": f"http://127.0.0.1:{port}/metrics"})
        source = PromScrapeSource("node-1", [target])
        source.sample(tick(1))
        count.labels("resnet50", "1").inc(64)
        execs.labels("resnet50", "1").inc(8)
        count.labels("bert", "1").inc(1000)  # another model on the same server: not this job
        assert work(source.sample(tick(2))) == {"samples": 64.0, "steps": 8.0}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_attached_to_the_tracker_work_joins_the_jobs_point(vllm: FakeVllm) -> None:
    now = [0.0]
    tracker = JobTracker("node-1", clock=lambda: now[0])
    source = PromScrapeSource("node-1", [vllm_target(vllm.url)])
    source.attach(tracker)
    for i in (1, 2):
        now[0] = float(i)
        vllm.serve(tokens=100 * i, stop=i, length=0, iterations=i)
        assert source.sample(tick(i)) == []
        points = tracker.sample(tick(i))
    assert [(p.tag("job"), p.field("tokens"), p.field("samples"), p.field("gpus")) for p in points] == [
        ("vllm-llama3-8b", 200.0, 2.0, 1.0)]


def test_shipped_examples_parse_and_name_real_metrics() -> None:
    names = set()
    for path in sorted(EXAMPLES.glob("*.toml")):
        for target in load_targets(path):
            names |= {s.metric for s in target.selectors}
    assert {"vllm:generation_tokens_total", "vllm:request_success_total",
            "nv_inference_count", "nv_inference_exec_count"} <= names


@pytest.mark.parametrize(("text", "named"), [
    ('x = 1', "[[target]]"),
    ('[[target]]\njob = "a b"\nurl = "http://h/m"\n[target.work]\ntokens = ["t"]', "job id"),
    ('[[target]]\njob = "a"\nurl = "file:///etc/passwd"\n[target.work]\ntokens = ["t"]', "url"),
    ('[[target]]\njob = "a"\nurl = "http://h/m"\n[target.work]\njoules = ["t"]', "joules"),
    ('[[target]]\njob = "a"\nurl = "http://h/m"\nkind = "x"\n[target.work]\ntokens = ["t"]', "kind"),
    ('[[target]]\njob = "a"\nurl = "http://h/m"\n', "work"),
    ('[[target]]\njob = "a"\nurl = "http://h/m"\nport = 1\n[target.work]\ntokens = ["t"]', "port"),
    ('[[target]]\njob = "a"\nurl = "http://h/m"\n[target.work]\ntokens = [{ metric = "t", scale = -1 }]',
     "scale"),
])
def test_config_errors_name_the_key(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_targets(tomllib.loads(text))


def test_registry_builds_it_from_a_config_file(tmp_path: Path) -> None:
    source = create("promscrape", host="h", config=str(EXAMPLES / "vllm.toml"))
    assert source.name == "promscrape"
    with pytest.raises(ConfigError, match="scrape config"):
        create("promscrape", host="h")
    with pytest.raises(ConfigError, match="does not exist"):
        create("promscrape", host="h", config=str(tmp_path / "missing.toml"))
