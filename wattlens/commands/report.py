"""`wattlens report`: energy, carbon, cost, PER at every level, objectives and recommendations for a window."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from wattlens.config import default_store_url, option

FORMATS = ("table", "json", "md")
NS = 1_000_000_000


def unit_lambda(text: str) -> float:
    """The trade-off weight η: a number in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def joules(text: str) -> float:
    """The seed objective's λ_J: a finite number of joules, >= 0."""
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of joules >= 0, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="energy, carbon, cost, PER and recommendations for a window",
                       description="Report a window of a store: fleet energy, carbon and cost, PER "
                                   "at GPU, job, node, fleet and facility level, each job's "
                                   "objective and trade-off, power-cap frontiers, predictions and "
                                   "ranked recommendations. See docs/analytics.md.")
    add_window_options(p)
    option(p, "--tradeoff-weight", "--lambda", dest="tradeoff_weight", type=unit_lambda,
           default=0.5, help="trade-off weight η in [0, 1] of cost = η·E + (1−η)·P_max·T: 1 "
                             "minimises energy, 0 time (--lambda is its old name)")
    option(p, "--objective-lambda-j", dest="objective_lambda_j", type=joules, default=3.6e6,
           help="λ_J of the seed objective J = E + λ_J·P, in joules (P is the inference share, "
                "0..1); the default, 1 kWh, keeps the P term visible next to a job's energy")
    option(p, "--format", choices=FORMATS, default="table", help="output format")
    add_carbon_cost_options(p)
    p.add_argument("--config", help="TOML config file; settings under [report] (env WATTLENS_CONFIG)")
    for name, what in (("node", "one node (host)"), ("model", "one GPU model"), ("job", "one job"),
                       ("team", "one team's jobs (and their hosts)")):
        p.add_argument(f"--{name}", default="", help=f"only {what}: the same filter as the dashboard's "
                                                       f"?{name}= (docs/dashboard.md)")
    p.add_argument("--teams-csv", metavar="FILE", default=None,
                   help="also write the per-team showback (energy, PER, CO2, cost) as CSV for "
                        "chargeback; - for standard output")
    p.set_defaults(func=run, _parser=p, _section="report")


def add_window_options(p: argparse.ArgumentParser) -> None:
    """--store, --since and --until, shared with `wattlens objective --job`."""
    option(p, "--store", default=default_store_url(), help="store URL to read")
    option(p, "--since", default="24h",
           help="window start: ISO time (2026-11-28T00:00Z) or a duration before --until (24h, 7d)")
    option(p, "--until", default="latest",
           help="window end: ISO time, 'now', or 'latest' (the newest point in the store)")


def add_carbon_cost_options(p: argparse.ArgumentParser) -> None:
    option(p, "--price", default="0.15",
           help="price per kWh, optionally time-of-use: 0.15 or 0.15,17-21=0.32,0-6=0.08 (hours)")
    option(p, "--currency", default="USD", help="currency of --price")
    option(p, "--utc-offset", type=int, default=0, help="hours east of UTC for --price periods")
    option(p, "--carbon-csv", default=None,
           help="hourly grid intensity: CSV timestamp,region,g_per_kwh[,renewable_pct]")
    option(p, "--country", default=None,
           help="bundled annual average for hours with no hourly intensity (DE, FR, WORLD, ...)")
    option(p, "--region", default=None,
           help="carbon region of the store or CSV, or any code of `wattlens carbon list` (aws:us-east-1)")
    option(p, "--embodied", default=None,
           help="embodied carbon per GPU model for SCI, MODEL=KG:YEARS[,...] (H100=1200:5); overrides the table")
    option(p, "--sci-unit", default=None, help="SCI functional unit R: tokens, samples or steps")
    option(p, "--carbon-live", default=None,
           help="PROVIDER:ZONE forecast for future hours (electricitymaps:DE; key from the environment)")


def open_existing_store(url: str) -> Any:
    """Open a store for reading; a SQLite file that does not exist is an error, not a new empty file."""
    from collector.errors import ConfigError
    from collector.store import open_store

    if "://" not in url or url.startswith("sqlite:"):
        path = url if "://" not in url else unquote(urlsplit(url).netloc + urlsplit(url).path)
        if path.startswith("//"):  # sqlite:////abs/x.db: the path is /abs/x.db, shown so
            path = "/" + path.lstrip("/")
        if path and not Path(path).exists():
            raise ConfigError(f"--store: SQLite file {path!r} does not exist; run `wattlens collect` "
                              f"or `wattlens demo` first, or pass --store")
    return open_store(url)


