"""Idle (static) power: a device's idle draw, and the operator's policy for sharing it among jobs.

Each device's energy over a round is split in two: idle = min(energy, idle draw x interval),
the static power the device burns whoever uses it, and active, the rest. Active energy is
shared by activity (:func:`collector.attribution.split_energy`); idle energy by the policy
(:data:`IDLE_POLICIES`, docs/attribution.md). Every policy conserves the total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from collector.attribution import EVEN_SPLIT, Presence, Split, split_energy

# --- idle (static) power and the policy that shares it --------------------------------

# A device's idle draw is the lowest power it drew at <= 2 % utilisation; where it has not been
# seen that idle, its model's typical idle figure (collector/sim/models.py). The one definition:
# the agent splits energy with it, and analytics (analytics/targets.py) uses it for idle GPUs.
IDLE_UTIL_MAX_PCT = 2.0
ALLOCATION = "allocation"  # idle goes to the jobs holding the device, by the time each held it
EVEN = "even"  # idle of every device goes evenly to the jobs running on the host
KEEP_UNATTRIBUTED = "unattributed"  # idle stays unattributed; jobs carry only their active energy
IDLE_POLICIES = (ALLOCATION, EVEN, KEEP_UNATTRIBUTED)
DEFAULT_IDLE_POLICY = ALLOCATION


def check_idle_policy(value: object, name: str = "--idle-policy") -> str:
    """The policy, or a ValueError naming the option and the value."""
    if value not in IDLE_POLICIES:
        raise ValueError(f"{name}: expected one of {', '.join(IDLE_POLICIES)}, got {value!r}")
    return str(value)


def idle_power_w(lowest_idle_w: float | None, model: str) -> tuple[float | None, str]:
    """A device's idle draw and where it comes from: ``lowest_idle_w`` (the lowest power it drew
    at <= IDLE_UTIL_MAX_PCT utilisation) where one was seen, else the model's typical idle figure,
    else None (unknown: all of its energy counts as active)."""
    if lowest_idle_w is not None and math.isfinite(lowest_idle_w) and lowest_idle_w >= 0:
        return lowest_idle_w, f"lowest power at <= {IDLE_UTIL_MAX_PCT:g}% utilisation"
    from collector.sim.models import GPU_SPECS

    spec = GPU_SPECS.get(model)
    if spec is not None:
        return spec.idle_w, "the model's typical idle figure"
    return None, "unknown"


def split_idle(idle_j: float, interval_s: float, holders: Mapping[str, Presence],
               host_jobs: Iterable[str], policy: str, *, held_share: bool = False) -> Split:
    """Share one device's idle energy by ``policy``; conserves ``idle_j`` like :func:`split_energy`.

    ``holders`` are the jobs on the device and when; their utilisation is ignored (idle power is
    paid for holding the device, not for using it) unless ``held_share``: on a MIG GPU a job
    holds only its instance, and its weight there is its instance's share of the GPU.
    ``host_jobs`` are every job on the host this interval.
    """
    if policy == ALLOCATION:
        return split_energy(idle_j, interval_s, holders if held_share else
                            {n: Presence(p.start_s, p.end_s) for n, p in holders.items()})
    if policy == EVEN:
        names = sorted(set(host_jobs))
        if not names or idle_j <= 0:
            return Split({}, idle_j, None)
        shares = dict.fromkeys(names, idle_j / len(names))
        return Split(shares, max(0.0, idle_j - math.fsum(shares.values())), EVEN_SPLIT)
    check_idle_policy(policy, "idle policy")
    return Split({}, idle_j, None)
