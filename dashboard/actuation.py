"""Apply a power-cap recommendation through each node's agent (POST /v1/cap with the agent's token)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("wattlens.dashboard.actuation")

ACTUATABLE = frozenset({"power_cap"})


@dataclass(frozen=True)
class CapStep:
    """One GPU's change in a plan."""

    host: str
    gpu: int
    watts: float


@dataclass(frozen=True)
class StepResult:
    """What the agent answered for one step: ok with before/after, or the error it gave."""

    step: CapStep
    ok: bool
    message: str


def plan(action: Mapping[str, Any] | None) -> list[CapStep]:
    """The GPU-by-GPU steps of a recommendation's action; [] when it is not a power cap."""
    if not action or action.get("type") not in ACTUATABLE:
        return []
    watts = action.get("watts")
    gpus = action.get("gpus") or {}
    if not isinstance(watts, (int, float)) or isinstance(watts, bool) or not isinstance(gpus, Mapping):
        return []
    steps = []
    for host, indices in sorted(gpus.items()):
        for g in indices:
            try:
                steps.append(CapStep(str(host), int(g), float(watts)))
            except (TypeError, ValueError):
                continue
    return steps


def describe(steps: list[CapStep]) -> str:
    """A sentence for the confirmation dialog."""
    if not steps:
        return "Nothing to change."
    hosts: dict[str, list[int]] = {}
    for s in steps:
        hosts.setdefault(s.host, []).append(s.gpu)
    where = "; ".join(f"{h}: GPU {', '.join(str(g) for g in gs)}" for h, gs in hosts.items())
    return (f"Set the power limit of {len(steps)} GPU(s) to {steps[0].watts:.0f} W ({where}). "
            f"The agents apply it through NVML and log it in their audit log; "
            f"`wattlens cap revert` undoes it.")


class AgentClient:
    """Talks to the agents' actuation endpoint; the token is sent as a bearer header, never logged.

    ``url_template`` names each node's agent, e.g. ``http://{host}:9464``; without ``{host}``
    every request goes to the one URL (a single agent, or a proxy in front of them).
    """

    def __init__(self, url_template: str, token: str, *, timeout_s: float = 15.0) -> None:
        if not token:
            raise ValueError("actuation needs WATTLENS_AGENT_TOKEN: the agents refuse cap changes "
                             "without it")
        if not url_template.startswith(("http://", "https://")):
            raise ValueError(f"--agent-url: expected http://HOST:PORT (with {{host}} for each "
                             f"node's agent), got {url_template!r}")
        self.url_template = url_template.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def apply(self, steps: list[CapStep], who: str) -> list[StepResult]:
        """Apply every step for real (not a dry run); each answer is logged without the token."""
        results = []
        for s in steps:
            url = self.url_template.replace("{host}", s.host) + "/v1/cap"
            body = json.dumps({"host": s.host, "gpu": s.gpu, "watts": s.watts, "dry_run": False,
                               "who": who[:64]}).encode()
            req = urllib.request.Request(  # noqa: S310 - the operator's own agent URL
                url, data=body, method="POST",
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {self._token}"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                    change = json.loads(resp.read())
                msg = f"{change.get('before_w', '?')} W → {change.get('after_w', s.watts)} W"
                results.append(StepResult(s, True, msg))
            except urllib.error.HTTPError as exc:
                try:
                    msg = str(json.loads(exc.read()).get("error", exc.reason))
                except (ValueError, AttributeError):
                    msg = str(exc.reason)
                results.append(StepResult(s, False, f"refused ({exc.code}): {msg}"))
            except (urllib.error.URLError, OSError) as exc:
                results.append(StepResult(s, False, f"cannot reach the agent at {url}: {exc}"))
            r = results[-1]
            log.warning("power cap via dashboard by %s: %s gpu %d -> %g W: %s", who, s.host, s.gpu,
                        s.watts, r.message if r.ok else f"FAILED {r.message}")
        return results