def resolve_window(store: Any, since: str, until: str) -> Any:
    """The report window from --since/--until; 'latest' ends just after the newest point."""
    from analytics import queries
    from analytics.timeutil import Window, parse_duration_s, parse_time_ns
    from collector.errors import ConfigError

    now = time.time_ns()
    until_text = str(until).strip()
    if until_text == "latest":
        newest = queries.newest_time_ns(store)
        if newest is None:
            from collector.store import redact_url

            raise ConfigError(f"--store: {redact_url(store.url)} holds no gpu or job points; "
                              f"nothing to report")
        end = newest + 1
    else:
        end = parse_time_ns(until_text, "--until", now_ns=now)
    since_text = str(since).strip()
    try:
        start = end - int(parse_duration_s(since_text, "--since") * NS)
    except ConfigError:
        start = parse_time_ns(since_text, "--since", now_ns=now)
    return Window(start, end)


def check_carbon_options(settings: Any) -> None:
    """Fail on a bad --country or --carbon-csv before reading the store (and before a progress
    bar could start), so the error is the one line it should be."""
    from analytics import carbon

    if settings.country:
        carbon.annual_series(settings.country)
    if settings.carbon_csv:
        carbon.load_intensity_csv(settings.carbon_csv)


def build_settings(args: argparse.Namespace) -> Any:
    from analytics.context import Settings
    from analytics.cost import parse_tariff
    from analytics.embodied import parse_overrides
    from analytics.grid_table import lookup
    from collector.errors import ConfigError

    parse_overrides(args.embodied)  # a bad --embodied or --country fails before the store is read
    if args.country:
        lookup(args.country, "--country")
    if args.carbon_csv and not Path(args.carbon_csv).exists():
        raise ConfigError(f"--carbon-csv: file {str(args.carbon_csv)!r} does not exist")

    return Settings(tariff=parse_tariff(args.price, args.currency, args.utc_offset),
                    carbon_csv=args.carbon_csv, country=args.country, region=args.region,
                    carbon_live=args.carbon_live, embodied=args.embodied, sci_unit=args.sci_unit)


class LazyProgress:
    """A progress bar that appears only once the work has taken longer than ``delay_s``.

    The work runs on the calling thread and reports steps; a ticker thread draws,
    so the bar shows up (and moves) even while one long query is running.
    """

    def __init__(self, label: str, steps: tuple[str, ...], delay_s: float = 1.0,
                 stream: Any = None) -> None:
        self.label = label
        self.steps = steps
        self.delay_s = delay_s
        self.stream = stream or sys.stderr
        self.done = 0
        self.current = ""
        self.shown = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._bar: Any = None
        self._thread = threading.Thread(target=self._tick, name="wattlens-progress", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> LazyProgress:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def step(self, name: str) -> None:
        with self._lock:
            if self.current:
                self.done += 1
            self.current = name
        self._draw()

    def _draw(self) -> None:
        from wattlens.progress import Progress

        if time.monotonic() - self._start < self.delay_s:
            return
        with self._lock:
            if self._bar is None:
                self._bar = Progress(self.label, len(self.steps), stream=self.stream)
                self._bar.__enter__()
                self.shown = True
            self._bar.update(self.done - self._bar.done, extra=f"reading {self.current}"
                             if self.current != "analyse" else "analysing")

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            self._draw()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            if self._bar is not None:
                self._bar.update(len(self.steps) - self._bar.done, extra="done")
                self._bar.__exit__(exc_type, exc, tb)


def run(args: argparse.Namespace) -> int:
    from analytics.filters import Filter
    from analytics.report import STEPS, build_report, render
    from analytics.teams import to_csv
    from wattlens.runtime import settle

    settings = build_settings(args)
    check_carbon_options(settings)
    store = open_existing_store(args.store)
    try:
        window = resolve_window(store, args.since, args.until)
        settle()
        with LazyProgress("report", STEPS) as bar:
            report = build_report(store, window, args.tradeoff_weight, settings, progress=bar.step,
                                  objective_lambda_j=args.objective_lambda_j,
                                  flt=Filter(args.node, args.model, args.job, args.team))
    finally:
        store.close()
    flt = Filter(args.node, args.model, args.job, args.team)
    if args.teams_csv:
        _write_teams_csv(args.teams_csv, to_csv(report.teams, report.totals["currency"]))
        if args.teams_csv == "-":
            return 0
    if args.format == "json":
        print(report.to_json())
    else:
        if flt.active:
            print(f"Filtered to {flt.text()}: facility energy, carbon and cost are its IT energy "
                  f"× the site's PUE.\n")
        print(render(report, args.format), end="")
    return 0


def _write_teams_csv(path: str, text: str) -> None:
    """The CSV to a file (or standard output for ``-``); a path we cannot write is one line."""
    from collector.errors import ConfigError

    if path == "-":
        print(text, end="")
        return
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as exc:
        raise ConfigError(f"--teams-csv: cannot write {path!r}: {exc.strerror or exc}") from None
    print(f"teams CSV written to {path}", file=sys.stderr)
