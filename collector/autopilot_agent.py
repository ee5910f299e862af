"""The power-cap autopilot on the agent: measurements from each round, changes through actuation.

It is an agent *observer* (it sees every round's points) and a *source* (it writes its own
``autopilot`` points: each change with the measurements behind it, and per group a window of
energy, work and the energy saved against the original limit). The decisions are
``collector.autopilot``'s; this module does the I/O and the safety:

- only groups that opted in (``collector.autopilot_groups``) and that no other job shares;
- every change through :class:`collector.actuation.PowerCapActuator` (enabled, token, root,
  [min, max], audited with the measurements);
- each GPU's original limit is written to ``originals`` (fsynced) before its first change and
  restored when the job ends, on exit and SIGTERM (``close``), and at the next start after a
  crash (``recover``);
- the kill switch: when ``kill_file`` exists, every original limit is restored at once and the
  autopilot stays off until the file is gone; after :meth:`request_kill` (SIGUSR1) the same, until
  the agent restarts.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.atomicfile import replace_text
from collector.autopilot import Decision, GroupController, Limits, Settings
from collector.autopilot_groups import GroupRound, group_rounds
from collector.logutil import LogOnce
from collector.schema import Point, point
from collector.sources.base import Probe, Tick

log = logging.getLogger("wattlens.autopilot")
WHO = "autopilot"
GONE_ROUNDS = 3  # a group not seen for this many rounds has ended: its limits go back
OTHER_HAND_S = 30.0  # a limit that differs from ours this long after our last change was set by
OTHER_ROUNDS = 2  # someone else (`wattlens cap`, nvidia-smi) for this many rounds: theirs wins


class Originals:
    """The original limit of every GPU the autopilot changed, kept in a JSON file that survives a crash."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[tuple[str, int], float]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {(str(e["host"]), int(e["gpu"])): float(e["original_w"]) for e in raw["gpus"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"autopilot originals {self.path}: unreadable ({exc}); restore the "
                             "limits from the audit log (`wattlens cap revert`) and delete it") from None

    def save(self, originals: Mapping[tuple[str, int], float]) -> None:
        if not originals:
            self.path.unlink(missing_ok=True)
            return
        body = {"gpus": [{"host": h, "gpu": g, "original_w": w}
                         for (h, g), w in sorted(originals.items())]}
        replace_text(self.path, json.dumps(body))


@dataclass
class _Group:
    ctrl: GroupController
    gpus: tuple[int, ...]
    unit: str
    missing: int = 0
    foreign: int = 0  # consecutive rounds a GPU reported a limit the autopilot did not set
    ledger: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # s, J, work, saved J


