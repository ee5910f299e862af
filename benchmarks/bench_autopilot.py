"""The power-cap autopilot against the original limits and the oracle, on the simulated fleet.

The ``autopilot`` scenario (collector/sim/fleet.py) runs, in simulated time, three jobs with every
limit at TDP: compute-bound training (bert-large on A100), LLM training (1.3B on H100) and
latency-sensitive LLM serving (7B fp8 on H100). Over the same window, with the same seed (so the
same load noise), three runs are compared per job:

- **original**: the fleet as laid out (no autopilot);
- **autopilot**: ``collector.autopilot_sim.run_autopilot``: the agent's autopilot, its changes
  made through the actuation path on the simulated NVML, the physics obeying;
- **oracle**: the best static limit under the same slowdown budget, from the physics
  (``collector.sim.truth.best_static_cap``, 1 W grid, no noise).

Per job: ``energy_saved_pct`` (energy per unit of work vs original, over the whole window,
exploration included), ``oracle_saved_pct``, ``share_of_oracle_pct``, ``max_slowdown_pct`` (the
worst 5-minute window's throughput loss vs the original run), ``slowdown_pct`` (whole window) and
``converge_s`` (job start to the autopilot's first settled limit).

Usage: python benchmarks/bench_autopilot.py [--hours 3] [--max-slowdown 5] [--json out.json]
Prints JSON and a Markdown table (README, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NS = 1_000_000_000
DAY0 = 20_000 * 86400  # a fixed simulated day (2024-10-04), so every run is the same
SCENARIOS = (("compute-bound training", "node-00", "ap-bert"),
             ("LLM training", "node-01", "ap-llm"),
             ("latency-sensitive inference", "node-02", "ap-serve"))
WINDOW_S = 300


def _per_group(points: list[Any], host: str, prefix: str) -> tuple[dict[int, list[float]], int]:
    """5-minute buckets of [GPU energy J, work] of the job ``prefix*`` on ``host``."""
    mask = 0
    buckets: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    jobs = [p for p in points if p.measurement == "job" and p.tag("host") == host
            and (p.tag("job") or "").startswith(prefix)]
    for p in jobs:
        mask |= int(p.field("gpu_mask") or 0)
        buckets[p.time_ns // (WINDOW_S * NS)][1] += float(p.field("samples") or 0)
    for p in points:
        if p.measurement == "gpu" and p.tag("host") == host and mask >> int(p.tag("gpu") or 0) & 1:
            buckets[p.time_ns // (WINDOW_S * NS)][0] += float(p.field("energy_j") or 0)
    return buckets, mask


def measure(hours: float, max_slowdown: float, interval_s: float) -> list[dict[str, Any]]:
    from collector.autopilot import Settings
    from collector.autopilot_sim import run_autopilot
    from collector.sim.truth import best_static_cap
    from collector.sources.simulated import SimulatedFleet

    start, end = DAY0 * NS, int((DAY0 + hours * 3600) * NS)
    keep = lambda p: p.measurement in ("gpu", "job", "autopilot")  # noqa: E731
    settings = Settings(max_slowdown=max_slowdown / 100)
    runs = {}
    for label, enabled in (("original", False), ("autopilot", True)):
        fleet = SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            runs[label], _ = run_autopilot(fleet, start, end, interval_s, state_dir=Path(tmp),
                                           settings=settings, rules=["ap-*"], enabled=enabled,
                                           keep=keep)
            print(f"{label}: {hours:g} simulated hours in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
    oracle_fleet = SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot")
    out = []
    for name, host, prefix in SCENARIOS:
        orig, _ = _per_group(runs["original"].points, host, prefix)
        pilot, _ = _per_group(runs["autopilot"].points, host, prefix)
        e0, w0 = (sum(b[i] for b in orig.values()) for i in (0, 1))
        e1, w1 = (sum(b[i] for b in pilot.values()) for i in (0, 1))
        saved = 100 * (1 - (e1 / w1) / (e0 / w0))
        worst = max(100 * (1 - pilot[k][1] / orig[k][1]) for k in orig if orig[k][1] > 0)
        grp = next(g for g in oracle_fleet.groups if g.host == host
                   and g.runs[0].job.name.startswith(prefix))
        oracle = best_static_cap(oracle_fleet, grp, start, end, max_slowdown / 100)
        changes = [p for p in runs["autopilot"].of("autopilot") if p.tag("host") == host
                   and p.tag("event") == "change" and (p.tag("job") or "").startswith(prefix)]
        first_settle = next((p for p in runs["autopilot"].of("autopilot") if p.tag("host") == host
                             and p.tag("event") == "settled"), None)
        job_start = start + grp.runs[0].offset_s % 86400 * NS
        out.append({
            "scenario": name, "gpu_model": grp.model, "gpus": len(grp.gpu_indices),
            "original_cap_w": grp.cap_w,
            "autopilot_cap_w": float(first_settle.field("cap_w") or 0) if first_settle else grp.cap_w,
            "oracle_cap_w": oracle["cap_w"],
            "energy_saved_pct": round(saved, 2),
            "oracle_saved_pct": round(100 * oracle["saved_frac"], 2),
            "share_of_oracle_pct": round(100 * saved / (100 * oracle["saved_frac"]), 1)
            if oracle["saved_frac"] > 0 else None,
            "max_slowdown_pct": round(worst, 2),
            "slowdown_pct": round(100 * (1 - w1 / w0), 2),
            "oracle_slowdown_pct": round(100 * oracle["slowdown"], 2),
            "converge_s": round((first_settle.time_ns - job_start) / NS) if first_settle else None,
            "changes": len(changes),
        })
    return out


def markdown(rows: list[dict[str, Any]], budget: float, hours: float) -> str:
    lines = [f"Autopilot vs oracle, {hours:g} simulated hours, slowdown budget {budget:g} %:", "",
             "| job | GPUs | original | autopilot | oracle | energy saved | oracle saved | "
             "share of oracle | worst 5-min slowdown | converged after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        conv = f"{r['converge_s'] / 60:.1f} min" if r["converge_s"] is not None else "-"
        lines.append(f"| {r['scenario']} | {r['gpus']} x {r['gpu_model']} | {r['original_cap_w']:.0f} W "
                     f"| {r['autopilot_cap_w']:.0f} W | {r['oracle_cap_w']:.0f} W "
                     f"| {r['energy_saved_pct']:.1f} % | {r['oracle_saved_pct']:.1f} % "
                     f"| {r['share_of_oracle_pct']} % | {r['max_slowdown_pct']:.1f} % | {conv} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--max-slowdown", type=float, default=5.0, help="budget in %")
    ap.add_argument("--interval-s", type=float, default=10.0, help="agent round, simulated s")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = measure(args.hours, args.max_slowdown, args.interval_s)
    result = {"hours": args.hours, "max_slowdown_pct": args.max_slowdown, "scenarios": rows,
              "targets": {"share_of_oracle_pct": ">= 80", "max_slowdown_pct": f"<= {args.max_slowdown + 1:g}",
                          "converge_s": "minutes"}}
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(markdown(rows, args.max_slowdown, args.hours))
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
