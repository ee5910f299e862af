"""The power-cap autopilot's controller: a pure state machine, measurements in, cap decisions out.

One :class:`GroupController` per group of GPUs running one opted-in job. It knows nothing of
NVML, files or clocks: :meth:`GroupController.observe` takes one :class:`Sample` (what the agent
measured over one round) and returns a :class:`Decision` when the group's limit should change.

1. **baseline**: measure ``hold_s`` at the original limit.
2. **explore**: step down from the original limit by ``step_frac`` of the GPU's maximum
   (clamped to [min, max]); after each change wait ``settle_s`` (discarded), then measure
   ``hold_s``. A cap is *good* when its measured slowdown is within ``max_slowdown``. At the
   first cap that is not good (lower caps only slow a job more), bisect between it and the lowest
   good cap down to an eighth of a step; then settle on the good cap with the lowest cost
   ``λ·E + (1-λ)·P_max·T`` per unit of work.
3. **settled**: keep measuring. When the job's speed or utilisation moves by more than
   ``phase_shift`` from what it was when settled (a new phase), or the measured slowdown against
   the baseline breaks the budget, or the PER (work per joule) falls below the baseline's by more
   than half of ``phase_shift``, roll back to the original limit and start again at 1.

Slowdown is measured on *speed*: work per busy GPU-second (the job's work counter over the time
its GPUs were busy, from utilisation), so a service whose demand rises and falls is not mistaken
for one the cap slowed. At most one change per ``settle_s + hold_s``; every target is inside
[min, max].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Settings:
    """The autopilot's knobs (``wattlens collect --autopilot-*``)."""

    max_slowdown: float = 0.05  # fraction: 0.05 = 5 %
    hold_s: float = 60.0
    settle_s: float = 20.0
    step_frac: float = 0.05
    phase_shift: float = 0.10
    lam: float = 1.0  # 1: energy only; 0: time only

    def __post_init__(self) -> None:
        checks = (("max_slowdown", self.max_slowdown, 0.0, 0.5), ("hold_s", self.hold_s, 1e-3, 86400),
                  ("settle_s", self.settle_s, 0.0, 86400), ("step_frac", self.step_frac, 0.005, 0.5),
                  ("phase_shift", self.phase_shift, 0.01, 1.0), ("lam", self.lam, 0.0, 1.0))
        for name, value, lo, hi in checks:
            if not lo <= value <= hi:
                raise ValueError(f"autopilot {name}: must be in [{lo:g}, {hi:g}], got {value!r}")

    @property
    def change_interval_s(self) -> float:
        """The shortest time between two changes of one group's limit."""
        return self.settle_s + self.hold_s


@dataclass(frozen=True)
class Limits:
    """A group's power-limit range (every GPU of a group is the same model) and original limit."""

    min_w: float
    max_w: float
    original_w: float

    def clamp(self, watts: float) -> float:
        return min(self.max_w, max(self.min_w, watts))


@dataclass(frozen=True)
class Sample:
    """One round's measurement of a group: work done, GPU energy, busy share, seconds covered."""

    time_s: float  # end of the round
    seconds: float
    work: float
    energy_j: float
    util_pct: float  # mean over the group's GPUs


