"""`wattlens collect --autopilot`: its options, and the autopilot wired to the agent's actuation."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from wattlens.config import option, positive_float, state_dir

log = logging.getLogger("wattlens.collect")


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value <= 50:
        raise argparse.ArgumentTypeError(f"must be between 0 and 50 (%), got {text}")
    return value


DEMO_STATE = "demo-autopilot"  # the demo's audit log, originals and kill switch, apart from an agent's


def add_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    """The autopilot's options; ``demo``: for `wattlens demo`, whose GPUs are simulated (no
    root or token to ask for), with its files apart from a real agent's."""
    option(p, "--autopilot", action="store_true", default=False,
           help="tune the power limits of the simulated GPUs of the jobs --autopilot-jobs names "
                "(default there: every job); nothing real changes; docs/autopilot.md" if demo else
                "tune the power limit of every opted-in job's GPUs within --max-slowdown "
                "(needs --enable-actuation, root and WATTLENS_AGENT_TOKEN; docs/autopilot.md)")
    option(p, "--autopilot-jobs", default="*" if demo else "",
           help="comma-separated globs over job ids or workloads that opt in (besides jobs "
                "tagged autopilot=on), e.g. 'llm-pretrain-*,bert-ft'; k8s:NAMESPACE/POD for pods, "
                "e.g. 'k8s:ml-train/*'")
    option(p, "--max-slowdown", type=_percent, default=5.0,
           help="the autopilot's slowdown budget in %% of the job's speed at its original limit")
    option(p, "--autopilot-hold", type=positive_float, default=60.0,
           help="seconds each candidate limit is measured")
    option(p, "--autopilot-settle", type=float, default=20.0,
           help="seconds after each change that are not measured")
    option(p, "--autopilot-step", type=_percent, default=5.0,
           help="candidate limits step down by this %% of the GPU's maximum limit")
    option(p, "--autopilot-kill-file",
           default=str(state_dir() / DEMO_STATE / "autopilot.stop" if demo else
                       state_dir() / "autopilot.stop"),
           help="kill switch: while this file exists every original limit is restored and the "
                "autopilot stays off (SIGUSR1: the same until the agent restarts)")


def originals_path(args: argparse.Namespace) -> Path:
    audit = getattr(args, "audit_log", None) or state_dir() / "cap-audit.jsonl"
    return Path(audit).parent / "autopilot-originals.json"


def sim_state_path(args: argparse.Namespace) -> Path | None:
    """Where the simulated GPUs keep limits set through actuation (they outlive the agent)."""
    if not (getattr(args, "autopilot", False) or getattr(args, "enable_actuation", False)):
        return None
    return originals_path(args).parent / "sim-gpu-state.json"


def build(args: argparse.Namespace, sources: list[Any], actuators: dict[str, Any]) -> Any:
    """The Autopilot for ``collect`` on the agent's ``actuators`` (see :func:`actuators`), or None;
    recovers limits a crashed run left changed."""
    from collector.errors import ConfigError

    wanted = bool(getattr(args, "autopilot", False))
    leftover = originals_path(args).exists()
    if not wanted and not leftover:
        return None
    enabled = bool(getattr(args, "enable_actuation", False))
    if not enabled:
        if wanted:
            raise ConfigError("--autopilot: changes GPU power limits, so it needs "
                              "--enable-actuation (and root and WATTLENS_AGENT_TOKEN)")
        log.warning("autopilot: %s lists power limits a previous run changed; start with "
                    "--enable-actuation to restore them", originals_path(args))
        return None
    simulated = any(getattr(s, "name", "") == "sim" for s in sources)
    if wanted and not simulated and os.geteuid() != 0:
        raise ConfigError("--autopilot: setting GPU power limits needs root: run the agent as root")
    from collector.autopilot import Settings
    from collector.autopilot_agent import Autopilot

    try:
        settings = Settings(max_slowdown=args.max_slowdown / 100, hold_s=args.autopilot_hold,
                            settle_s=args.autopilot_settle, step_frac=args.autopilot_step / 100)
    except ValueError as exc:
        raise ConfigError(f"--autopilot: {exc}") from None
    rules = [r.strip() for r in str(getattr(args, "autopilot_jobs", "") or "").split(",") if r.strip()]
    pilot = Autopilot(actuators, originals=originals_path(args), settings=settings, rules=rules,
                      kill_file=Path(args.autopilot_kill_file) if args.autopilot_kill_file else None)
    try:
        restored = pilot.recover()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if restored:
        log.warning("autopilot: restored %d original power limits", restored)
    return pilot if wanted else None


def actuators(args: argparse.Namespace, sources: list[Any], token: str | None) -> dict[str, Any]:
    """The agent's power-cap actuators, host -> PowerCapActuator, shared by its HTTP cap endpoint
    and the autopilot: one per simulated host on the simulated NVML with ``--source sim``, else one
    for this host on the real NVML. Changes need ``--enable-actuation`` (and the token)."""
    from collector.actuation import PowerCapActuator
    from collector.errors import ConfigError

    enabled = bool(getattr(args, "enable_actuation", False))
    audit = Path(getattr(args, "audit_log", None) or state_dir() / "cap-audit.jsonl")
    sim = next((s for s in sources if getattr(s, "name", "") == "sim"), None)
    try:
        if sim is not None:
            from collector.autopilot_sim import sim_actuators

            return dict(sim_actuators(sim, audit, token=token, enabled=enabled))
        nvml = next((s.nvml_module for s in sources if getattr(s, "name", "") == "nvml"), None)
        return {args.host: PowerCapActuator(host=args.host, enabled=enabled, token=token,
                                            audit_path=audit, nvml=nvml)}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
