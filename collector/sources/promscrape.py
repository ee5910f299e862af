"""Work from inference servers' own Prometheus endpoints (vLLM, Triton, ...): counters mapped to job work.

A TOML file lists targets (see examples/scrape/)::

    [[target]]
    job = "vllm-llama3-8b"                  # the job its work and energy go to
    url = "http://127.0.0.1:8000/metrics"
    kind = "infer"
    gpus = [0]                              # GPUs it serves from, for attribution
    [target.work]
    tokens = ["vllm:generation_tokens_total"]
    samples = [{ metric = "vllm:request_success_total", labels = { finished_reason = "stop" } }]

Each round the source scrapes every target, sums each work field's counters
over the matching series, and turns them into increments with
:class:`collector.counters.CounterTracker`: the first scrape only sets the
baseline, and a counter that goes down (the server restarted) counts its new
value, as Prometheus' ``increase()`` does. Attached to a
:class:`collector.ingest.JobTracker` the work joins the job's attributed
energy in one point; alone it emits work-only ``job`` points.
"""

from __future__ import annotations

import logging
import math
import os
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from collector.counters import CounterTracker
from collector.errors import ConfigError
from collector.logutil import LogOnce
from collector.schema import FieldValue, Point, point
from collector.sources.base import Probe, Tick

if TYPE_CHECKING:
    from collector.ingest import JobTracker

log = logging.getLogger("wattlens.sources.promscrape")

WORK_FIELDS = ("samples", "tokens", "steps", "flops")
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_SERIES_PER_TARGET = 10_000

Fetch = Callable[[str, float], bytes]


def http_fetch(url: str, timeout_s: float) -> bytes:
    """GET a Prometheus text exposition (the default ``fetch`` at the network boundary)."""
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in parse_targets
        url, headers={"Accept": "text/plain;version=0.0.4"})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - configured URL
        body: bytes = resp.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"exposition larger than {MAX_BODY_BYTES} bytes")
    return body


def _base(name: str) -> str:
    """Counter names with and without ``_total`` are the same counter (the parser adds it to some)."""
    return name[:-6] if name.endswith("_total") else name


@dataclass(frozen=True)
class Selector:
    """Series of one metric whose labels include ``labels``, summed into ``work_field``."""

    work_field: str
    metric: str
    labels: Mapping[str, str] = field(default_factory=dict)
    scale: float = 1.0

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return _base(name) == _base(self.metric) and all(
            labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True)
class Target:
    """One inference server to scrape and the job its work belongs to."""

    job: str
    url: str
    selectors: tuple[Selector, ...]
    kind: str = "infer"
    precision: str | None = None
    batch_size: int | None = None
    gpus: tuple[int, ...] | None = None
    timeout_s: float = 2.0


def _parse_selector(where: str, work_field: str, item: Any) -> Selector:
    if isinstance(item, str):
        return Selector(work_field, item)
    if not isinstance(item, dict) or not isinstance(item.get("metric"), str):
        raise ConfigError(f"{where}: each entry is a metric name or "
                          f"{{ metric = \"...\", labels = {{...}} }}, got {item!r}")
    unknown = set(item) - {"metric", "labels", "scale"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; use metric, labels, scale")
    labels = item.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in labels.items()):
        raise ConfigError(f"{where}.labels: must be a table of strings, got {labels!r}")
    scale = item.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale > 0):
        raise ConfigError(f"{where}.scale: must be a positive number, got {scale!r}")
    return Selector(work_field, item["metric"], dict(labels), float(scale))


