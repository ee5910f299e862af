"""`wattlens demo`: simulated fleet + embedded SQLite + dashboard, in one command."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from wattlens.commands.collect import add_agent_options
from wattlens.commands.dashboard import (
    add_dashboard_options,
    check_port_free,
    resolve_auth,
    serve_until_signal,
)
from wattlens.config import option, positive_int, state_dir

log = logging.getLogger("wattlens.demo")
NS = 1_000_000_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="simulated fleet + embedded store + dashboard, one command",
                       description="Run a simulated GPU fleet into an embedded SQLite store and "
                                   "serve the dashboard. Nothing to install.")
    add_agent_options(p, spool="demo-spool")  # never mix with a real agent's spool
    add_dashboard_options(p)
    option(p, "--backfill", default="24h",
           help="history to write first so charts are never empty (e.g. 2h, 24h, 7d; 0 = none)")
    option(p, "--with-real-job", action="store_true", default=False,
           help="also train a small transformer with torch on this machine (examples/), "
                "measured for real, so one job's PER on the dashboard is not simulated")
    option(p, "--real-job-steps", type=positive_int, default=3000,
           help="optimizer steps of the real job")
    from wattlens.commands import autopilot_opts

    autopilot_opts.add_options(p, demo=True)
    option(p, "--rules", default="default",
           help="alert rules evaluated in-process every minute, and over the backfilled history "
                "(default: the packaged rules, as examples/alerts-local.toml; none = no alerts)")
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
    from wattlens.commands import autopilot_opts
    from wattlens.commands.collect import AgentProcess

    seconds = 0.0 if str(args.backfill).strip() in ("0", "") else parse_duration_s(
        args.backfill, "--backfill")
    real_job = real_job_command(args) if args.with_real_job else None
    resolve_auth(args.dashboard_bind, args.auth)  # a refusal, a busy port or a bad rule file:
    check_port_free(args.dashboard_bind, args.port)  # all said before the backfill
    ruleset = DemoAlerts.load(args.rules)
    if args.autopilot:  # the demo's GPUs are simulated: enabling changes nothing real
        args.enable_actuation = True
        args.audit_log = str(state_dir() / autopilot_opts.DEMO_STATE / "cap-audit.jsonl")
        # Each simulated change is in the audit log and on the Autopilot page, not on the console
        # (two warnings a GPU a change, hundreds a minute with short holds).
        for name in ("wattlens.actuation", "wattlens.sources.nvml"):
            logging.getLogger(name).setLevel(logging.ERROR)
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
    alerts = DemoAlerts.start(store, ruleset, now_ns - int(seconds * NS), now_ns) if ruleset else None
    agent = AgentProcess.build(args, [fleet], store=store)
    agent_thread = agent.start_background()
    if agent.autopilot is not None:
        print(f"wattlens demo: autopilot tuning the simulated GPUs of jobs matching "
              f"{args.autopilot_jobs!r} within {args.max_slowdown:g} % slowdown, "
              f"{args.autopilot_hold:g} s a candidate limit; its changes on the Autopilot page "
              f"and in {args.audit_log}", flush=True)
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
        serve_until_signal(app, args.dashboard_bind, args.port, on_start="wattlens demo: ",
                           auth=args.auth)
    finally:
        if alerts is not None:
            alerts.stop()
        if job is not None and job.poll() is None:
            job.terminate()
            job.wait(30)
        agent.agent.stop()
        agent_thread.join(30)
        agent.close()
        print(f"wattlens demo: stopped ({agent.agent.stats.points_written:,} live points written)",
              flush=True)
    return 0


class DemoAlerts:
    """The demo's alert engine, on a thread: replays the backfilled history, then evaluates every minute.

    The replay runs while the dashboard already serves, so it never delays the
    demo; each replayed round sees only the data up to its own time.
    """

    REPLAY_STEP_S = 300.0  # the history is judged every 5 minutes; live rounds every minute
    INTERVAL_S = 60.0

    def __init__(self, engine: Any, dispatcher: Any, replay_from_ns: int, now_ns: int,
                 home: Path) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.home = home
        self.replay_from_ns, self.now_ns = replay_from_ns, now_ns
        self.replayed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wattlens-alerts", daemon=True)

    @staticmethod
    def load(rules: str) -> Any:
        """The rule set named by --rules (``default``: the packaged one), or None for ``none``."""
        from analytics.alerts.rules import DEFAULT_RULES, load_rules

        if rules.strip().lower() == "none":
            return None
        return load_rules(str(DEFAULT_RULES) if rules == "default" else rules)

    @classmethod
    def start(cls, store: Any, ruleset: Any, history_start_ns: int, now_ns: int) -> DemoAlerts:
        """Start the thread: replay [history_start_ns, now_ns] every 5 minutes, then live rounds."""
        import hashlib

        from analytics.alerts.engine import Engine
        from analytics.alerts.hooks import Dispatcher

        home = state_dir() / "demo-alerts"  # never mixed with a real `alerts run` state
        state = home / f"state-{hashlib.sha256(store.url.encode()).hexdigest()[:12]}.json"
        # The replay judges the whole history from its start: an earlier demo's state (its store
        # since deleted) would hold alerts as already firing, and their transitions would never
        # reach the new store, so the Alerts page would show fewer than the engine holds.
        state.unlink(missing_ok=True)
        dispatcher = Dispatcher.from_ruleset(ruleset, home)
        engine = Engine(store, ruleset, state, dispatcher)
        steps = int((now_ns - history_start_ns) / NS // cls.REPLAY_STEP_S)
        demo = cls(engine, dispatcher, now_ns - int(steps * cls.REPLAY_STEP_S * NS), now_ns, home)
        print(f"wattlens demo: alerts: {len(ruleset.rules)} rules from {ruleset.source}; judging "
              f"{(now_ns - demo.replay_from_ns) / NS / 3600:.1f} h of history in the background",
              flush=True)
        demo._thread.start()
        return demo

    def _run(self) -> None:
        rounds = self.engine.replay(self.replay_from_ns, self.now_ns, self.REPLAY_STEP_S,
                                    stop=self._stop)
        if self._stop.is_set():
            return
        print(f"wattlens demo: alerts: {len(self.engine.firing())} firing after {rounds} rounds over "
              f"the history; evaluated every minute now; notifications in {self.home}", flush=True)
        self.replayed.set()
        self.engine.run(self.INTERVAL_S, self._stop)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.dispatcher.close()


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
