"""Regenerate the simulated-fleet sections of docs/analytics.md from the current physics and analytics.

Usage: python scripts/gen_analytics_doc.py [--check]

Writes 24 h of the default simulated fleet (seed 1, ending 2026-11-28T00:00Z) into a temporary
SQLite store, computes the power-cap frontiers and the recommendations at λ ∈ {0.3, 0.5, 0.8}, and
the simulator's ground truth for the same window, and replaces the text between the
``<!-- generated:NAME -->`` / ``<!-- /generated:NAME -->`` markers. ``--check`` exits 1 if the
file would change (tests/analytics/test_analytics_doc.py runs the same rendering).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "analytics.md"
NS = 1_000_000_000
END_NS = 1_795_824_000 * NS  # 2026-11-28T00:00Z
LAMBDAS = (0.3, 0.5, 0.8)


def _g(x: float) -> str:
    return f"{x:.5g}"


def frontier_block(store_url: str, window: Any) -> str:
    from analytics.frontier import best_cap, break_even_lambda, frontiers, point_cost
    from collector.store import open_store

    out = []
    for f in frontiers(open_store(store_url), window):
        if len(f.points) < 2:
            continue
        best = {lam: best_cap(f, lam) for lam in LAMBDAS}
        out.append(f"**{f.label}** (unit: {f.unit}; P_max {f.p_max_w:.0f} W):\n")
        out.append("| cap | GPU-s per unit | J per unit | mean W per GPU | "
                   + " | ".join(f"cost({lam:g}) J/unit" for lam in LAMBDAS) + " |")
        out.append("|---|---|---|---|" + "---|" * len(LAMBDAS))
        for p in sorted(f.points, key=lambda p: -p.cap_w):
            costs = [(f"**{_g(point_cost(f, p, lam))}**" if best[lam] is p else _g(point_cost(f, p, lam)))
                     for lam in LAMBDAS]
            out.append(f"| {p.cap_w:.0f} W | {_g(p.time_s_per_unit)} | {_g(p.energy_j_per_unit)} | "
                       f"{p.mean_power_w:.0f} | " + " | ".join(costs) + " |")
        hi, lo = max(f.points, key=lambda p: p.cap_w), min(f.points, key=lambda p: p.cap_w)
        be = break_even_lambda(hi, lo, f.p_max_w)
        out.append(f"\nFrom {hi.cap_w:.0f} W to {lo.cap_w:.0f} W: "
                   f"{100 * (lo.energy_j_per_unit / hi.energy_j_per_unit - 1):+.1f} % energy and "
                   f"{100 * (lo.time_s_per_unit / hi.time_s_per_unit - 1):+.1f} % time per unit; "
                   + (f"the lower cap pays off from λ ≈ {be:.2f} (`break_even_lambda`), and is "
                      f"recommended once its cost(λ) is 2 % lower." if be is not None else
                      "one cap dominates at every λ.") + "\n")
    return "\n".join(out)


def recs_block(store_url: str, window: Any, truth: dict[str, Any]) -> str:
    from analytics.recommend import recommendations
    from collector.sim.score import score
    from collector.store import open_store

    store = open_store(store_url)
    out = ["| λ | kind | what | GPUs / jobs | saving per day | truth (physics) | error |",
           "|---|---|---|---|---|---|---|"]
    scores = []
    for lam in LAMBDAS:
        recs = recommendations(store, window, lam=lam)
        scores.append(score(truth, [r.to_dict() for r in recs], lam))
        errs = {**scores[-1]["savings_errors_pct"], **scores[-1]["estimate_errors_pct"]}
        items = {f"{i['kind']}: {i['what']}": i for i in truth["items"]
                 if i["lam"] is None or i["lam"] == lam}
        for r in recs:
            who = ", ".join(r.gpus) if r.gpus else (", ".join(r.jobs[:2]) + (" …" if len(r.jobs) > 2 else ""))
            key = next((k for k, i in items.items() if i["kind"] == r.kind and k in errs
                        and (set(r.gpus) == set(i["gpus"]) if i["gpus"] else True)), None)
            if r.kind == "carbon_window":
                got = f"{r.savings_kg_co2_per_day:.3g} kg CO2" if r.savings_kg_co2_per_day else "–"
                want = (f"{items[key]['savings_kg_co2_per_day']:.3g} kg CO2" if key else "–")
            else:
                got = f"{r.savings_kwh_per_day:.3g} kWh"
                want = f"{items[key]['savings_kwh_per_day']:.3g} kWh" if key else "–"
            err = f"{errs[key]:+.1f} %" + ("" if r.measured else " (estimate)") if key else "–"
            out.append(f"| {lam:g} | `{r.kind}` | {r.target} | {who} | {got} | {want} | {err} |")
    s = {lam: sc for lam, sc in zip(LAMBDAS, scores, strict=True)}
    out.append("")
    out.append("Scored with `collector/sim/score.py`: recall "
               + ", ".join(f"{s[lam]['recall']:.2f} at λ={lam:g}" for lam in LAMBDAS)
               + "; false positives (a recommendation naming a control GPU or job) "
               + ", ".join(str(s[lam]["false_positives"]) for lam in LAMBDAS)
               + f". Control groups: {', '.join(truth['healthy_gpus'])}.")
    return "\n".join(out)


def render() -> dict[str, str]:
    from analytics.timeutil import Window
    from collector.sim.truth import truth
    from collector.sources.simulated import SimulatedFleet
    from collector.store import open_store
    from wattlens.commands.simulate import write_history

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/day.db"
        start = END_NS - 24 * 3600 * NS
        store = open_store(url)
        write_history(store, SimulatedFleet(), start, END_NS, 60.0, label="docs")
        store.close()
        window = Window(start + 1, END_NS + 1)
        t = truth(SimulatedFleet(), start, END_NS, LAMBDAS)
        return {"frontier": frontier_block(url, window), "recommendations": recs_block(url, window, t)}


def apply(text: str, blocks: dict[str, str]) -> str:
    for name, body in blocks.items():
        pat = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"docs/analytics.md: marker <!-- generated:{name} --> missing")
        replacement = body.rstrip() + "\n"

        def _sub(m: re.Match[str], text: str = replacement) -> str:
            return m.group(1) + text + m.group(2)

        text = pat.sub(_sub, text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/analytics.md is stale")
    args = ap.parse_args()
    old = DOC.read_text()
    new = apply(old, render())
    if args.check:
        if new != old:
            print("docs/analytics.md is stale: run python scripts/gen_analytics_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
