"""`wattlens simulate serve --as dcgm-exporter|kepler|vllm`: the simulated fleet as that exporter."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("wattlens.simulate")


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, got {value}")
        return value
    return parse


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from collector.simexport import FORMATS

    p = actions.add_parser(
        "serve", help="serve the simulated fleet on /metrics in another exporter's format",
        description="Serve the simulated fleet on http://HOST:PORT/metrics exactly as "
                    "dcgm-exporter, Kepler (>= 0.10) or vLLM would (names, labels, units, "
                    "counter semantics), so a Prometheus or VictoriaMetrics can scrape it and "
                    "wattlens can read it back with --store prometheus://...?mapping=FORMAT. "
                    "Counters start at zero when the server starts. See docs/prometheus.md.")
    p.add_argument("--as", dest="fmt", required=True, choices=FORMATS, help="exporter format")
    p.add_argument("--port", type=_count(0, 65535), required=True,
                   help="TCP port (0 picks a free one and prints it)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; other hosts then need the "
                        "WATTLENS_AGENT_TOKEN bearer token)")
    p.add_argument("--nodes", type=_count(1, 10_000), default=4, help="simulated nodes (default 4)")
    p.add_argument("--gpus", type=_count(1, 16), default=8, help="GPUs per node (default 8)")
    p.add_argument("--seed", type=_count(0, 2**31), default=1, help="fleet seed (default 1)")
    p.add_argument("--mig", type=_count(0, 7), default=0,
                   help="dcgm-exporter: MIG instances per GPU, each repeating the GPU's "
                        "device counters (default 0: no MIG)")
    p.add_argument("--hpc-jobs", action="store_true",
                   help="dcgm-exporter: label GPUs with hpc_job (Slurm mapping) instead of "
                        "pod/namespace/container")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from collector.errors import ConfigError
    from collector.exporter import Response, RouteServer
    from collector.simexport import SimExporter
    from collector.sources.simulated import SimulatedFleet

    fleet = SimulatedFleet(nodes=args.nodes, gpus_per_node=args.gpus, seed=args.seed)
    exporter = SimExporter(fleet, args.fmt, mig=args.mig, hpc_jobs=args.hpc_jobs)
    token = os.environ.get("WATTLENS_AGENT_TOKEN") or None
    if args.host not in ("127.0.0.1", "::1", "localhost") and not token:
        raise ConfigError(f"--host: {args.host!r} is reachable from other machines; set "
                          "WATTLENS_AGENT_TOKEN so they must present it")
    server = RouteServer(args.host, args.port, token=token)
    server.route("GET", "/metrics", lambda _req: Response(
        200, exporter.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"))
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"--port: cannot listen on {args.host}:{args.port}: {exc}") from exc
    print(f"serving {args.nodes} simulated nodes x {args.gpus} GPUs as {args.fmt} on "
          f"{server.url}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
