"""Soak: a simulated fleet at 1 Hz through the agent into a real InfluxDB, scraped by a real Prometheus.

Usage: python scripts/soak.py [--gpus 1000] [--duration-s 600] [--json out.json]

Starts InfluxDB 1.x and Prometheus (Debian packages) on free loopback ports with temp
data dirs, runs `wattlens collect --source sim` against them, polls the dashboard's
refresh view over the InfluxDB store, samples the agent's RSS and CPU, and at the end
checks: points stored equal points sampled, RSS and CPU flat (slopes reported), no error
in the agent's log, Prometheus holds one power series per GPU. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures_influx import influx_query, influxdb_process
from tests.fixtures_prometheus import prometheus_process
from tests.servers import free_port, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class SoakResult:
    gpus: int
    duration_s: float
    rounds: int = 0
    points_written: int = 0
    points_dropped: int = 0
    gpu_points_stored: int = 0
    carbon_points_stored: int = 0
    rss_mib_start: float = 0.0
    rss_mib_end: float = 0.0
    rss_slope_mib_per_h: float = 0.0
    cpu_pct_mean: float = 0.0
    cpu_slope_pct_per_h: float = 0.0
    dashboard_polls: int = 0
    dashboard_p95_ms: float = 0.0
    prometheus_gpu_series: int = 0
    log_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (seconds), per hour."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process from /proc."""
    rss_kib = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = float(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return rss_kib / 1024, cpu_s


def influx_count(server: object, measurement: str, field_name: str) -> int:
    body = json.loads(influx_query(server, f'SELECT COUNT("{field_name}") FROM "{measurement}"',
                                   db="wattlens"))  # type: ignore[arg-type]
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def run_soak(gpus: int, duration_s: float, *, interval_s: float = 1.0,
             workdir: Path | None = None, progress: bool = True) -> SoakResult:
    from collector.store import open_store
    from dashboard import views

    result = SoakResult(gpus=gpus, duration_s=duration_s)
    work = Path(workdir or tempfile.mkdtemp(prefix="wattlens-soak-"))
    influx = influxdb_process(work / "influxdb")
    influx.start()
    agent_port = free_port()
    prom = prometheus_process(work / "prometheus", [f"127.0.0.1:{agent_port}"], 5.0)
    prom.start()
    log_path = work / "agent.log"
    nodes = max(1, gpus // 8)
    argv = [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", str(nodes),
            "--gpus", str(gpus // nodes), "--interval", str(interval_s), "--store",
            f"influxdb://127.0.0.1:{influx.port}/wattlens", "--prometheus-port", str(agent_port),
            "--spool-dir", str(work / "spool"), "--host", "soak"]
    agent = subprocess.Popen(argv, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    samples: list[tuple[float, float, float]] = []  # (t, rss MiB, cpu s)
    poll_ms: list[float] = []
    try:
        wait_until(lambda: influx_count(influx, "gpu", "power_w") > 0, 120, "first points")
        store = open_store(f"influxdb://127.0.0.1:{influx.port}/wattlens")
        start = time.monotonic()
        next_poll = start
        while (now := time.monotonic()) - start < duration_s:
            if agent.poll() is not None:
                result.failures.append(f"agent exited early with {agent.returncode}")
                break
            rss, cpu = proc_sample(agent.pid)
            samples.append((now - start, rss, cpu))
            if now >= next_poll:
                t0 = time.perf_counter()
                views.fleet_view(store, "1h", "host")
                poll_ms.append((time.perf_counter() - t0) * 1000)
                next_poll = now + 10
            if progress:
                print(f"\rsoak {now - start:5.0f}/{duration_s:.0f} s  RSS {rss:6.1f} MiB",
                      end="", file=sys.stderr, flush=True)
            time.sleep(2.0)
        if progress:
            print(file=sys.stderr)
        query = urllib.parse.urlencode({"query": "count(wattlens_gpu_power_watts)"})
        with urllib.request.urlopen(f"{prom.url}/api/v1/query?{query}", timeout=10) as resp:
            data = json.loads(resp.read())["data"]["result"]
        result.prometheus_gpu_series = int(float(data[0]["value"][1])) if data else 0
        store.close()
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        agent.wait(120)
        output = log_path.read_text(errors="replace")
        m = re.search(r"stopped: (\d+) rounds, (\d+) points written, \d+ spooled; lost: (\d+) in "
                      r"the write queue", output)
        if m:
            result.rounds, result.points_written, result.points_dropped = map(int, m.groups())
        else:
            result.failures.append("the agent did not log its final counts")
        result.gpu_points_stored = influx_count(influx, "gpu", "power_w")
        result.carbon_points_stored = influx_count(influx, "carbon", "intensity_g_per_kwh")
        prom.stop()
        influx.stop()
    result.log_errors = [line for line in output.splitlines()
                         if " ERROR " in line or "Traceback" in line][:10]
    if samples:
        warm = [s for s in samples if s[0] >= min(30.0, duration_s / 3)] or samples
        result.rss_mib_start, result.rss_mib_end = warm[0][1], warm[-1][1]
        result.rss_slope_mib_per_h = slope_per_hour([s[0] for s in warm], [s[1] for s in warm])
        cpu_pct = [(b[2] - a[2]) / (b[0] - a[0]) * 100 for a, b in itertools.pairwise(warm)
                   if b[0] > a[0]]
        mids = [(a[0] + b[0]) / 2 for a, b in itertools.pairwise(warm) if b[0] > a[0]]
        result.cpu_pct_mean = sum(cpu_pct) / len(cpu_pct) if cpu_pct else 0.0
        result.cpu_slope_pct_per_h = slope_per_hour(mids, cpu_pct)
    if poll_ms:
        poll_ms.sort()
        result.dashboard_polls = len(poll_ms)
        result.dashboard_p95_ms = poll_ms[min(len(poll_ms) - 1, int(0.95 * len(poll_ms)))]
    if result.gpu_points_stored != gpus * result.rounds:
        result.failures.append(f"gpu points stored {result.gpu_points_stored} != sampled "
                               f"{gpus * result.rounds}")
    if result.carbon_points_stored != result.rounds:
        result.failures.append(f"rounds stored {result.carbon_points_stored} != {result.rounds}")
    if result.points_dropped:
        result.failures.append(f"{result.points_dropped} points dropped")
    if result.log_errors:
        result.failures.append(f"errors in the agent log: {result.log_errors[0]}")
    if result.prometheus_gpu_series != gpus:
        result.failures.append(f"Prometheus holds {result.prometheus_gpu_series} GPU power series, "
                               f"expected {gpus}")
    return result


def to_markdown(r: SoakResult) -> str:
    rows = [
        ("fleet", f"{r.gpus} simulated GPUs at 1 Hz, {r.duration_s:.0f} s"),
        ("rounds sampled / stored", f"{r.rounds} / {r.carbon_points_stored}"),
        ("GPU points sampled / stored", f"{r.gpus * r.rounds} / {r.gpu_points_stored}"),
        ("points dropped", str(r.points_dropped)),
        ("agent RSS after warm-up", f"{r.rss_mib_start:.1f} → {r.rss_mib_end:.1f} MiB "
                                    f"(slope {r.rss_slope_mib_per_h:+.1f} MiB/h)"),
        ("agent CPU", f"{r.cpu_pct_mean:.1f} % of a core (slope {r.cpu_slope_pct_per_h:+.1f} "
                      f"points/h)"),
        ("dashboard refresh on InfluxDB, p95", f"{r.dashboard_p95_ms:.0f} ms over "
                                               f"{r.dashboard_polls} polls"),
        ("Prometheus GPU power series", str(r.prometheus_gpu_series)),
        ("errors in the agent log", str(len(r.log_errors))),
        ("verdict", "PASS" if r.ok else "FAIL: " + "; ".join(r.failures)),
    ]
    return "| soak | result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--duration-s", type=float, default=600.0)
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    result = run_soak(args.gpus, args.duration_s, interval_s=args.interval_s,
                      progress=sys.stderr.isatty())
    print(to_markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