def parse_targets(data: Mapping[str, Any], where: str = "scrape config") -> list[Target]:
    """Targets from a parsed TOML document (``[[target]]`` tables); ConfigError names the bad key."""
    from collector.ingest import KINDS, PRECISIONS, IngestError, check_job_id

    raw = data.get("target")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: needs at least one [[target]] table")
    unknown_top = set(data) - {"target"}
    if unknown_top:
        raise ConfigError(f"{where}: unknown key {sorted(unknown_top)[0]!r}; only [[target]]")
    targets: list[Target] = []
    for i, t in enumerate(raw):
        at = f"{where}: target[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(f"{at}: must be a table")
        known = {"job", "url", "kind", "precision", "batch_size", "gpus", "timeout_s", "work"}
        extra = set(t) - known
        if extra:
            raise ConfigError(f"{at}: unknown key {sorted(extra)[0]!r}; known: {', '.join(sorted(known))}")
        try:
            job = check_job_id(t.get("job"))
        except IngestError as exc:
            raise ConfigError(f"{at}.{exc}") from None
        url = t.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{at}.url: must be an http:// or https:// URL, got {url!r}")
        kind = t.get("kind", "infer")
        if kind not in KINDS:
            raise ConfigError(f"{at}.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        precision = t.get("precision")
        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(f"{at}.precision: must be one of {', '.join(PRECISIONS)}, "
                              f"got {precision!r}")
        batch_size = t.get("batch_size")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ConfigError(f"{at}.batch_size: must be a positive integer, got {batch_size!r}")
        gpus = t.get("gpus")
        if gpus is not None and (not isinstance(gpus, list) or not all(
                isinstance(g, int) and not isinstance(g, bool) and 0 <= g <= 1023 for g in gpus)):
            raise ConfigError(f"{at}.gpus: must be a list of GPU indices, got {gpus!r}")
        timeout_s = t.get("timeout_s", 2.0)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 60:
            raise ConfigError(f"{at}.timeout_s: must be a number of seconds in (0, 60], got {timeout_s!r}")
        work = t.get("work")
        if not isinstance(work, dict) or not work:
            raise ConfigError(f"{at}.work: needs a table mapping work fields to metrics, e.g. "
                              f"tokens = [\"vllm:generation_tokens_total\"]")
        selectors: list[Selector] = []
        for work_field, items in work.items():
            if work_field not in WORK_FIELDS:
                raise ConfigError(f"{at}.work: unknown work field {work_field!r}; "
                                  f"use {', '.join(WORK_FIELDS)}")
            entries = items if isinstance(items, list) else [items]
            selectors.extend(_parse_selector(f"{at}.work.{work_field}", work_field, item)
                             for item in entries)
        targets.append(Target(job, url, tuple(selectors), kind, precision, batch_size,
                              None if gpus is None else tuple(sorted(set(gpus))), float(timeout_s)))
    return targets


def load_targets(path: str | os.PathLike[str]) -> list[Target]:
    """Read a scrape config file; ConfigError names the file and the bad key."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--scrape: file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--scrape: {path}: {exc}") from None
    return parse_targets(data, str(path))


@dataclass
class _TargetState:
    trackers: dict[tuple[str, str, tuple[tuple[str, str], ...]], CounterTracker] = field(
        default_factory=dict)
    ok: bool | None = None
    baselined: bool = False
    scrapes: int = 0
    failures: int = 0


class PromScrapeSource:
    """Scrapes configured inference servers each round and turns their counters into job work."""

    name = "promscrape"

    def __init__(self, host: str, targets: Sequence[Target], *, fetch: Fetch = http_fetch) -> None:
        if not targets:
            raise ConfigError("promscrape: no targets configured")
        self.host = host
        self.targets = list(targets)
        self.fetch = fetch
        self._state = {t.job + " " + t.url: _TargetState() for t in self.targets}
        self._tracker: JobTracker | None = None
        self._warn = LogOnce(log)

    def attach(self, tracker: JobTracker) -> None:
        """Send work to ``tracker`` (which adds attributed energy) instead of emitting points."""
        self._tracker = tracker

    def probe(self) -> Probe:
        answers = []
        for t in self.targets:
            try:
                self._read(t)
            except Exception as exc:
                answers.append(f"{t.job} ({t.url}): not answering yet: {_reason(exc)}")
            else:
                answers.append(f"{t.job} ({t.url}): ok")
        return Probe.found("scraping " + "; ".join(answers))

    def _read(self, t: Target) -> dict[tuple[str, str, tuple[tuple[str, str], ...]], float]:
        """Current value of every series a selector matches: (field, metric, labels) -> value."""
        text = self.fetch(t.url, t.timeout_s).decode("utf-8", "replace")
        values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue  # OpenMetrics creation timestamps, not counts
                for sel in t.selectors:
                    if sel.matches(s.name, s.labels):
                        key = (sel.work_field, _base(s.name), tuple(sorted(s.labels.items())))
                        values[key] = float(s.value) * sel.scale
                        if len(values) > MAX_SERIES_PER_TARGET:
                            raise ValueError(f"more than {MAX_SERIES_PER_TARGET} matching series; "
                                             "narrow the selectors with labels")
        return values

    def scrape(self, t: Target) -> dict[str, float] | None:
        """Work increments of one target since its previous scrape, or None when it failed."""
        state = self._state[t.job + " " + t.url]
        state.scrapes += 1
        try:
            values = self._read(t)
        except Exception as exc:  # one server down never stops the others or the agent
            state.failures += 1
            state.ok = False
            self._warn.warning(t.url, f"promscrape: {t.job}: {t.url} failed: {_reason(exc)}")
            return None
        if state.ok is False:
            self._warn.clear(t.url, f"promscrape: {t.job}: {t.url} answers again")
        state.ok = True
        work = dict.fromkeys(WORK_FIELDS, 0.0)
        for key, value in values.items():
            tracker = state.trackers.get(key)
            if tracker is None:
                if len(state.trackers) >= MAX_SERIES_PER_TARGET:
                    continue
                tracker = state.trackers[key] = CounterTracker()
                if state.baselined:
                    tracker.update(0.0)  # a series born since the last scrape counted from zero
            resets = tracker.stats.resets
            delta = tracker.update(value)
            if delta is None and tracker.stats.resets > resets and math.isfinite(value):
                delta = value  # restarted from zero: what it counted since then
            if delta is not None:
                work[key[0]] += delta
        state.baselined = True
        return work

    def sample(self, tick: Tick) -> list[Point]:
        from collector.ingest import Progress

        points: list[Point] = []
        for t in self.targets:
            work = self.scrape(t)
            if work is None:
                continue
            if self._tracker is not None:
                self._tracker.record(Progress(
                    job=t.job, samples=work["samples"], tokens=work["tokens"], steps=work["steps"],
                    flops=work["flops"], kind=t.kind, precision=t.precision,
                    batch_size=t.batch_size, gpus=t.gpus))
                continue
            fields: dict[str, FieldValue | None] = {f: v for f, v in work.items() if v > 0}
            if not fields:
                continue  # an idle interval: without energy here, a point would say nothing
            if t.batch_size is not None:
                fields["batch_size"] = t.batch_size
            if t.gpus is not None:
                fields["gpus"] = len(t.gpus)
            points.append(point("job", {"job": t.job, "host": self.host, "kind": t.kind,
                                        "precision": t.precision or ""}, fields, tick.wall_ns))
        return points

    def close(self) -> None:
        self._state = {k: _TargetState() for k in self._state}


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def from_options(host: str, config: str | None = None,
                 interval_s: float | None = None) -> PromScrapeSource:
    """Registry factory: ``config`` is the path of a scrape TOML file (see examples/scrape/)."""
    del interval_s
    if not config:
        raise ConfigError("--source promscrape: needs a scrape config file (--scrape FILE); "
                          "see examples/scrape/vllm.toml")
    return PromScrapeSource(host, load_targets(config))
