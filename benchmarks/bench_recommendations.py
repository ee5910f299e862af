"""Recommendation quality: recall, false positives and savings error against the simulator's ground truth.

For each scenario and seed: ``wattlens simulate write`` puts 24 h of the simulated fleet into a
fresh SQLite store, ``collector.sim.truth`` computes the planted inefficiencies and their true
savings from the physics for the same window (``wattlens simulate truth``), and the recommender
runs at λ ∈ {0.3, 0.5, 0.8}. ``collector.sim.score`` matches them (docs/simulator.md):

- recall: planted items named with exactly their GPUs (else jobs, else site);
- false_positives: recommendations naming a healthy (control) GPU or job;
- max_savings_error_pct: the largest savings error of a measured recommendation;
- max_estimate_error_pct: the same for recommendations labelled estimates (assumed gains).

Usage: python benchmarks/bench_recommendations.py [--hours 24] [--json out.json] [--quick]
Prints a Markdown table (for README / docs/benchmarks.md) and the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NS = 1_000_000_000
END = "2026-11-28T00:00:00Z"  # fixed, so every run scores the same simulated days
RUNS = (("default", 1), ("default", 2), ("mixed", 1), ("v100-lab", 1), ("a100-serving", 3),
        ("healthy", 1), ("clock-lock", 1), ("clock-lock", 2))
LAMBDAS = (0.3, 0.5, 0.8)


def one(scenario: str, seed: int, hours: float, tmp: Path) -> list[dict[str, Any]]:
    from analytics.recommend import recommendations
    from analytics.timeutil import Window, parse_time_ns
    from collector.sim.score import score
    from collector.sim.truth import truth
    from collector.sources.simulated import SimulatedFleet
    from collector.store import open_store
    from wattlens.cli import main

    db = tmp / f"{scenario}-{seed}.db"
    argv = ["simulate", "write", "--hours", f"{hours:g}", "--end", END, "--scenario", scenario,
            "--seed", str(seed), "--store", f"sqlite:///{db}"]
    with contextlib.redirect_stdout(sys.stderr):  # its summary line: not part of the report
        if main(argv) != 0:
            raise SystemExit(f"simulate write failed: {argv}")
    end = parse_time_ns(END, "end")
    start = end - int(hours * 3600) * NS
    t0 = time.perf_counter()
    want = truth(SimulatedFleet(scenario=scenario, seed=seed), start, end, LAMBDAS)
    truth_s = time.perf_counter() - t0
    store = open_store(f"sqlite:///{db}")
    out = []
    for lam in LAMBDAS:
        t0 = time.perf_counter()
        recs = [r.to_dict() for r in recommendations(store, Window(start + 1, end + 1), lam=lam)]
        s = score(want, recs, lam)
        s.update(scenario=scenario, seed=seed, recommend_s=time.perf_counter() - t0, truth_s=truth_s)
        out.append(s)
    store.close()
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f} %"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | seed | λ | planted | recall | false positives | unmatched | "
             "max savings error (measured) | max error (estimates) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['seed']} | {r['lambda']:g} | {r['planted']} | "
                     f"{r['recall']:.2f} | {r['false_positives']} | {r['unmatched']} | "
                     f"{_pct(r['max_savings_error_pct'])} | {_pct(r['max_estimate_error_pct'])} |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    meas = [r["max_savings_error_pct"] for r in rows if r["max_savings_error_pct"] is not None]
    est = [r["max_estimate_error_pct"] for r in rows if r["max_estimate_error_pct"] is not None]
    worst_est: dict[str, float] = {}
    for r in rows:
        for what, err in r["estimate_errors_pct"].items():
            kind = what.split(":")[0]
            if abs(err) > abs(worst_est.get(kind, 0.0)):
                worst_est[kind] = err
    return {"runs": len(rows), "recall": min(r["recall"] for r in rows),
            "false_positives": sum(r["false_positives"] for r in rows),
            "unmatched": sum(r["unmatched"] for r in rows),
            "max_savings_error_pct": max(meas, key=abs) if meas else None,
            "max_estimate_error_pct": max(est, key=abs) if est else None,
            "worst_estimate_error_pct_by_kind": worst_est}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours per run (default 24)")
    ap.add_argument("--json", help="also write the JSON here")
    ap.add_argument("--quick", action="store_true", help="first two runs only")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for scenario, seed in RUNS[:2] if args.quick else RUNS:
            rows += one(scenario, seed, args.hours, Path(tmp))
    result = {"summary": summary(rows), "runs": rows, "hours": args.hours, "end": END,
              "wall_s": time.perf_counter() - t0}
    print(f"### Recommendations vs the simulator's truth ({len(rows) // len(LAMBDAS)} scenario/seed "
          f"runs × λ ∈ {{0.3, 0.5, 0.8}}, {args.hours:g} h each)\n")
    print(table(rows))
    s = result["summary"]
    print(f"\nOverall: recall {s['recall']:.2f} (lowest), {s['false_positives']} false positives, "
          f"{s['unmatched']} unmatched, largest savings error of a measured recommendation "
          f"{_pct(s['max_savings_error_pct'])}; of an estimate {_pct(s['max_estimate_error_pct'])} "
          f"(by kind: {', '.join(f'{k} {v:+.0f} %' for k, v in s['worst_estimate_error_pct_by_kind'].items())}).\n")
    text = json.dumps(result, indent=2)
    print("```json\n" + json.dumps(s, indent=2) + "\n```")
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
