"""`wattlens store init|downsample`: retention and rollups of the store, set up once or run on a schedule."""

from __future__ import annotations

import argparse
import time

from wattlens.config import default_store_url, option, positive_float

_STORE_HELP = ("store URL: sqlite:///path.db, influxdb://host:8086/DB, "
               "influxdb2://host:8086/BUCKET?org=ORG (token in WATTLENS_INFLUX_TOKEN)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", help="set up the store (retention, rollups) and downsample it",
                       description="Set up the time-series store the agent writes to.")
    actions = p.add_subparsers(dest="store_action", metavar="ACTION")
    init = actions.add_parser(
        "init", help="set the retention of raw points and of the 1m/5m/1h rollups",
        description="Set up what the store needs, idempotently. SQLite: the retention of each "
                    "tier (default raw 7d, 1m 90d, 1h kept); rollups are kept as points are "
                    "written. InfluxDB 1.x: the database, a default retention policy for raw "
                    "points (default 30d) and continuous queries that roll gpu, cpu, job and "
                    "facility up to 1m, 5m and 1h. InfluxDB 2.x: the bucket; run `wattlens store "
                    "downsample` on a schedule for rollups. See docs/influxdb.md.")
    option(init, "--store", default=default_store_url(), help=_STORE_HELP)
    option(init, "--raw-retention", default=None,
           help="how long raw points are kept (7d, 12w, 720h or INF; default: the store's)")
    option(init, "--rollup-1m-retention", default=None,
           help="how long 1-minute (and 5-minute) rollups are kept (default 90d)")
    option(init, "--rollup-1h-retention", default=None,
           help="how long 1-hour rollups are kept (default INF: kept)")
    option(init, "--no-rollups", action="store_true", default=False,
           help="InfluxDB 1.x: create no rollup policies or continuous queries")
    option(init, "--backfill-hours", type=positive_float, default=None,
           help="InfluxDB 1.x: also compute the rollups for the last N hours of raw data now")
    init.add_argument("--config", help="TOML config file; settings under [store] "
                                       "(env WATTLENS_CONFIG)")
    init.set_defaults(func=run_init, _parser=init, _section="store")
    down = actions.add_parser(
        "downsample", help="compute the 1m, 5m and 1h rollups of recent hours (InfluxDB 2.x/3.x)",
        description="Read the last N whole hours of raw points with InfluxQL and write their 1m, "
                    "5m and 1h rollups (sum, count, min, max per field) back as NAME_1m, NAME_5m "
                    "and NAME_1h, "
                    "which reads then use. Idempotent; run it hourly (cron, systemd timer). "
                    "InfluxDB 1.x does this with continuous queries, SQLite as points are written.")
    option(down, "--store", default=default_store_url(), help=_STORE_HELP)
    option(down, "--hours", type=positive_float, default=2.0,
           help="how many whole hours back to (re)compute (default 2)")
    down.add_argument("--config", help="TOML config file; settings under [store] "
                                       "(env WATTLENS_CONFIG)")
    down.set_defaults(func=run_downsample, _parser=down, _section="store")
    p.set_defaults(func=lambda _args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def run_init(args: argparse.Namespace) -> int:
    from collector.store import open_store, redact_url
    from collector.store.influx import init_store

    options: dict[str, object] = {"rollups": not args.no_rollups}
    for flag in ("--raw-retention", "--rollup-1m-retention", "--rollup-1h-retention"):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            options[flag[2:].replace("-", "_")] = str(value)
    store = open_store(args.store)
    try:
        lines = init_store(store, **options)
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


def run_downsample(args: argparse.Namespace) -> int:
    from collector.errors import ConfigError
    from collector.store import open_store, redact_url
    from collector.store.influx_rollups import downsample
    from collector.store.influx_v1 import InfluxStore

    store = open_store(args.store)
    try:
        if not isinstance(store, InfluxStore):
            raise ConfigError(f"--store: {store.url} keeps its rollups as points are written; "
                              f"downsample is for InfluxDB 2.x/3.x")
        end_ns = time.time_ns()
        start_ns = end_ns - int(args.hours * 3600e9)
        if store.rollup_layout == "rp":  # InfluxDB 1.x: the continuous queries' own SELECTs
            lines = store.backfill_rollups(start_ns, end_ns)
        else:
            lines = downsample(store, start_ns, end_ns)
    finally:
        store.close()
    print(f"{redact_url(store.url)}:")
    for line in lines:
        print(f"  {line}")
    return 0