@dataclass(frozen=True)
class Window:
    """Measurements summed at one limit."""

    cap_w: float
    seconds: float = 0.0
    work: float = 0.0
    energy_j: float = 0.0
    busy_s: float = 0.0  # seconds x utilisation share

    def add(self, s: Sample) -> Window:
        return replace(self, seconds=self.seconds + s.seconds, work=self.work + s.work,
                       energy_j=self.energy_j + s.energy_j,
                       busy_s=self.busy_s + s.seconds * max(0.0, s.util_pct) / 100)

    @property
    def throughput(self) -> float:
        return self.work / self.seconds if self.seconds > 0 else 0.0

    @property
    def power_w(self) -> float:
        return self.energy_j / self.seconds if self.seconds > 0 else 0.0

    @property
    def per(self) -> float | None:
        """Work per joule (PER)."""
        return self.work / self.energy_j if self.energy_j > 0 else None

    @property
    def speed(self) -> float:
        """Work per busy second; throughput when utilisation is unknown."""
        return self.work / self.busy_s if self.busy_s > 0 else self.throughput

    @property
    def util_pct(self) -> float:
        return 100 * self.busy_s / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float | None]:
        per = self.per
        return {"cap_w": self.cap_w, "seconds": round(self.seconds, 3),
                "throughput": round(self.throughput, 6), "power_w": round(self.power_w, 3),
                "per": None if per is None else round(per, 9), "util_pct": round(self.util_pct, 2)}


@dataclass(frozen=True)
class Decision:
    """Set the group's limit to ``cap_w``; ``measured`` and ``baseline`` justify it (audit log)."""

    time_s: float
    cap_w: float
    previous_w: float
    reason: str  # explore | settle | rollback | phase
    state: str  # the controller's state after the decision
    slowdown: float | None = None  # of ``measured`` against ``baseline``
    measured: Window | None = None
    baseline: Window | None = None

    def audit(self) -> dict[str, object]:
        return {"reason": self.reason, "state": self.state,
                "slowdown_pct": None if self.slowdown is None else round(100 * self.slowdown, 3),
                "measured": self.measured.summary() if self.measured else None,
                "baseline": self.baseline.summary() if self.baseline else None}


def slowdown(window: Window, baseline: Window) -> float:
    """1 - speed / baseline speed: 0.05 means 5 % slower than at the original limit."""
    if baseline.speed <= 0:
        return 0.0
    return 1.0 - window.speed / baseline.speed


