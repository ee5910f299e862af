"""The `wattlens` command: subcommands are modules in wattlens/commands/, each importing its layer lazily."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from wattlens import __version__

# One line per command module; each defines register(subparsers).
COMMANDS: tuple[str, ...] = (
    "collect",
    "demo",
    "dashboard",
    "cap",
    "store",
    "report",
    "objective",
    "alerts",
    "simulate",
    "carbon",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattlens",
        description="Energy monitor for GPU fleets: power, energy, work per joule (PER), "
                    "carbon, cost and what to change.",
    )
    parser.add_argument("--version", action="version", version=f"wattlens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"wattlens.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from collector.errors import ConfigError, WattlensError
    from wattlens.runtime import tune_gc

    tune_gc()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "_parser", None) is not None:
            from wattlens.config import resolve

            resolve(args._parser, args, args._section)
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"wattlens: error: {exc}", file=sys.stderr)
        return 2
    except WattlensError as exc:
        print(f"wattlens: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
