"""Rule evaluation: alert state (pending, firing, resolved) kept across restarts; transitions to store and hooks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analytics.alerts import record
from analytics.alerts.conditions import Observation, observe
from analytics.alerts.hooks import AlertEvent, Dispatcher, iso
from analytics.alerts.rules import Rule, RuleSet
from collector.atomicfile import replace_text
from collector.logutil import LogOnce
from collector.schema import Point
from collector.store.base import Store

log = logging.getLogger("wattlens.alerts")

NS = 1_000_000_000
STATE_VERSION = 1
PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
KEEP_RESOLVED_S = 24 * 3600.0  # resolved alerts stay in the state file this long, for `status`


def fingerprint(rule: str, target: str) -> str:
    """A stable id of one alert (rule x target), the same across restarts and hosts."""
    return hashlib.sha256(f"{rule}\x00{target}".encode()).hexdigest()[:16]


@dataclass
class AlertState:
    """One alert's state. ``sent`` maps hook name -> evaluation time (ns) of the last firing notice queued."""

    rule: str
    target: str
    state: str
    kind: str
    severity: str
    unit: str
    active_since_ns: int
    fired_ns: int | None = None
    resolved_ns: int | None = None
    value: float = 0.0
    threshold: float | None = None
    summary: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return fingerprint(self.rule, self.target)

    def event(self, status: str, repeat: bool = False) -> AlertEvent:
        return AlertEvent(
            id=self.id, rule=self.rule, kind=self.kind, severity=self.severity, target=self.target,
            status=status, value=self.value, unit=self.unit, threshold=self.threshold,
            summary=self.summary, labels=dict(self.labels), active_since_ns=self.active_since_ns,
            fired_ns=self.fired_ns, resolved_ns=self.resolved_ns if status == RESOLVED else None,
            repeat=repeat)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Transition:
    """An alert changing state at one evaluation: to pending, firing, resolved or inactive (pending dropped)."""

    rule: str
    target: str
    to: str
    value: float


@dataclass
class EvalResult:
    """What one evaluation did: its transitions, the notices queued per hook, and rules that failed."""

    now_ns: int
    transitions: list[Transition] = field(default_factory=list)
    notifications: dict[str, list[AlertEvent]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)