@dataclass
class GroupController:
    """The state machine of one group (see the module docstring)."""

    limits: Limits
    settings: Settings = field(default_factory=Settings)
    state: str = "baseline"
    cap_w: float = 0.0
    last_change_s: float | None = None
    baseline: Window | None = None
    good: list[Window] = field(default_factory=list)
    bad_w: float | None = None  # the highest limit measured over the budget in this exploration
    settled: Window | None = None
    window: Window | None = None
    _last_time_s: float | None = None

    def __post_init__(self) -> None:
        lim = self.limits
        if not 0 < lim.min_w <= lim.max_w:
            raise ValueError(f"limits: need 0 < min <= max, got {lim.min_w:g}-{lim.max_w:g} W")
        if not lim.min_w <= lim.original_w <= lim.max_w:
            raise ValueError(f"limits: original {lim.original_w:g} W is outside "
                             f"{lim.min_w:g}-{lim.max_w:g} W")
        self.cap_w = self.cap_w or lim.original_w
        self.window = Window(self.cap_w)

    # --- the one entry point ------------------------------------------------------------------
    def observe(self, sample: Sample) -> Decision | None:
        """Take one round's measurement; a Decision when the limit should change now."""
        if sample.seconds <= 0 or (self._last_time_s is not None and sample.time_s <= self._last_time_s):
            return None
        self._last_time_s = sample.time_s
        if self.last_change_s is not None and sample.time_s - sample.seconds < (
                self.last_change_s + self.settings.settle_s):
            return None  # the new limit is settling: this round is not measured
        assert self.window is not None
        self.window = self.window.add(sample)
        if self.window.seconds < self.settings.hold_s:
            return None
        done, self.window = self.window, Window(self.cap_w)
        if self.state == "baseline":
            return self._after_baseline(done, sample.time_s)
        if self.state == "explore":
            return self._after_candidate(done, sample.time_s)
        return self._watch(done, sample.time_s)

    # --- states -------------------------------------------------------------------------------
    def _after_baseline(self, done: Window, now: float) -> Decision | None:
        self.baseline = done
        self.good = [done]
        nxt = self._next_candidate()
        if nxt is None:
            self.state, self.settled = "settled", done
            return None
        self.state = "explore"
        return self._change(now, nxt, "explore", done)

    def _after_candidate(self, done: Window, now: float) -> Decision | None:
        assert self.baseline is not None
        if self._phase_changed(done, self.baseline, speed=False):
            return self._rollback(now, done, "phase")
        if slowdown(done, self.baseline) <= self.settings.max_slowdown:
            self.good.append(done)
        else:
            self.bad_w = done.cap_w if self.bad_w is None else max(self.bad_w, done.cap_w)
        nxt = self._next_candidate()
        if nxt is not None:
            return self._change(now, nxt, "explore", done)
        best = min(self.good, key=lambda w: (self._cost(w), -w.cap_w))
        self.state, self.settled = "settled", best
        if best.cap_w == self.cap_w:
            return None
        return self._change(now, best.cap_w, "settle", done)

    def _watch(self, done: Window, now: float) -> Decision | None:
        assert self.baseline is not None and self.settled is not None
        if done.cap_w != self.settled.cap_w:  # the first window after settling: the reference
            self.settled = done
            return None
        if slowdown(done, self.baseline) > self.settings.max_slowdown + self.settings.phase_shift / 2:
            return self._rollback(now, done, "rollback")
        if self._phase_changed(done, self.settled, speed=True):
            return self._rollback(now, done, "phase")
        base_per, per = self.baseline.per, done.per
        if base_per and per is not None and per < base_per * (1 - self.settings.phase_shift / 2):
            return self._rollback(now, done, "rollback")  # less work per joule than at the original
        return None

    # --- helpers ------------------------------------------------------------------------------
    def _phase_changed(self, done: Window, ref: Window, *, speed: bool) -> bool:
        shift = self.settings.phase_shift
        util_moved = ref.util_pct > 0 and abs(done.util_pct / ref.util_pct - 1) > shift
        speed_moved = speed and ref.speed > 0 and abs(done.speed / ref.speed - 1) > shift
        return util_moved or speed_moved

    def _rollback(self, now: float, done: Window, reason: str) -> Decision | None:
        """Back to the original limit and a new baseline."""
        self.state, self.good, self.settled, self.bad_w = "baseline", [], None, None
        if self.cap_w == self.limits.original_w:
            self.window = Window(self.cap_w)
            return None
        return self._change(now, self.limits.original_w, reason, done)

    def _next_candidate(self) -> float | None:
        """Down by one step until a limit breaks the budget; then halve the gap between the lowest
        good limit and it until the gap is an eighth of a step."""
        step = self.settings.step_frac * self.limits.max_w
        if self.bad_w is None:
            nxt = self.limits.clamp(round(self.cap_w - step, 1))
            return nxt if nxt < self.cap_w else None
        low_good = min(w.cap_w for w in self.good)
        nxt = self.limits.clamp(round((low_good + self.bad_w) / 2, 1))
        if low_good - self.bad_w <= step / 8 + 1e-9 or nxt in (low_good, self.bad_w, self.cap_w):
            return None
        return nxt

    def _cost(self, w: Window) -> float:
        """λ·E + (1-λ)·P_max·T per unit of work (the recommender's trade-off, analytics.objective)."""
        lam = self.settings.lam
        e_per_work = w.energy_j / w.work if w.work > 0 else float("inf")
        t_per_work = 1.0 / w.speed if w.speed > 0 else float("inf")
        return lam * e_per_work + (1 - lam) * self.limits.max_w * t_per_work

    def _change(self, now: float, cap_w: float, reason: str, measured: Window) -> Decision:
        cap_w = self.limits.clamp(cap_w)
        decision = Decision(now, cap_w, self.cap_w, reason, self.state,
                            slowdown(measured, self.baseline) if self.baseline else None,
                            measured, self.baseline)
        self.cap_w = cap_w
        self.last_change_s = now
        self.window = Window(cap_w)
        return decision
