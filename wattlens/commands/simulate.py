"""`wattlens simulate`: the simulated fleet's own command (write history, show the physics, the truth).

Subcommands are registered from ``SUBCOMMANDS`` (this module's) and ``EXTENSIONS`` (other modules,
each with ``register(subparsers)``): another subcommand is one line there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

NS = 1_000_000_000
KINDS_HELP = "train, llm-train, llm-infer, batch-infer, embed"
EXTENSIONS: tuple[str, ...] = ("wattlens.commands.simulate_serve",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    import importlib

    p = sub.add_parser("simulate", help="the simulated fleet: write history, show its physics and truth",
                       description="The simulated fleet the demo, the tests and the recommendation "
                                   "benchmark use (docs/simulator.md).")
    simsub = p.add_subparsers(dest="simulate_command", metavar="SUBCOMMAND")
    for reg in SUBCOMMANDS:
        reg(simsub)
    for name in EXTENSIONS:
        importlib.import_module(name).register(simsub)
    p.set_defaults(func=lambda _args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _hours(text: str) -> float:
    value = float(text)
    if not 0 < value <= 24 * 366:
        raise argparse.ArgumentTypeError(f"must be in (0, 8784] hours, got {text!r}")
    return value


def _fleet_options(p: argparse.ArgumentParser) -> None:
    from collector.sim.fleet import SCENARIOS
    from wattlens.config import positive_int

    p.add_argument("--hours", type=_hours, required=True, help="hours of history")
    p.add_argument("--end", default=None,
                   help="when the window ends: ISO time or 'now' (default: the last full hour, so "
                        "write and truth cover the same window)")
    p.add_argument("--nodes", type=positive_int, default=4, help="simulated nodes (default 4)")
    p.add_argument("--gpus", type=positive_int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="default",
                   help="which fleet (default: default; docs/simulator.md lists them)")
    p.add_argument("--seed", type=int, default=1, help="noise and schedule seed (default 1)")


def window_of(args: argparse.Namespace) -> tuple[int, int]:
    """(start ns, end ns) of the simulated window, aligned to the 10 s simulation tick."""
    from analytics.timeutil import parse_time_ns

    if args.end is None:
        now = time.time_ns()
        end = now - now % (3600 * NS)
    else:
        end = parse_time_ns(args.end, "--end")
        end -= end % (10 * NS)
    return end - int(args.hours * 3600) * NS, end


def _fleet(args: argparse.Namespace) -> Any:
    from collector.sources.simulated import SimulatedFleet

    return SimulatedFleet(nodes=args.nodes, gpus_per_node=args.gpus, seed=args.seed,
                          scenario=args.scenario, interval_s=getattr(args, "interval", 60.0))


# --- write -------------------------------------------------------------------------------------
def _register_write(simsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wattlens.config import default_store_url, positive_float

    p = simsub.add_parser("write", help="write simulated history into a store, then exit",
                          description="Write H hours of the simulated fleet into any store "
                                      "(sqlite:///, influxdb://, influxdb2://), with a progress bar.")
    _fleet_options(p)
    p.add_argument("--store", default=None, help=f"store URL (default {default_store_url()})")
    p.add_argument("--interval", type=positive_float, default=60.0,
                   help="seconds between points (default 60; energy is exact whatever the step)")
    p.set_defaults(func=_write)


def write_history(store: Any, fleet: Any, start_ns: int, end_ns: int, step_s: float,
                  label: str = "simulate") -> int:
    """Write the fleet's points for [start, end) in steps of ``step_s``, with a progress bar."""
    from wattlens.progress import Progress

    step_ns = max(1, int(step_s * NS))
    steps = max(1, -(-(end_ns - start_ns) // step_ns))
    written = 0
    batch: list[Any] = []
    with Progress(label, steps) as bar:
        t = start_ns
        while t < end_ns:
            nxt = min(end_ns, t + step_ns)
            batch.extend(fleet.points_between(t, nxt))
            t = nxt
            if len(batch) >= 20_000:
                store.write(batch)
                written += len(batch)
                batch = []
            bar.update(1, extra=f"{written:,} points")
        if batch:
            store.write(batch)
            written += len(batch)
        bar.update(0, extra=f"{written:,} points")
    return written


def _write(args: argparse.Namespace) -> int:
    from collector.store import open_store, redact_url
    from wattlens.config import default_store_url

    start, end = window_of(args)
    store = open_store(args.store or default_store_url())
    try:
        n = write_history(store, _fleet(args), start, end, args.interval)
    finally:
        store.close()
    print(f"wattlens simulate: wrote {n:,} points, {args.hours:g} h of scenario {args.scenario} "
          f"(seed {args.seed}) ending {_iso(end)} into {redact_url(store.url)}", flush=True)
    return 0


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / NS))


