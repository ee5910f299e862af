"""Score recommendations (as dicts: ``Recommendation.to_dict()``) against ``truth()`` of the same window.

- recall: the share of planted items (at this λ) that a recommendation of the same kind names
  exactly: the same GPUs, else the same jobs (a start window: some of them), else the same site.
- false_positives: recommendations that name a healthy (control) GPU or job.
- unmatched: recommendations that match no planted item (reported, not counted as false positives:
  they name no control group).
- savings error: (recommended − true) / true per matched item, in kWh per day (kg CO2 for start
  windows); ``max_savings_error_pct`` over measured recommendations, ``max_estimate_error_pct`` over
  those labelled estimates (their gain is an assumption, not measured in the fleet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _matches(rec: Mapping[str, Any], item: Mapping[str, Any]) -> bool:
    if rec["kind"] != item["kind"]:
        return False
    if item["gpus"]:
        return set(rec["gpus"]) == set(item["gpus"])
    if item["jobs"]:
        if item["kind"] == "carbon_window":
            return bool(rec["jobs"]) and set(rec["jobs"]) <= set(item["jobs"])
        return set(rec["jobs"]) == set(item["jobs"])
    if item["site"]:
        return (rec.get("action") or {}).get("site") == item["site"]
    return False


def _error_pct(rec: Mapping[str, Any], item: Mapping[str, Any]) -> float | None:
    if item["kind"] == "carbon_window":
        got, want = rec.get("savings_kg_co2_per_day"), item.get("savings_kg_co2_per_day")
    else:
        got, want = rec.get("savings_kwh_per_day"), item.get("savings_kwh_per_day")
    if got is None or not want:
        return None
    return 100 * (got - want) / want


def score(truth: Mapping[str, Any], recs: Sequence[Mapping[str, Any]], lam: float) -> dict[str, Any]:
    """recall, false_positives, unmatched and savings errors of ``recs`` at ``lam``, with the details."""
    items = [i for i in truth["items"] if i["lam"] is None or abs(i["lam"] - lam) < 1e-9]
    healthy_gpus, healthy_jobs = set(truth["healthy_gpus"]), set(truth["healthy_jobs"])
    found = 0
    errors: list[tuple[float, float, str]] = []
    est_errors: list[tuple[float, float, str]] = []
    missed: list[str] = []
    used: set[int] = set()
    for item in items:
        hit = next((k for k, r in enumerate(recs) if k not in used and _matches(r, item)), None)
        if hit is None:
            missed.append(f"{item['kind']}: {item['what']}")
            continue
        used.add(hit)
        found += 1
        err = _error_pct(recs[hit], item)
        if err is not None:
            (errors if recs[hit].get("measured", True) else est_errors).append(
                (abs(err), err, f"{item['kind']}: {item['what']}"))
    false_pos = [r["id"] for r in recs
                 if set(r["gpus"]) & healthy_gpus or set(r["jobs"]) & healthy_jobs]
    unmatched = [r["id"] for k, r in enumerate(recs) if k not in used]
    return {
        "lambda": lam, "planted": len(items), "found": found,
        "recall": found / len(items) if items else 1.0,
        "false_positives": len(false_pos), "false_positive_ids": false_pos,
        "unmatched": len(unmatched), "unmatched_ids": unmatched, "missed": missed,
        "max_savings_error_pct": max(errors)[1] if errors else None,
        "max_estimate_error_pct": max(est_errors)[1] if est_errors else None,
        "savings_errors_pct": {w: round(e, 2) for _a, e, w in errors},
        "estimate_errors_pct": {w: round(e, 2) for _a, e, w in est_errors},
    }
