"""`wattlens demo`: simulated fleet + embedded SQLite + dashboard, in one command."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

from wattlens.commands.collect import add_agent_options
from wattlens.commands.dashboard import add_dashboard_options, serve_until_signal
from wattlens.config import option, positive_int, state_dir

log = logging.getLogger("wattlens.demo")
NS = 1_000_000_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="simulated fleet + embedded store + dashboard, one command",
                       description="Run a simulated GPU fleet into an embedded SQLite store and "
                                   "serve the dashboard. Nothing to install.")
    add_agent_options(p)
    add_dashboard_options(p)
    option(p, "--backfill", default="24h",
           help="history to write first so charts are never empty (e.g. 2h, 24h, 7d; 0 = none)")
    option(p, "--with-real-job", action="store_true", default=False,
           help="also train a small transformer with torch on this machine (examples/), "
                "measured for real, so one job's PER on the dashboard is not simulated")
    option(p, "--real-job-steps", type=positive_int, default=3000,
           help="optimizer steps of the real job")
    p.add_argument("--config", help="TOML config file; settings under [demo]")
    p.set_defaults(func=run, _parser=p, _section="demo")


def backfill(store: object, fleet: object, seconds: float, end_ns: int, step_s: float) -> int:
    """Write ``seconds`` of simulated history ending at ``end_ns``, with a progress bar."""
    from wattlens.commands.simulate import write_history

    steps = max(1, int(seconds // step_s))
    return write_history(store, fleet, end_ns - int(steps * step_s * NS), end_ns, step_s,
                         label="backfill")


def run(args: argparse.Namespace) -> int:
    from analytics.timeutil import parse_duration_s
    from collector.sources.simulated import SimulatedFleet
    from collector.store import open_store, redact_url
    from dashboard.app import create_app
    from wattlens.commands.collect import AgentProcess

    seconds = 0.0 if str(args.backfill).strip() in ("0", "") else parse_duration_s(
        args.backfill, "--backfill")
    real_job = real_job_command(args) if args.with_real_job else None
    if args.spool_dir == str(state_dir() / "spool"):
        args.spool_dir = str(state_dir() / "demo-spool")  # never mix with a real agent's spool
    store = open_store(args.store)
    print(f"wattlens demo: store {redact_url(store.url)}", flush=True)
    fleet = SimulatedFleet(nodes=args.nodes, gpus_per_node=args.gpus, seed=args.seed,
                           interval_s=args.interval, scenario=args.scenario)
    now_ns = time.time_ns()
    span = store.time_range("gpu")
    if span is not None and span[1] < now_ns:
        seconds = min(seconds, (now_ns - span[1]) / NS)  # only fill the gap since the last run
    if seconds >= 60:
        step_s = max(args.interval, 60.0 if seconds > 6 * 3600 else 15.0)
        n = backfill(store, fleet, seconds, now_ns, step_s)
        print(f"wattlens demo: backfilled {seconds / 3600:.1f} h, {n:,} points", flush=True)
    fleet._last_ns = now_ns  # live sampling continues where the backfill ended
    agent = AgentProcess.build(args, [fleet], store=store)
    agent_thread = agent.start_background()
    if agent.exporter is not None:
        print(f"wattlens demo: Prometheus metrics {agent.exporter.url}/metrics", flush=True)
    job = None
    if real_job is not None:
        job = subprocess.Popen([*real_job, "--store", store.url], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        print("wattlens demo: real job 'tiny-transformer' training on this machine "
              f"(pid {job.pid}); its PER appears under Jobs", flush=True)
    app = create_app(store, refresh_s=args.refresh)
    try:
        serve_until_signal(app, args.dashboard_bind, args.port, on_start="wattlens demo: ")
    finally:
        if job is not None and job.poll() is None:
            job.terminate()
            job.wait(30)
        agent.agent.stop()
        agent_thread.join(30)
        agent.close()
        print(f"wattlens demo: stopped ({agent.agent.stats.points_written:,} live points written)",
              flush=True)
    return 0


def real_job_command(args: argparse.Namespace) -> list[str]:
    """The command line of the example torch job; refuses clearly when it cannot run here."""
    import importlib.util
    from pathlib import Path

    from collector.errors import ConfigError

    script = Path(__file__).resolve().parents[2] / "examples" / "train_tiny_transformer.py"
    if not script.exists():
        raise ConfigError(f"--with-real-job: needs a source checkout with {script.name} in "
                          f"examples/; it is not part of an installed package")
    if importlib.util.find_spec("torch") is None:
        raise ConfigError("--with-real-job: torch is not installed; pip install 'wattlens[torch]' "
                          "(CPU: pip install torch==2.13.0)")
    return [sys.executable, str(script), "--steps", str(args.real_job_steps)]