# --- caps --------------------------------------------------------------------------------------
def _register_caps(simsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wattlens.config import positive_float

    p = simsub.add_parser("caps", help="the physics: power, throughput, energy and time per cap",
                          description="For each power limit from the model's minimum to its TDP: "
                                      "the power drawn, throughput, energy and time per unit of "
                                      "work (one second of work at full clocks).")
    p.add_argument("--gpu", required=True, help="GPU model, a case-insensitive substring "
                                                "(V100-PCIE, A100-SXM4, H100, MI300X)")
    p.add_argument("--workload", required=True, help=f"kind of work: {KINDS_HELP}")
    p.add_argument("--util", type=float, default=1.0, help="utilisation 0..1 (default 1)")
    p.add_argument("--step", type=positive_float, default=None, help="cap step in W (default TDP/20)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=_caps)


def _caps(args: argparse.Namespace) -> int:
    from collector.errors import ConfigError
    from collector.sim.models import find_model
    from collector.sim.physics import KINDS, cap_table

    try:
        spec = find_model(args.gpu)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    kind = KINDS.get(args.workload)
    if kind is None:
        raise ConfigError(f"--workload: must be one of {KINDS_HELP}, got {args.workload!r}")
    if not 0 <= args.util <= 1:
        raise ConfigError(f"--util: must be in [0, 1], got {args.util!r}")
    rows = cap_table(spec, kind, args.step, args.util)
    if args.json:
        print(json.dumps({"gpu": spec.model, "workload": kind.name, "util": args.util,
                          "tdp_w": spec.tdp_w, "min_cap_w": spec.min_cap_w, "idle_w": spec.idle_w,
                          "source": kind.source, "rows": [r.__dict__ for r in rows]}, indent=2))
        return 0
    print(f"{spec.model}, {kind.name} at {100 * args.util:.0f}% utilisation "
          f"(limit {spec.min_cap_w:g}-{spec.tdp_w:g} W, idle {spec.idle_w:g} W)")
    print(f"{'cap_w':>7} {'power_w':>8} {'throughput':>10} {'energy_per_work_j':>18} "
          f"{'time_per_work_s':>16}  vs TDP")
    top = rows[-1]
    for r in rows:
        print(f"{r.cap_w:7.0f} {r.power_w:8.1f} {r.throughput:10.3f} {r.energy_per_work_j:18.1f} "
              f"{r.time_per_work_s:16.3f}  {100 * (r.energy_per_work_j / top.energy_per_work_j - 1):+.1f}% "
              f"energy, {100 * (r.time_per_work_s / top.time_per_work_s - 1):+.1f}% time")
    print(f"calibration: {kind.source}")
    return 0


# --- truth -------------------------------------------------------------------------------------
def _register_truth(simsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = simsub.add_parser("truth", help="the planted inefficiencies and their true savings",
                          description="What a perfect recommender would report for the window "
                                      "`simulate write` produces with the same options.")
    _fleet_options(p)
    p.add_argument("--lambda", dest="lams", type=float, action="append", default=None,
                   help="λ for power caps (repeatable; default 0.3, 0.5 and 0.8)")
    p.add_argument("--json", action="store_true", help="JSON (the default output is a summary)")
    p.set_defaults(func=_truth)


def _truth(args: argparse.Namespace) -> int:
    from collector.errors import ConfigError
    from collector.sim.truth import truth

    lams = args.lams or [0.3, 0.5, 0.8]
    bad = [x for x in lams if not 0 <= x <= 1]
    if bad:
        raise ConfigError(f"--lambda: must be in [0, 1], got {bad[0]!r}")
    start, end = window_of(args)
    result = truth(_fleet(args), start, end, lams)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"scenario {result['scenario']} seed {result['seed']}, {_iso(start)} .. {_iso(end)}")
    for item in result["items"]:
        lam = f" (λ={item['lam']:g})" if item["lam"] is not None else ""
        kg = item["savings_kg_co2_per_day"]
        saving = f"{kg:.3g} kg CO2/day" if kg is not None else f"{item['savings_kwh_per_day']:.3g} kWh/day"
        print(f"  {item['kind']:<16} {saving:>18}  {item['what']}{lam}")
    print(f"  healthy: {len(result['healthy_gpus'])} GPUs, {len(result['healthy_jobs'])} jobs")
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _register_write, _register_caps, _register_truth)
