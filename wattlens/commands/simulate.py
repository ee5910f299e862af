"""`wattlens simulate`: the simulated fleet outside the agent (each action in its own module)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="the simulated fleet: serve it as other exporters",
                       description="The simulated GPU fleet (collector/sources/simulated.py) "
                                   "outside the agent.")
    actions = p.add_subparsers(dest="simulate_action", metavar="ACTION")
    from wattlens.commands import simulate_serve

    simulate_serve.register(actions)
    p.set_defaults(func=lambda _args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2
