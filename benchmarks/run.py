"""Run every benchmark at a size that fits in about 10 minutes and write one Markdown report.

Usage (from the repository root): python benchmarks/run.py [--out docs/benchmarks.md] [--only NAME]

Each benchmark measures against a reference taken in the same run (the raw ceiling or a
peer tool) and prints Markdown tables; this script runs them one after another, with a
progress line per benchmark, and collects their output under a description of the
machine. The README quotes the numbers from that report. The individual scripts take
larger sizes for longer, steadier runs (see each one's --help).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    argv: tuple[str, ...]
    timeout_s: int


SUITE = (
    Bench("sources", "per-sample cost of each sensor source; 1 Hz integration error vs the counter",
          ("benchmarks/bench_sources.py", "--rounds", "500", "--seeds", "5",
           "--duration-s", "300"), 120),
    Bench("influx-write", "agent write path into real InfluxDB vs pre-serialized ceiling",
          ("benchmarks/bench_influx_write.py", "--points", "100000", "--rounds", "2"), 180),
    Bench("influx-ingest", "points/s one InfluxDB node ingests on this machine",
          ("benchmarks/bench_influx_ingest.py", "--duration", "15"), 120),
    Bench("agent-rss", "agent RSS with a 1,000-GPU simulated fleet at 1 Hz",
          ("benchmarks/bench_agent_rss.py", "--duration-s", "60", "--every-s", "5"), 150),
    Bench("job-overhead", "slowdown of a torch training step from tracking, vs untracked and "
                          "vs CodeCarbon", ("benchmarks/bench_job_overhead.py", "--steps", "100",
                                            "--rounds", "2"), 240),
    Bench("report", "`wattlens report` over 1,000 GPUs vs merely reading the raw points",
          ("benchmarks/bench_report.py", "--gpus", "1000", "--hours", "1", "--interval-s", "1"),
          240),
    Bench("dashboard", "Fleet page refresh p50/p95 on 1,000 GPUs x 24 h vs pulling raw points",
          ("benchmarks/bench_dashboard.py", "--gpus", "1000", "--hours", "24", "--interval-s",
           "60", "--refreshes", "20", "--naive-runs", "1"), 300),
    Bench("http-attacks", "agent RSS, threads and /metrics latency with 2,000 held connections "
                          "vs idle", ("benchmarks/bench_http_attacks.py",), 120),
    Bench("recommendations", "recommendations vs the simulator's ground truth: recall, false "
                             "positives, savings error", ("benchmarks/bench_recommendations.py",), 600),
    Bench("autopilot", "the power-cap autopilot vs the original limits and the oracle",
          ("benchmarks/bench_autopilot.py",), 120),
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB; Python "
            f"{platform.python_version()}; {platform.system()} {platform.release()}; "
            f"load average {load:.1f} at start")


def run(bench: Bench) -> tuple[str, float, int]:
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, *bench.argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=bench.timeout_s,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out, rc = proc.stdout.strip(), proc.returncode
        if rc != 0:
            out += "\n\n```\n" + "\n".join(proc.stderr.strip().splitlines()[-15:]) + "\n```"
    except subprocess.TimeoutExpired:
        out, rc = f"(timed out after {bench.timeout_s} s)", 124
    return out, time.monotonic() - started, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "RESULTS.md"))
    ap.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    args = ap.parse_args()
    chosen = [b for b in SUITE if not args.only or b.name in args.only]
    sections = [f"# wattlens benchmarks\n\nRun {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
                f"with `python benchmarks/run.py` on: {machine()}.\n\nEvery figure is compared "
                "with a reference measured in the same run; on a shared machine compare the "
                "ratios, not the absolute rates.\n"]
    failed = 0
    total_start = time.monotonic()
    for i, bench in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {bench.name}: {bench.what} ...", file=sys.stderr, flush=True)
        out, took_s, rc = run(bench)
        failed += rc != 0
        status = "" if rc == 0 else f" — FAILED (exit {rc})"
        print(f"[{i}/{len(chosen)}] {bench.name}: {took_s:.0f} s{status}", file=sys.stderr,
              flush=True)
        sections.append(f"## {bench.name}: {bench.what}\n\n`python {' '.join(bench.argv)}` "
                        f"({took_s:.0f} s){status}\n\n{out}\n")
    sections.append(f"Total: {time.monotonic() - total_start:.0f} s.\n")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(sections))
    print(f"wrote {out_path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
