"""`wattlens store init`: create the database, raw retention policy and rollups in the store."""

from __future__ import annotations

import argparse
import time

from wattlens.config import default_store_url, option, positive_float


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", help="set up the store (database, retention, rollups)",
                       description="Set up the time-series store the agent writes to.")
    actions = p.add_subparsers(dest="store_action", metavar="ACTION")
    init = actions.add_parser(
        "init", help="create the database, the raw retention policy and the 1m/1h rollups",
        description="Create what the store needs, idempotently: on InfluxDB 1.x the database, "
                    "a default retention policy for raw points and continuous queries that "
                    "roll gpu, cpu, job and facility up to 1m and 1h; on InfluxDB 2.x the "
                    "bucket. SQLite needs nothing. See docs/influxdb.md.")
    option(init, "--store", default=default_store_url(),
           help="store URL: sqlite:///path.db, influxdb://host:8086/DB, "
                "influxdb2://host:8086/BUCKET?org=ORG (token in WATTLENS_INFLUX_TOKEN)")
    option(init, "--raw-retention", default="30d",
           help="how long raw points are kept (InfluxDB duration: 30d, 12w, INF)")
    option(init, "--rollup-1m-retention", default="90d", help="how long 1-minute rollups are kept")
    option(init, "--rollup-1h-retention", default="INF", help="how long 1-hour rollups are kept")
    option(init, "--no-rollups", action="store_true", default=False,
           help="create no rollup policies or continuous queries")
    option(init, "--backfill-hours", type=positive_float, default=None,
           help="also compute the rollups for the last N hours of raw data now")
    init.add_argument("--config", help="TOML config file; settings under [store] "
                                       "(env WATTLENS_CONFIG)")
    init.set_defaults(func=run_init, _parser=init, _section="store")
    p.set_defaults(func=lambda _args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def run_init(args: argparse.Namespace) -> int:
    from collector.store import open_store, redact_url
    from collector.store.influx import check_duration, init_store

    for flag in ("--raw-retention", "--rollup-1m-retention", "--rollup-1h-retention"):
        check_duration(flag, str(getattr(args, flag[2:].replace("-", "_"))))
    store = open_store(args.store)
    try:
        lines = init_store(
            store, raw_retention=args.raw_retention,
            rollup_1m_retention=args.rollup_1m_retention,
            rollup_1h_retention=args.rollup_1h_retention, rollups=not args.no_rollups)
        backfill = getattr(store, "backfill_rollups", None)
        if args.backfill_hours and backfill is not None and not args.no_rollups:
            end_ns = time.time_ns()
            lines += backfill(end_ns - int(args.backfill_hours * 3600e9), end_ns)
    finally:
        store.close()
    print(f"{redact_url(store.url)}:")  # the URL once (password hidden), then what was done
    prefix = f"{store.url}: "
    for line in lines:
        print(f"  {line.removeprefix(prefix)}")
    return 0