class Autopilot:
    """Observer + source that runs one :class:`GroupController` per opted-in group."""

    name = "autopilot"

    def __init__(self, actuators: Mapping[str, Any], *, originals: Path, settings: Settings | None = None,
                 rules: Sequence[str] = (), kill_file: Path | None = None) -> None:
        self.actuators = dict(actuators)
        self.settings = settings or Settings()
        self.rules = tuple(rules)
        self.kill_file = kill_file
        self.originals = Originals(originals)
        self._orig: dict[tuple[str, int], float] = {}
        self._groups: dict[tuple[str, str, tuple[int, ...]], _Group] = {}
        self._units: dict[tuple[str, str], str] = {}
        self._out: list[Point] = []
        self._last_ns: int | None = None
        self._kill = threading.Event()
        self.paused = False
        self.refused: set[tuple[str, str, tuple[int, ...]]] = set()
        self._warn = LogOnce(log)

    # --- start and stop -----------------------------------------------------------------------
    def recover(self) -> int:
        """Restore limits a previous run left changed (it crashed or was killed); how many."""
        self._orig = self.originals.load()
        if self._orig:
            log.warning("autopilot: restoring %d original power limits a previous run left "
                        "changed (%s)", len(self._orig), self.originals.path)
        return self._restore_all("recover after an unclean stop")

    def close(self) -> None:
        """Restore every original limit (agent exit, SIGTERM)."""
        self._restore_all("agent exit")

    def request_kill(self) -> None:
        """The kill switch (safe from a signal handler): restore everything at the next round and
        stay off until the agent restarts."""
        self._kill.set()

    # --- Source protocol ----------------------------------------------------------------------
    def probe(self) -> Probe:
        return Probe.found(f"power-cap autopilot on {', '.join(sorted(self.actuators))}")

    def sample(self, tick: Tick) -> list[Point]:
        out, self._out = self._out, []
        return out

    # --- Observer -----------------------------------------------------------------------------
    def __call__(self, points: Sequence[Point]) -> None:
        now_ns = max((p.time_ns for p in points if p.measurement in ("gpu", "job")), default=None)
        if now_ns is None:
            return
        last, self._last_ns = self._last_ns, now_ns
        if self._killed():
            return
        if last is None or now_ns <= last:
            return
        seen = set()
        for r in group_rounds(points, (now_ns - last) / 1e9, self.rules, self._units):
            key = (r.host, r.job, r.gpus)
            if key in self.refused:
                continue
            seen.add(key)
            grp = self._groups.get(key) or self._start(key, r)
            if grp is not None:
                self._step(key, grp, r, now_ns)
        for key in [k for k in self._groups if k not in seen]:
            grp = self._groups[key]
            grp.missing += 1
            if grp.missing >= GONE_ROUNDS:
                self._end(key, "the job ended")

    # --- internals ----------------------------------------------------------------------------
    def _killed(self) -> bool:
        on = self._kill.is_set() or (self.kill_file is not None and self.kill_file.exists())
        if on and not self.paused:
            log.warning("autopilot: kill switch (%s): restoring every original power limit",
                        "signal" if self._kill.is_set() else self.kill_file)
            self._restore_all("kill switch")
            self._groups.clear()
            self.paused = True
        elif not on and self.paused:
            log.warning("autopilot: kill switch removed: resuming")
            self.paused = False
        return self.paused

    def _start(self, key: tuple[str, str, tuple[int, ...]], r: GroupRound) -> _Group | None:
        actuator = self.actuators.get(r.host)
        if actuator is None:
            return None
        try:
            limits = [actuator.limits(g) for g in r.gpus]
            lo = max(x[0] for x in limits)
            hi = min(x[1] for x in limits)
            current = {x[2] for x in limits}
            if len(current) != 1 or not lo <= min(current) <= hi:
                raise ValueError(f"gpus {list(r.gpus)} have different limits {sorted(current)} W")
            ctrl = GroupController(Limits(lo, hi, current.pop()), self.settings)
        except Exception as exc:
            self._warn.warning(f"start {key}", f"autopilot: not steering {r.job} on {r.host} "
                                               f"gpus {list(r.gpus)}: {exc}")
            self.refused.add(key)
            return None
        log.info("autopilot: steering %s on %s gpus %s (limit %g W, range %g-%g W)", r.job,
                 r.host, list(r.gpus), ctrl.limits.original_w, lo, hi)
        grp = self._groups[key] = _Group(ctrl, r.gpus, r.work_unit)
        return grp

    def _step(self, key: tuple[str, str, tuple[int, ...]], grp: _Group, r: GroupRound,
              now_ns: int) -> None:
        grp.missing = 0
        if self._changed_by_someone_else(key, grp, r):
            return
        ctrl, s = grp.ctrl, r.sample
        base = ctrl.baseline
        saved = 0.0
        if base is not None and base.work > 0 and ctrl.cap_w != ctrl.limits.original_w:
            saved = s.work * base.energy_j / base.work - s.energy_j
        led = grp.ledger
        for i, v in enumerate((s.seconds, s.energy_j, s.work, saved)):
            led[i] += v
        if led[0] >= self.settings.hold_s:
            self._out.append(point("autopilot", {"host": r.host, "job": r.job, "event": "window"}, {
                "cap_w": ctrl.cap_w, "original_w": ctrl.limits.original_w, "gpus": len(r.gpus),
                "seconds": led[0], "energy_j": led[1], "work": led[2], "saved_j": led[3],
                "work_unit": r.work_unit}, now_ns))
            grp.ledger = [0.0, 0.0, 0.0, 0.0]
        before = ctrl.state
        decision = ctrl.observe(s)
        if decision is not None:
            self._apply(key, grp, decision, now_ns)
        if ctrl.state == "settled" and before != "settled" and key in self._groups:
            ref = ctrl.settled
            self._out.append(point("autopilot", {"host": r.host, "job": r.job, "event": "settled"}, {
                "cap_w": ctrl.cap_w, "original_w": ctrl.limits.original_w, "gpus": len(r.gpus),
                "throughput": ref.throughput if ref else None, "power_w": ref.power_w if ref else None,
                "per": ref.per if ref else None, "work_unit": r.work_unit}, now_ns))

    def _changed_by_someone_else(self, key: tuple[str, str, tuple[int, ...]], grp: _Group,
                                 r: GroupRound) -> bool:
        """True (and the group is left alone from now on) when a GPU's limit is not the one the
        autopilot set, well after its last change: an operator's limit wins. Their GPUs' originals
        are forgotten, the group's other GPUs get theirs back."""
        ctrl = grp.ctrl
        since = ctrl.last_change_s
        settled_for = r.sample.time_s - since if since is not None else float("inf")
        theirs = [g for g, cap in zip(r.gpus, r.caps_w, strict=True) if abs(cap - ctrl.cap_w) > 0.5]
        grp.foreign = grp.foreign + 1 if theirs and settled_for >= OTHER_HAND_S else 0
        if grp.foreign < OTHER_ROUNDS:
            return False
        host, job, _gpus = key
        log.warning("autopilot: the limit of %s gpus %s (%s) was changed by someone else; leaving "
                    "the group alone", host, theirs, job)
        for g in theirs:
            self._orig.pop((host, g), None)
        self.refused.add(key)
        self._end(key, "another hand changed a limit")
        return True

    def _apply(self, key: tuple[str, str, tuple[int, ...]], grp: _Group, d: Decision,
               now_ns: int) -> None:
        host, job, gpus = key
        actuator = self.actuators[host]
        detail = {"job": job, "gpus": list(gpus), "work_unit": grp.unit, **d.audit()}
        try:
            for g in gpus:
                if (host, g) not in self._orig:
                    self._orig[(host, g)] = grp.ctrl.limits.original_w
                    self.originals.save(self._orig)  # before the first change, durably
                actuator.apply(g, d.cap_w, who=WHO, dry_run=False, detail=detail)
        except Exception as exc:
            log.error("autopilot: changing %s on %s gpus %s refused (%s); restoring its limits "
                      "and leaving it alone", job, host, list(gpus), exc)
            self.refused.add(key)
            self._end(key, "a change was refused")
            return
        m, b = d.measured, d.baseline
        self._out.append(point("autopilot", {"host": host, "job": job, "event": "change",
                                             "reason": d.reason}, {
            "cap_w": d.cap_w, "previous_w": d.previous_w, "original_w": grp.ctrl.limits.original_w,
            "gpus": len(gpus), "gpu_mask": sum(1 << g for g in gpus),
            "slowdown_pct": None if d.slowdown is None else 100 * d.slowdown,
            "throughput": m.throughput if m else None, "power_w": m.power_w if m else None,
            "per": m.per if m else None, "util_pct": m.util_pct if m else None,
            "baseline_throughput": b.throughput if b else None,
            "baseline_power_w": b.power_w if b else None, "baseline_per": b.per if b else None,
            "work_unit": grp.unit}, now_ns))

    def _end(self, key: tuple[str, str, tuple[int, ...]], why: str) -> None:
        self._groups.pop(key, None)
        host, _job, gpus = key
        for g in gpus:
            self._restore(host, g, why)
        self.originals.save(self._orig)

    def _restore_all(self, why: str) -> int:
        n = 0
        for host, g in sorted(self._orig):
            n += self._restore(host, g, why)
        self.originals.save(self._orig)
        return n

    def _restore(self, host: str, gpu: int, why: str) -> int:
        original = self._orig.get((host, gpu))
        actuator = self.actuators.get(host)
        if original is None:
            return 0
        if actuator is None:
            log.error("autopilot: cannot restore %s gpu %d to %g W: no actuation for that host",
                      host, gpu, original)
            return 0
        try:
            actuator.apply(gpu, original, who=f"{WHO}:restore", dry_run=False,
                           detail={"reason": why})
        except Exception as exc:
            log.error("autopilot: restoring %s gpu %d to %g W failed: %s (kept in %s)", host, gpu,
                      original, exc, self.originals.path)
            return 0
        del self._orig[(host, gpu)]
        return 1