class StateFile:
    """The engine's JSON state, written atomically (temp file, fsync, rename) so a crash never leaves half a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[tuple[str, str], AlertState]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
            states = [AlertState.from_json(a) for a in data["alerts"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.warning("alert state %s is unreadable (%s); moved it to %s and starting afresh",
                        self.path, exc, aside)
            return {}
        return {(s.rule, s.target): s for s in states}

    def save(self, states: dict[tuple[str, str], AlertState], now_ns: int) -> None:
        body = json.dumps({"version": STATE_VERSION, "saved_at": iso(now_ns),
                           "alerts": [asdict(s) for s in states.values()]}, indent=1, sort_keys=True)
        replace_text(self.path, body)


class Engine:
    """Evaluates a rule set over a store; each call to :meth:`evaluate` is one round.

    A breach makes an alert pending; it fires once it has held for the rule's
    ``for``; it resolves when the condition (moved by the rule's hysteresis)
    no longer holds. Firing and resolved transitions are written to the
    store's ``alert`` measurement and queued to the rule's hooks; a firing
    alert is sent again only after ``repeat_interval`` (Alertmanager hooks:
    their ``resend_interval``). A rule whose query fails keeps its alerts as
    they were: a store outage never resolves or fires anything.
    """

    def __init__(self, store: Store, ruleset: RuleSet, state_path: Path | None = None,
                 dispatcher: Dispatcher | None = None) -> None:
        self.store = store
        self.ruleset = ruleset
        self.dispatcher = dispatcher
        self.state_file = StateFile(state_path) if state_path is not None else None
        self.states: dict[tuple[str, str], AlertState] = (
            self.state_file.load() if self.state_file is not None else {})
        self._warn = LogOnce(log)
        self._transition_log_level = logging.INFO  # DEBUG while replaying history

    # --- one round -------------------------------------------------------------------
    def evaluate(self, now_ns: int | None = None) -> EvalResult:
        """Evaluate every rule at ``now_ns`` (default: now); queue notices, write transitions, save state."""
        now = time.time_ns() if now_ns is None else now_ns
        res = EvalResult(now)
        touched: set[tuple[str, str]] = set()
        for rule in self.ruleset.rules:
            try:
                observations = observe(rule, self.store, now)
            except Exception as exc:  # one failing rule (or a store outage) never stops the others
                res.errors.append(f"rule {rule.name!r}: {exc}")
                self._warn.warning(f"rule {rule.name}", f"rule {rule.name!r}: evaluation failed: {exc}")
                continue
            self._warn.clear(f"rule {rule.name}", f"rule {rule.name!r}: evaluating again")
            seen: set[str] = set()
            for o in observations:
                if o.target in seen:
                    continue
                seen.add(o.target)
                self._step(rule, o.target, o, now, res, touched)
            for (rname, target), st in list(self.states.items()):
                if rname == rule.name and target not in seen and st.state in (PENDING, FIRING):
                    self._step(rule, target, None, now, res, touched)
        self._retire_removed_rules(now, res, touched)
        self._repeats(now, res, touched)
        self._prune(now)
        self._write_points(res)
        if self.dispatcher is not None:
            for hook, events in res.notifications.items():
                self.dispatcher.submit(hook, events, now)
        if self.state_file is not None:
            self.state_file.save(self.states, now)
        return res

    def _step(self, rule: Rule, target: str, o: Observation | None, now: int, res: EvalResult,
              touched: set[tuple[str, str]]) -> None:
        key = (rule.name, target)
        st = self.states.get(key)
        if st is None or st.state == RESOLVED:
            if o is None or not o.enter:
                return
            since = min(o.since_ns, now) if o.since_ns is not None else now
            st = AlertState(rule.name, target, PENDING, rule.kind, rule.severity, rule.unit, since)
            self.states[key] = st
            self._update(st, rule, o)
            touched.add(key)
            res.transitions.append(Transition(rule.name, target, PENDING, st.value))
            if now - st.active_since_ns >= rule.for_s * NS:
                self._fire(st, now, res)
            return
        if o is not None and o.stay:
            self._update(st, rule, o)
            if st.state == PENDING and now - st.active_since_ns >= rule.for_s * NS:
                touched.add(key)
                self._fire(st, now, res)
            return
        touched.add(key)
        if o is not None:
            self._update(st, rule, o)
        if st.state == PENDING:
            del self.states[key]
            res.transitions.append(Transition(rule.name, target, "inactive", st.value))
        else:
            self._resolve(st, now, res)

    def _update(self, st: AlertState, rule: Rule, o: Observation) -> None:
        st.value = o.value
        st.threshold = o.threshold
        st.summary = o.summary
        st.severity = rule.severity
        st.hooks = list(rule.hooks)
        st.labels = {**rule.labels, **o.labels}

    def _fire(self, st: AlertState, now: int, res: EvalResult) -> None:
        st.state = FIRING
        st.fired_ns = now
        st.resolved_ns = None
        st.sent = {}
        res.transitions.append(Transition(st.rule, st.target, FIRING, st.value))
        log.log(self._transition_log_level, "alert %s %s: firing (%s)", st.rule, st.target, st.summary)
        event = st.event(FIRING)
        for hook in st.hooks:
            if self._has_hook(hook):
                res.notifications[hook].append(event)
                st.sent[hook] = now

    def _resolve(self, st: AlertState, now: int, res: EvalResult) -> None:
        st.state = RESOLVED
        st.resolved_ns = now
        res.transitions.append(Transition(st.rule, st.target, RESOLVED, st.value))
        log.log(self._transition_log_level, "alert %s %s: resolved", st.rule, st.target)
        event = st.event(RESOLVED)
        for hook in st.sent:
            if self._has_hook(hook) and (self.dispatcher is None or self.dispatcher.sends_resolved(hook)):
                res.notifications[hook].append(event)
        st.sent = {}

    def _has_hook(self, hook: str) -> bool:
        return self.dispatcher is None or hook in self.dispatcher.deliveries

    def _retire_removed_rules(self, now: int, res: EvalResult, touched: set[tuple[str, str]]) -> None:
        """Alerts of a rule no longer in the file: a firing one resolves, a pending one is dropped."""
        names = {r.name for r in self.ruleset.rules}
        for key, st in list(self.states.items()):
            if st.rule in names or st.state == RESOLVED:
                continue
            touched.add(key)
            if st.state == PENDING:
                del self.states[key]
                res.transitions.append(Transition(st.rule, st.target, "inactive", st.value))
            else:
                st.summary = f"{st.summary} (rule {st.rule!r} was removed)"
                self._resolve(st, now, res)

    def _repeats(self, now: int, res: EvalResult, touched: set[tuple[str, str]]) -> None:
        rules = {r.name: r for r in self.ruleset.rules}
        for key, st in self.states.items():
            rule = rules.get(st.rule)
            if st.state != FIRING or key in touched or rule is None:
                continue
            for hook in rule.hooks:
                if not self._has_hook(hook):
                    continue
                every_s = (self.dispatcher.wants_resend_s(hook, rule.repeat_interval_s)
                           if self.dispatcher is not None else rule.repeat_interval_s)
                last = st.sent.get(hook)
                if last is None or now - last >= every_s * NS:
                    res.notifications[hook].append(st.event(FIRING, repeat=True))
                    st.sent[hook] = now

    def _prune(self, now: int) -> None:
        for key, st in list(self.states.items()):
            if st.state == RESOLVED and st.resolved_ns is not None and \
                    now - st.resolved_ns > KEEP_RESOLVED_S * NS:
                del self.states[key]

    def _write_points(self, res: EvalResult) -> None:
        points: list[Point] = []
        for t in res.transitions:
            if t.to not in (FIRING, RESOLVED):
                continue
            st = self.states.get((t.rule, t.target))
            severity = st.severity if st is not None else "warning"
            points.append(record.alert_point(t.rule, severity, t.target, t.to == FIRING, t.value,
                                             res.now_ns))
        if not points:
            return
        try:
            record.record(self.store, points)
        except Exception as exc:  # the notification still goes out; the store record is best effort
            self._warn.warning("alert write", f"cannot write alert transitions to the store: {exc}")
        else:
            self._warn.clear("alert write", "writing alert transitions to the store again")

    def replay(self, start_ns: int, end_ns: int, step_s: float,
               progress: Callable[[int], None] | None = None,
               stop: threading.Event | None = None) -> int:
        """Evaluate at every ``step_s`` from ``start_ns`` to ``end_ns`` (history just written, e.g. a backfill).

        Each round sees only the data up to its own time, so the transitions
        written are the ones a live engine would have written then. Returns the
        rounds run (fewer when ``stop`` is set).
        """
        step = max(1, int(step_s * NS))
        rounds = 0
        t = start_ns + step
        self._transition_log_level = logging.DEBUG  # history: the store and the hooks get it, not the log
        try:
            while t <= end_ns and not (stop is not None and stop.is_set()):
                self.evaluate(t)
                rounds += 1
                if progress is not None:
                    progress(1)
                t += step
        finally:
            self._transition_log_level = logging.INFO
        return rounds

    # --- the loop ------------------------------------------------------------------
    def run(self, interval_s: float, stop: threading.Event, once: bool = False) -> int:
        """Evaluate every ``interval_s`` on the monotonic clock until ``stop`` is set; returns rounds run."""
        rounds = 0
        start = time.monotonic()
        while not stop.is_set():
            res = self.evaluate()
            rounds += 1
            for t in res.transitions:
                log.debug("%s %s -> %s", t.rule, t.target, t.to)
            if once:
                break
            # Fixed schedule: a slow round skips the ticks it overran instead of bursting.
            elapsed = time.monotonic() - start
            next_tick = (int(elapsed // interval_s) + 1) * interval_s
            stop.wait(next_tick - elapsed)
        return rounds

    def firing(self) -> list[AlertState]:
        """Alerts firing now."""
        return [s for s in self.states.values() if s.state == FIRING]
