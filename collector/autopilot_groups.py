"""From one agent round's points to the autopilot's per-group samples: which job runs on which GPUs,
whether it opted in, and what it did (pure functions; ``collector.autopilot_agent`` does the I/O).

A *group* is the set of GPUs of one host that one job ran on during the round (the job point's
``gpu_mask``). A job opts in with the tag ``autopilot=on`` (``wattlens.job(..., autopilot=True)``)
or by matching one of the agent's ``--autopilot-jobs`` patterns (shell globs over the job id or its
workload, e.g. ``llm-pretrain-*``; ``k8s:ml-train/*`` for every pod of a namespace). A group
whose GPUs another job also used in the round is never touched: the cap would slow a job that did
not opt in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collector.autopilot import Sample
from collector.schema import WORK_UNITS, Point, primary_work_unit

OPT_IN_TAG = "autopilot"
OPT_IN_VALUES = frozenset({"on", "true", "1", "yes"})
UNATTRIBUTED = "unattributed"
K8S_PREFIX = "k8s:"  # a rule over a pod's namespace/name (the kubelet's PodResources tags)


@dataclass(frozen=True)
class GroupRound:
    """One opted-in group's measurement in one round."""

    host: str
    job: str
    gpus: tuple[int, ...]
    work_unit: str
    sample: Sample
    caps_w: tuple[float, ...]  # the limit each GPU reported


def opted_in(tags: dict[str, str], rules: Sequence[str]) -> bool:
    """True when a job point's tags opt it in: the tag, or a pattern over the job id or workload,
    or (``k8s:NAMESPACE/POD``, globs) over a Kubernetes pod's namespace and name."""
    if tags.get(OPT_IN_TAG, "").lower() in OPT_IN_VALUES:
        return True
    job, workload = tags.get("job", ""), tags.get("workload", "")
    pod = f"{tags['namespace']}/{tags.get('pod', '')}" if tags.get("namespace") else ""
    for r in rules:
        if r.startswith(K8S_PREFIX):
            if pod and fnmatch.fnmatchcase(pod, r[len(K8S_PREFIX):]):
                return True
        elif fnmatch.fnmatchcase(job, r) or (workload and fnmatch.fnmatchcase(workload, r)):
            return True
    return False


def _mask_gpus(mask: object) -> tuple[int, ...]:
    if isinstance(mask, bool) or not isinstance(mask, (int, float)) or mask <= 0:
        return ()
    m = int(mask)
    return tuple(i for i in range(m.bit_length()) if m >> i & 1)


def group_rounds(points: Sequence[Point], seconds: float, rules: Sequence[str],
                 units: dict[tuple[str, str], str] | None = None) -> list[GroupRound]:
    """The opted-in groups of one round (``seconds`` long), each with its work, GPU energy and util.

    ``units`` remembers each group's work unit across rounds (the first one it reported).
    """
    units = units if units is not None else {}
    gpus: dict[tuple[str, int], Point] = {}
    jobs: list[tuple[dict[str, str], dict[str, Any], tuple[int, ...]]] = []
    used: dict[tuple[str, int], int] = {}
    time_ns = 0
    for p in points:
        time_ns = max(time_ns, p.time_ns)
        if p.measurement == "gpu":
            try:
                gpus[(p.tag("host") or "", int(p.tag("gpu") or ""))] = p
            except ValueError:
                continue  # a MIG instance or a device without an index: not cappable
        elif p.measurement == "job":
            tags, fields = p.tag_map, dict(p.field_map)
            if tags.get("job") == UNATTRIBUTED:
                continue
            mask = _mask_gpus(fields.get("gpu_mask"))
            for g in mask:
                used[(tags.get("host", ""), g)] = used.get((tags.get("host", ""), g), 0) + 1
            jobs.append((tags, fields, mask))
    out = []
    for tags, fields, mask in jobs:
        host, job = tags.get("host", ""), tags.get("job", "")
        if not mask or not opted_in(tags, rules):
            continue
        if any(used.get((host, g), 0) > 1 or (host, g) not in gpus for g in mask):
            continue
        key = (host, job)
        unit = units.get(key) or primary_work_unit({u: _num(fields.get(u)) for u in WORK_UNITS})
        if unit is None:
            continue
        units[key] = unit
        gp = [gpus[(host, g)] for g in mask]
        energy = sum(_num(p.field("energy_j")) for p in gp)
        util = sum(_num(p.field("util_pct")) for p in gp) / len(gp)
        caps = tuple(_num(p.field("power_limit_w")) for p in gp)
        out.append(GroupRound(host, job, mask, unit,
                              Sample(time_ns / 1e9, seconds, _num(fields.get(unit)), energy, util),
                              caps))
    return out


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)
