"""`wattlens collect`: run the agent (sources -> store, with the Prometheus exporter)."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from wattlens.config import (
    agent_token,
    default_store_url,
    interval_seconds,
    option,
    port_number,
    positive_float,
    positive_int,
    state_dir,
)

log = logging.getLogger("wattlens.collect")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collect", help="run the agent: sample sensors and write to a store",
                       description="Sample GPU/CPU power, energy and job work on this node and "
                                   "write it to a store; serve Prometheus /metrics.")
    add_agent_options(p)
    option(p, "--source", default="auto",
           help="comma-separated sources: auto, sim, nvml, rapl, hwmon, cpu-estimate, promscrape "
                "(promscrape reads the --scrape file)")
    option(p, "--once", action="store_true", default=False,
           help="print one round of samples as a table and exit")
    option(p, "--duration", type=positive_float, default=None,
           help="stop after this many seconds (default: run until Ctrl-C)")
    option(p, "--scrape", default=None,
           help="TOML file of inference-server endpoints to scrape for work "
                "(see examples/scrape/vllm.toml)")
    option(p, "--sysfs-root", default="/sys",
           help="where the host's /sys is mounted (containers: /host/sys)")
    option(p, "--procfs-root", default="/proc",
           help="where the host's /proc is mounted (containers: /host/proc)")
    option(p, "--kubelet-socket", default="/var/lib/kubelet/pod-resources/kubelet.sock",
           help="the kubelet's PodResources socket, for namespace/pod/container tags on jobs "
                "(`off` to disable; absent: pods keep their cgroup UID names)")
    option(p, "--carbon-live", default=None,
           help="also write the `carbon` measurement from PROVIDER:ZONE every 5 min (electricitymaps:DE, "
                "watttime:CAISO_NORTH; key from the environment, see docs/carbon.md)")
    option(p, "--tdp-w", type=positive_float, default=None,
           help="CPU package TDP in W for the CPU estimate when no power sensor exists")
    option(p, "--enable-actuation", action="store_true", default=False,
           help="allow `wattlens cap` to change GPU power limits through this agent "
                "(needs root and WATTLENS_AGENT_TOKEN; every change is audited)")
    option(p, "--audit-log", default=str(state_dir() / "cap-audit.jsonl"),
           help="JSON-lines audit log of power-cap changes")
    from wattlens.commands import autopilot_opts

    autopilot_opts.add_options(p)
    p.add_argument("--config", help="TOML config file; settings under [collect] "
                                    "(env WATTLENS_CONFIG)")
    p.set_defaults(func=run, _parser=p, _section="collect")


def _scenario(text: str) -> str:
    from collector.sim.fleet import SCENARIOS

    if text not in SCENARIOS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(SCENARIOS)}, got {text!r}")
    return text


def _idle_policy(text: str) -> str:
    from collector.idle import IDLE_POLICIES

    if text not in IDLE_POLICIES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(IDLE_POLICIES)}, got {text!r}")
    return text


def _team_map(text: str) -> dict[str, str]:
    """``ns-a=team-x,ns-b=team-y``: Kubernetes namespace -> team (unmapped: the namespace)."""
    from collector.attribution import TEAM_RE

    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        ns, sep, team = (v.strip() for v in item.partition("="))
        if not sep or not TEAM_RE.fullmatch(ns) or not TEAM_RE.fullmatch(team):
            raise argparse.ArgumentTypeError(f"expected NAMESPACE=TEAM[,...] with names of "
                                             f"A-Z a-z 0-9 . _ : / @ + -, got {item!r}")
        out[ns] = team
    return out


def add_agent_options(p: argparse.ArgumentParser, spool: str = "spool") -> None:
    """Options shared by `collect` and `demo` (the demo spools to its own ``demo-spool``)."""
    option(p, "--store", default=default_store_url(),
           help="store URL: sqlite:///path.db, influxdb://host:8086/DB, "
                "influxdb2://host:8086/BUCKET?org=ORG")
    option(p, "--interval", type=interval_seconds, default=1.0,
           help="sampling interval in seconds, at least 0.05")
    option(p, "--prometheus-port", type=port_number, default=9464,
           help="port for Prometheus /metrics; 0 disables")
    option(p, "--bind", default="127.0.0.1",
           help="address the agent's HTTP server listens on; anything but loopback "
                "needs WATTLENS_AGENT_TOKEN")
    option(p, "--host", default=socket.gethostname(), help="host tag for this node's points")
    option(p, "--nodes", type=positive_int, default=4, help="simulated nodes (sim source)")
    option(p, "--gpus", type=positive_int, default=8, help="simulated GPUs per node (sim source)")
    option(p, "--seed", type=int, default=1, help="simulation seed (sim source)")
    option(p, "--scenario", default="default", type=_scenario,
           help="simulated fleet scenario (sim source; docs/simulator.md)")
    option(p, "--spool-dir", default=str(state_dir() / spool),
           help="on-disk spool for points the store could not take yet")
    option(p, "--http-timeout", type=positive_float, default=30.0,
           help="seconds the agent's HTTP server keeps a silent connection open")
    option(p, "--ingest-socket", default="auto",
           help="Unix socket for local job reports (the jobs API's default): auto is "
                "/run/wattlens/ingest.sock for root, else $XDG_RUNTIME_DIR/wattlens/ingest.sock; "
                "off disables")
    option(p, "--idle-policy", type=_idle_policy, default="allocation",
           help="who pays for idle (static) GPU and CPU power: allocation (the jobs holding the "
                "device), even (every job on the host alike) or unattributed (docs/attribution.md)")
    option(p, "--team-map", type=_team_map, default=None,
           help="Kubernetes namespace -> team for showback, NS=TEAM[,...]; an unmapped "
                "namespace is its own team")
    option(p, "--spool-max-mb", type=positive_float, default=256.0,
           help="spool size bound in MiB; beyond it the oldest points are dropped and counted")


def build_sources(args: argparse.Namespace, state: Any = None) -> list[Any]:
    """The sources named by --source; `auto` probes real sensors and says what it found."""
    from collector import sources as registry

    names = [n.strip() for n in str(args.source).split(",") if n.strip()]
    if not names:
        from collector.errors import ConfigError

        raise ConfigError(f"--source: expected a source name, got {args.source!r}")
    options: dict[str, Any] = {"host": args.host, "interval_s": args.interval}
    sysfs = str(getattr(args, "sysfs_root", None) or "/sys").rstrip("/")
    procfs = str(getattr(args, "procfs_root", None) or "/proc").rstrip("/")
    roots = {"powercap_root": f"{sysfs}/class/powercap", "hwmon_root": f"{sysfs}/class/hwmon",
             "proc_root": procfs}

    built: list[Any] = []
    for name in names:
        if name == "auto":
            autodetect = _autodetect()
            found, lines = autodetect(**options, **roots, tdp_w=getattr(args, "tdp_w", None),
                                      counter_state=state)
            for line in lines:
                log.info("source %s", line)
            built.extend(found)
            continue
        if name == "sim":
            from wattlens.commands.autopilot_opts import sim_state_path

            options_sim = {**options, "nodes": args.nodes, "gpus_per_node": args.gpus,
                           "seed": args.seed, "scenario": args.scenario,
                           "cap_state": sim_state_path(args)}
            source = registry.create(name, **options_sim)
        elif name == "rapl":
            source = registry.create(name, **options, root=roots["powercap_root"],
                                     counter_state=state)
        elif name == "nvml":
            source = registry.create(name, **options, counter_state=state)
        elif name == "hwmon":
            source = registry.create(name, **options, root=roots["hwmon_root"])
        elif name == "cpu-estimate":
            source = registry.create(name, **options, proc_root=procfs, tdp_w=args.tdp_w)
        elif name == "promscrape":
            source = registry.create(name, **options, config=args.scrape)
        else:
            source = registry.create(name, **options)
        probe = source.probe()
        if not probe.ok:
            from collector.errors import SourceUnavailable

            raise SourceUnavailable(f"source {name}: {probe.detail}")
        log.info("source %s: %s", name, probe.detail)
        built.append(source)
    if getattr(args, "carbon_live", None):
        from analytics.grid_table import live_spec  # a cloud region code -> its Electricity Maps zone
        from collector.sources.carbon_live import live_source

        spec = live_spec(args.carbon_live)
        # Points keep the code the operator gave (aws:us-east-1), so `--region` finds them.
        built.append(live_source(spec, region=str(args.carbon_live).partition(":")[2].strip()))
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
    from collector.counters import CounterState, boot_id
    from collector.sources.base import Tick

    # Saved counter readings, so energy used while the agent was down is not lost.
    state = CounterState(None if args.once else Path(args.spool_dir).parent / "counters.json",
                         boot=boot_id(args.procfs_root))
    sources = build_sources(args, state)
    if args.once:
        import time

        from collector.agent import SystemClock

        clock = SystemClock()
        # The first round primes counters; the second has increments. A source that samples
        # less often than every round (--carbon-live) shows its first round's point instead.
        first = [s.sample(Tick(clock.wall_ns(), clock.monotonic())) for s in sources]
        time.sleep(min(args.interval, 1.0))
        points = [p for s, got in zip(sources, first, strict=True)
                  for p in (s.sample(Tick(clock.wall_ns(), clock.monotonic())) or got)]
        print(format_points(points))
        return 0
    agent = AgentProcess.build(args, sources, counter_state=state)
    return agent.run_until_signal(args.duration)


class AgentProcess:
    """The agent with everything around it: store, spool, exporter, job ingest, actuation."""

    def __init__(self, agent: Any, store: Any, spool: Any, exporter: Any, sources: list[Any]) -> None:
        self.agent = agent
        self.store = store
        self.spool = spool
        self.exporter = exporter
        self.sources = sources
        self.autopilot: Any = None

    @classmethod
    def build(cls, args: argparse.Namespace, sources: list[Any], store: Any = None,
              counter_state: Any = None) -> AgentProcess:
        """Wire the agent from parsed options; ``store`` may be given already open (the demo)."""
        from pathlib import Path

        from collector.agent import Agent
        from collector.errors import ConfigError
        from collector.ingest import IngestApp, with_jobs
        from collector.spool import SpoolingSink
        from collector.store import open_store, redact_url

        token = agent_token()
        from collector.auth import is_loopback

        if not is_loopback(args.bind) and not token:
            raise ConfigError(f"--bind: {args.bind} is reachable from other hosts; set "
                              f"WATTLENS_AGENT_TOKEN (or WATTLENS_AGENT_TOKEN_FILE) so every "
                              f"request from them must carry it")
        scrape = getattr(args, "scrape", None)
        enable_actuation = bool(getattr(args, "enable_actuation", False))
        feeds: list[Any] = []
        if scrape and not any(getattr(s, "name", "") == "promscrape" for s in sources):
            from collector.sources.promscrape import PromScrapeSource, load_targets

            feeds.append(PromScrapeSource(args.host, load_targets(scrape)))
        wrapped, tracker = with_jobs(sources, args.host,
                                     proc_root=getattr(args, "procfs_root", None) or "/proc",
                                     feeds=feeds, kubelet_socket=getattr(args, "kubelet_socket", None),
                                     idle_policy=getattr(args, "idle_policy", None) or "allocation",
                                     team_map=getattr(args, "team_map", None))
        store = store if store is not None else open_store(args.store)
        if hasattr(store, "init"):
            try:
                store.init()
            except Exception as exc:  # the spool covers a store that is down at start
                log.warning("store set-up deferred: %s", exc)
        spool = SpoolingSink(store, Path(args.spool_dir), int(args.spool_max_mb * 1024 * 1024))
        log.info("writing to %s (spool %s)", redact_url(store.url), args.spool_dir)
        observers: list[Any] = []
        from wattlens.commands import autopilot_opts

        # One set of actuators (per simulated host with --source sim) for /v1/cap and the autopilot.
        actuators = autopilot_opts.actuators(args, sources, token)
        pilot = autopilot_opts.build(args, sources, actuators)
        if pilot is not None:  # sampled last (it writes its own points), and sees every round
            wrapped = [*wrapped, pilot]
        agent = Agent(wrapped, spool, args.interval, observers=observers,
                      counter_state=counter_state)
        exporter = None
        if args.prometheus_port:
            from collector.actuation import CapEndpoint
            from collector.exporter import Exporter

            sock = ingest_socket(getattr(args, "ingest_socket", "auto"))
            exporter = Exporter(agent.stats, spool, host=args.bind, port=args.prometheus_port,
                                token=token, unix_socket=sock,
                                http_timeout_s=float(getattr(args, "http_timeout", None) or 30.0),
                                unix_optional=str(getattr(args, "ingest_socket", "auto")) == "auto")
            observers.append(exporter)
            IngestApp(tracker, token=token, proc_root=getattr(args, "procfs_root", None) or "/proc",
                      socket_path=str(sock) if sock else None).mount(exporter)
            simulated = any(getattr(s, "name", "") == "sim" for s in sources)
            CapEndpoint(actuators, any_name=not simulated).mount(exporter)
        elif enable_actuation and pilot is None:  # the autopilot alone needs no HTTP
            raise ConfigError("--enable-actuation: needs the agent's HTTP server; set "
                              "--prometheus-port to a port, not 0")
        if pilot is not None:
            observers.append(pilot)
        agent.observers = observers
        process = cls(agent, store, spool, exporter, wrapped)
        process.autopilot = pilot
        return process

    def run_until_signal(self, duration_s: float | None = None) -> int:
        """Run until SIGINT/SIGTERM (or ``duration_s``); flush the spool and close everything."""

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received signal %d, stopping", signum)
            self.agent.stop()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        if self.autopilot is not None:  # the kill switch: every original limit back at once
            signal.signal(signal.SIGUSR1, lambda _s, _f: self.autopilot.request_kill())
        timer = threading.Timer(duration_s, self.agent.stop) if duration_s else None
        if timer:
            timer.daemon = True
            timer.start()
        if self.exporter is not None:
            try:
                self.exporter.start()
            except OSError as exc:
                from collector.errors import ConfigError

                self.close()
                raise ConfigError(f"--prometheus-port: cannot listen on {self.exporter.url}: "
                                  f"{exc.strerror}; choose another port or 0 to disable") from None
        try:
            self.agent.run()
        finally:
            if timer:
                timer.cancel()
            self.close()
        return 0

    def start_background(self) -> threading.Thread:
        """Start the exporter and the sampling loop on a thread (the demo serves pages meanwhile)."""
        if self.exporter is not None:
            try:
                self.exporter.start()
            except OSError as exc:  # e.g. a real agent already has the port: go on without it
                log.warning("no /metrics: cannot listen on %s (%s); use --prometheus-port",
                            self.exporter.url, exc.strerror)
                self.agent.observers = [o for o in self.agent.observers if o is not self.exporter]
                self.exporter = None
        thread = threading.Thread(target=self.agent.run, name="wattlens-agent", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        stats = self.agent.stats
        spool = self.spool
        # The same counters /metrics exports, each named, so the two always agree.
        log.info("stopped: %d rounds, %d points written, %d spooled; lost: %d in the write queue "
                 "(agent_dropped_points), %d to a full spool (spool_dropped_points), %d refused by "
                 "the store (spool_rejected_points)", stats.rounds, stats.points_written,
                 spool.depth_points, stats.points_dropped, spool.points_dropped,
                 spool.points_rejected)
        if self.exporter is not None:
            self.exporter.stop()
        for s in self.sources:
            try:
                s.close()
            except Exception as exc:
                log.warning("closing source %s: %s", getattr(s, "name", s), exc)
        self.spool.close()
        self.store.close()


def ingest_socket(setting: str | None) -> Path | None:
    """The Unix socket for local job reports: ``auto`` (the default place), ``off``, or a path."""
    from collector.http_server import agent_socket

    value = (setting or "auto").strip()
    if value.lower() in ("off", "none", "false", "0"):
        return None
    return agent_socket() if value.lower() == "auto" else Path(value)


def format_points(points: list[Any]) -> str:
    try:
        from collector.sources.autodetect import format_once
    except ImportError:
        return "\n".join(str(p) for p in points) or "(no points)"
    return str(format_once(points))

