"""`wattlens alerts`: evaluate alert rules (run), validate a rule file (check), show state, export Prometheus rules."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from collector.atomicfile import replace_text
from wattlens.config import default_store_url, option, positive_float

log = logging.getLogger("wattlens.alerts")


def default_state_file() -> str:
    """Where `alerts run` keeps its state: $XDG_STATE_HOME/wattlens/alerts-state.json."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "wattlens" / "alerts-state.json")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("alerts", help="alert rules: run, check, status, export-prometheus-rules",
                       description="Alert rules over the live data, with signed webhooks, Slack, "
                                   "Alertmanager, and export to Prometheus rules. "
                                   "See docs/alerting.md.")
    actions = p.add_subparsers(dest="alerts_action", metavar="ACTION")
    p.set_defaults(func=lambda _args: _usage(p))

    r = actions.add_parser("run", help="evaluate the rules on a schedule and notify the hooks",
                           description="Evaluate alert rules over a store every --interval seconds; "
                                       "keep state in --state-file; notify hooks.")
    option(r, "--store", default=default_store_url(), help="store URL to read (and write alert "
                                                           "transitions to)")
    _rules_arguments(r, env=False)
    option(r, "--interval", type=positive_float, default=60.0, help="seconds between evaluations")
    option(r, "--once", action="store_true", default=False,
           help="evaluate once, wait for deliveries, print the alerts and exit")
    option(r, "--state-file", default=default_state_file(),
           help="JSON file that keeps alert state across restarts")
    option(r, "--flush-timeout", type=positive_float, default=30.0,
           help="seconds to wait for deliveries in flight when stopping")
    r.add_argument("--config", help="TOML config file; settings under [alerts] "
                                    "(env WATTLENS_CONFIG)")
    r.set_defaults(func=run, _parser=r, _section="alerts")

    c = actions.add_parser("check", help="validate a rule file",
                           description="Validate a rule file; every problem is printed as "
                                       "FILE:LINE: rule 'NAME': FIELD: why.")
    _rules_arguments(c)
    c.set_defaults(func=check)

    s = actions.add_parser("status", help="show the alerts kept in the state file")
    s.add_argument("--state-file", default=os.environ.get("WATTLENS_STATE_FILE") or
                   default_state_file(), help="state file of `alerts run` (env WATTLENS_STATE_FILE)")
    s.set_defaults(func=status)

    e = actions.add_parser("export-prometheus-rules",
                           help="write equivalent Prometheus alerting rules",
                           description="Write Prometheus alerting rules over the agent's /metrics "
                                       "that match the rule file; rules PromQL cannot express "
                                       "are listed, not guessed.")
    _rules_arguments(e)
    e.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    e.add_argument("--group", default="wattlens", help="Prometheus rule group name")
    e.set_defaults(func=export)


def _rules_arguments(p: argparse.ArgumentParser, env: bool = True) -> None:
    """The rule file, as a positional FILE or as --rules (FILE wins when both are given)."""
    p.add_argument("rules_file", nargs="?", metavar="FILE",
                   help="rule file (TOML), e.g. examples/alerts-local.toml")
    if env:  # `run` reads --rules through option(), so it also comes from a --config file
        p.add_argument("--rules", default=os.environ.get("WATTLENS_RULES"),
                       help="rule file, the same as FILE (env WATTLENS_RULES)")
    else:
        option(p, "--rules", default=None, help="rule file, the same as FILE")


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _need_rules(args: argparse.Namespace) -> str:
    from collector.errors import ConfigError

    rules = getattr(args, "rules_file", None) or args.rules  # FILE, else --rules (or its env)
    if not rules:
        raise ConfigError("FILE: a rule file is needed, e.g. `wattlens alerts run "
                          "examples/alerts-local.toml` (or --rules FILE), got none")
    return str(rules)


