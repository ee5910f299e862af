"""`wattlens collect`: run the agent (sources -> store, with the Prometheus exporter)."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from typing import Any

from wattlens.config import default_store_url, option, port_number, positive_float, positive_int

log = logging.getLogger("wattlens.collect")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collect", help="run the agent: sample sensors and write to a store",
                       description="Sample GPU/CPU power, energy and job work on this node and "
                                   "write it to a store; serve Prometheus /metrics.")
    add_agent_options(p)
    option(p, "--source", default="auto",
           help="comma-separated sources: auto, sim, nvml, rapl, hwmon, cpu-estimate")
    option(p, "--once", action="store_true", default=False,
           help="print one round of samples as a table and exit")
    option(p, "--duration", type=positive_float, default=None,
           help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--config", help="TOML config file; settings under [collect] "
                                    "(env WATTLENS_CONFIG)")
    p.set_defaults(func=run, _parser=p, _section="collect")


def add_agent_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `collect` and `demo`."""
    option(p, "--store", default=default_store_url(),
           help="store URL: sqlite:///path.db, influxdb://host:8086/DB, "
                "influxdb2://host:8086/BUCKET?org=ORG")
    option(p, "--interval", type=positive_float, default=1.0, help="sampling interval in seconds")
    option(p, "--prometheus-port", type=port_number, default=9464,
           help="port for Prometheus /metrics; 0 disables")
    option(p, "--bind", default="127.0.0.1",
           help="address the agent's HTTP server listens on; anything but loopback "
                "needs WATTLENS_AGENT_TOKEN")
    option(p, "--host", default=socket.gethostname(), help="host tag for this node's points")
    option(p, "--nodes", type=positive_int, default=4, help="simulated nodes (sim source)")
    option(p, "--gpus", type=positive_int, default=8, help="simulated GPUs per node (sim source)")
    option(p, "--seed", type=int, default=1, help="simulation seed (sim source)")


def build_sources(args: argparse.Namespace) -> list[Any]:
    """The sources named by --source; `auto` probes real sensors and says what it found."""
    from collector import sources as registry

    names = [n.strip() for n in str(args.source).split(",") if n.strip()]
    if not names:
        from collector.errors import ConfigError

        raise ConfigError(f"--source: expected a source name, got {args.source!r}")
    options: dict[str, Any] = {"host": args.host, "interval_s": args.interval}
    built: list[Any] = []
    for name in names:
        if name == "auto":
            autodetect = _autodetect()
            found, lines = autodetect(**options)
            for line in lines:
                log.info("source %s", line)
            built.extend(found)
            continue
        if name == "sim":
            options_sim = {**options, "nodes": args.nodes, "gpus_per_node": args.gpus,
                           "seed": args.seed}
            source = registry.create(name, **options_sim)
        else:
            source = registry.create(name, **options)
        probe = source.probe()
        if not probe.ok:
            from collector.errors import SourceUnavailable

            raise SourceUnavailable(f"source {name}: {probe.detail}")
        log.info("source %s: %s", name, probe.detail)
        built.append(source)
    return built


def _autodetect() -> Any:
    try:
        from collector.sources.autodetect import autodetect
    except ImportError:  # sensors not built into this install
        from collector.errors import SourceUnavailable

        raise SourceUnavailable("--source auto: no real-sensor sources available; "
                                "use --source sim") from None
    return autodetect


def run(args: argparse.Namespace) -> int:
    from collector.agent import Agent
    from collector.sources.base import Tick
    from collector.store import open_store, redact_url

    sources = build_sources(args)
    if args.once:
        import time

        from collector.agent import SystemClock

        clock = SystemClock()
        for s in sources:  # the first round primes counters; the second has increments
            s.sample(Tick(clock.wall_ns(), clock.monotonic()))
        time.sleep(min(args.interval, 1.0))
        points = [p for s in sources for p in s.sample(Tick(clock.wall_ns(), clock.monotonic()))]
        print(format_points(points))
        return 0
    store = open_store(args.store)
    log.info("writing to %s", redact_url(store.url))
    agent = Agent(sources, store, args.interval)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()
        agent.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.duration:
        threading.Timer(args.duration, agent.stop).start()
    agent.run()
    for s in sources:
        s.close()
    store.close()
    log.info("stopped: %d rounds, %d points written, %d dropped", agent.stats.rounds,
             agent.stats.points_written, agent.stats.points_dropped)
    return 0


def format_points(points: list[Any]) -> str:
    try:
        from collector.sources.autodetect import format_once
    except ImportError:
        return "\n".join(str(p) for p in points) or "(no points)"
    return str(format_once(points))

