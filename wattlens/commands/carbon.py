"""`wattlens carbon`: list the bundled grid intensities, or read live and forecast intensity from a provider."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

KINDS = ("world", "country", "us_state", "egrid", "cloud")  # analytics.grid_table.KINDS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("carbon", help="bundled grid intensities; live and forecast intensity",
                       description="Grid carbon intensity. `list`: every bundled code (countries, US "
                                   "state grids, US eGRID subregions, AWS/Azure/GCP regions) with its figure, signal, "
                                   "year, source and licence; each is accepted by --country and "
                                   "--region. `live`: the current figure (and forecast) from "
                                   "Electricity Maps or WattTime, key from the environment, "
                                   "cached, falling back to a bundled code. See docs/carbon.md.")
    cmds = p.add_subparsers(dest="carbon_command", metavar="ACTION")
    ls = cmds.add_parser("list", help="list the bundled codes")
    ls.add_argument("--json", action="store_true", help="print JSON (one object per row)")
    ls.add_argument("--kind", choices=KINDS, help="only rows of this kind")
    ls.set_defaults(func=run_list)
    live = cmds.add_parser("live", help="current (and forecast) intensity from a provider")
    live.add_argument("spec", metavar="PROVIDER:ZONE",
                      help="electricitymaps:DE or watttime:CAISO_NORTH (keys: ELECTRICITYMAPS_API_TOKEN, "
                           "or WATTTIME_USERNAME and WATTTIME_PASSWORD)")
    live.add_argument("--forecast", action="store_true", help="also print the forecast")
    live.add_argument("--fallback", metavar="CODE", help="bundled code to use when the provider fails")
    live.add_argument("--json", action="store_true", help="print JSON")
    live.add_argument("--base-url", help=argparse.SUPPRESS)  # tests point it at a local server
    live.add_argument("--cache-dir", help="cache folder (default ~/.cache/wattlens/carbon)")
    live.set_defaults(func=run_live)
    def no_action(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=no_action)


def run_list(args: argparse.Namespace) -> int:
    from analytics import grid_table

    rows = grid_table.listing(args.kind)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return 0
    lines = [f"{'code':<28} {'g/kWh':>7}  {'signal':<8} {'year':<4}  {'grid':<10}  name; source; licence"]
    lines += [f"{r.code:<28} {r.g_per_kwh:>7.1f}  {r.signal:<8} {r.year:<4}  {r.grid:<10}  "
              f"{r.name}; {r.source}; {r.licence}" for r in rows]
    lines.append(f"{len(rows)} codes; each works with --country CODE or --region CODE")
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `wattlens carbon list | head`
        # Python's documented recipe: the interpreter flushes stdout at exit, so point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%MZ")


def run_live(args: argparse.Namespace) -> int:
    from analytics import carbon_live

    got = carbon_live.live_or_table(args.spec, fallback=args.fallback, forecast=args.forecast,
                                    base_url=args.base_url, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(got.to_dict(), indent=1))
        return 0
    print(f"{got.zone}: {got.g_per_kwh:.0f} g CO2e/kWh ({got.signal}) at {_iso(got.time_ns)}, "
          f"from {got.source}")
    if got.note:
        print(f"note: {got.note}")
    for t_ns, g in got.forecast:
        print(f"  forecast {_iso(t_ns)}  {g:7.1f} g/kWh ({got.signal})")
    return 0