def run(args: argparse.Namespace) -> int:
    from analytics.alerts.engine import Engine
    from analytics.alerts.hooks import Dispatcher
    from analytics.alerts.rules import load_rules
    from collector.store import open_store, redact_url

    ruleset = load_rules(_need_rules(args))
    state_path = Path(args.state_file)
    dispatcher = Dispatcher.from_ruleset(ruleset, state_path.parent)
    store: Any = None
    try:
        store = open_store(args.store)
        engine = Engine(store, ruleset, state_path, dispatcher)
        hooks = ", ".join(f"{h.name} ({h.type} {_where(h, dispatcher)})" for h in ruleset.hooks) or "none"
        log.info("%d rules over %s; hooks: %s; state in %s", len(ruleset.rules),
                 redact_url(store.url), hooks, state_path)
        if args.once:
            res = engine.evaluate()
            if not dispatcher.flush(args.flush_timeout):
                log.warning("deliveries still pending after %.0f s; they go to the dead-letter "
                            "files", args.flush_timeout)
            print(format_states(engine.states.values()))
            for err in res.errors:
                print(f"wattlens: error: {err}", file=sys.stderr)
            return 1 if res.errors else 0
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received signal %d, stopping", signum)
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        rounds = engine.run(args.interval, stop)
        log.info("stopped after %d evaluations", rounds)
        if not dispatcher.flush(args.flush_timeout):
            log.warning("deliveries still pending after %.0f s; they go to the dead-letter files",
                        args.flush_timeout)
        return 0
    finally:
        dispatcher.close()
        if store is not None:
            store.close()


def _where(hook: Any, dispatcher: Any) -> str:
    """Where a hook's notifications go, safe to log: a file hook's path, else the redacted URL."""
    path = getattr(dispatcher.deliveries.get(hook.name), "path", None)
    return str(path) if path is not None else str(hook.display_url())


def format_states(states: Any) -> str:
    """A table of alert states: state, rule, target, value, since."""
    from analytics.alerts.hooks import iso

    rows = sorted(states, key=lambda s: ({"firing": 0, "pending": 1}.get(s.state, 2), s.rule,
                                         s.target))
    if not rows:
        return "no alerts"
    lines = [f"{'STATE':<9} {'RULE':<28} {'TARGET':<28} {'VALUE':>12}     SINCE"]
    for s in rows:
        lines.append(f"{s.state:<9} {s.rule:<28} {s.target:<28} {s.value:>10.4g} {s.unit:<6} "
                     f"{iso(s.active_since_ns)}")
    return "\n".join(lines)


def check(args: argparse.Namespace) -> int:
    from analytics.alerts.rules import RuleFileError, load_rules

    try:
        ruleset = load_rules(_need_rules(args))
    except RuleFileError as exc:
        for line in exc.errors:
            print(f"wattlens: error: {line}", file=sys.stderr)
        return 2
    kinds = sorted({r.kind for r in ruleset.rules})
    print(f"ok: {ruleset.source}: {len(ruleset.rules)} rules ({', '.join(kinds)}), "
          f"{len(ruleset.hooks)} hooks")
    for h in ruleset.hooks:
        for var in (h.url_env, h.secret_env, h.token_env):
            if var and not os.environ.get(var):
                print(f"wattlens: note: hook {h.name!r}: environment variable {var} is not set "
                      f"here; `alerts run` needs it", file=sys.stderr)
    return 0


def status(args: argparse.Namespace) -> int:
    from analytics.alerts.engine import StateFile

    print(format_states(StateFile(Path(args.state_file)).load().values()))
    return 0


def export(args: argparse.Namespace) -> int:
    from analytics.alerts.promrules import export_rules
    from analytics.alerts.rules import load_rules

    ruleset = load_rules(_need_rules(args))
    result = export_rules(ruleset, group=args.group)
    for name, why in result.skipped.items():
        print(f"wattlens: note: rule {name!r} not exported: {why}", file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(result.yaml)
    else:
        out = Path(args.output)
        replace_text(out, result.yaml, durable=False)
        print(f"wrote {len(result.exported)} Prometheus rules to {out}", file=sys.stderr)
    return 0
