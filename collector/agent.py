"""The sampling loop: fixed rate on a monotonic clock, batching to a sink through a bounded queue."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from collector.counters import CounterState
from collector.errors import StoreRejected
from collector.logutil import LogOnce
from collector.schema import Point
from collector.sources.base import Source, Tick
from collector.store.base import Sink

log = logging.getLogger("wattlens.agent")


class Clock(Protocol):
    """Time as the agent sees it; injectable so tests can run an hour in milliseconds."""

    def monotonic(self) -> float: ...

    def wall_ns(self) -> int: ...

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep up to ``seconds`` or until ``stop`` is set; return True if stopped."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ns(self) -> int:
        return time.time_ns()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, seconds))


@dataclass
class AgentStats:
    """The agent's own health, exported on /metrics."""

    rounds: int = 0
    points_sampled: int = 0
    points_written: int = 0
    points_dropped: int = 0  # queue full or store rejected the data
    rounds_missed: int = 0  # ticks skipped because a round overran the interval
    source_errors: int = 0
    write_errors: int = 0
    clock_jumps: int = 0
    last_round_s: float = 0.0
    last_write_s: float = 0.0
    last_good_write_wall_s: float = 0.0
    queue_depth: int = 0


Observer = Callable[[Sequence[Point]], None]
_Batch = tuple[list[Point], dict[str, tuple[float, float]] | None]
_WAKE: _Batch = ([], None)  # put by _finish_writer so the writer notices at once


class Agent:
    """Samples every source once per ``interval_s`` and hands batches to ``sink`` on a writer thread.

    Rounds are scheduled at ``start + k * interval_s`` on the monotonic clock, so
    the rate does not drift however long a round takes; a round that overruns
    skips the ticks it missed (counted in ``rounds_missed``) instead of bursting.
    The writer runs on its own thread behind a bounded queue: a slow sink never
    delays sampling; when the queue is full the oldest batch is dropped and
    counted. Durability across store outages is the sink's job (the spool).
    Observers (the Prometheus exporter) see every batch synchronously and must
    be cheap.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        sink: Sink,
        interval_s: float,
        *,
        clock: Clock | None = None,
        observers: Sequence[Observer] = (),
        queue_max_batches: int = 256,
        batch_max_points: int = 5000,
        counter_state: CounterState | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s: must be positive, got {interval_s!r}")
        self.sources = list(sources)
        self.sink = sink
        self.interval_s = float(interval_s)
        self.clock: Clock = clock or SystemClock()
        self.observers = list(observers)
        self.batch_max_points = batch_max_points
        # Hardware counter readings; saved once the round that read them is stored.
        self.counter_state = counter_state
        self.stats = AgentStats()
        self._queue: queue.Queue[_Batch] = queue.Queue(maxsize=queue_max_batches)
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._warn = LogOnce(log)
        self._last_ts_ns = 0

    # --- sampling -----------------------------------------------------------
    def sample_once(self) -> list[Point]:
        """Run one round over every source; a failing source is logged once and skipped."""
        started = self.clock.monotonic()
        tick = Tick(wall_ns=self._timestamp_ns(), mono_s=started)
        batch: list[Point] = []
        for source in self.sources:
            try:
                batch.extend(source.sample(tick))
            except Exception as exc:  # one failing source never stops the loop
                self.stats.source_errors += 1
                self._warn.warning(f"source {source.name}", f"source {source.name} failed: {exc}")
            else:
                self._warn.clear(f"source {source.name}", f"source {source.name} recovered")
        for observe in self.observers:
            try:
                observe(batch)
            except Exception as exc:
                self._warn.warning("observer", f"observer failed: {exc}")
        self.stats.rounds += 1
        self.stats.points_sampled += len(batch)
        self.stats.last_round_s = self.clock.monotonic() - started
        return batch

    def _timestamp_ns(self) -> int:
        """Wall time for this round, kept strictly increasing across clock steps (NTP, manual)."""
        now = self.clock.wall_ns()
        interval_ns = int(self.interval_s * 1e9)
        last = self._last_ts_ns
        if last and (now <= last or now - last > 10 * interval_ns + 60_000_000_000):
            self.stats.clock_jumps += 1
            if now <= last:
                log.warning(
                    "wall clock stepped back by %.1f s; timestamps continue from the last one",
                    (last - now) / 1e9,
                )
                now = last + interval_ns
            else:
                log.warning("wall clock stepped forward by %.1f s", (now - last) / 1e9)
        self._last_ts_ns = now
        return now

    def _enqueue(self, points: list[Point]) -> None:
        snapshot = self.counter_state.snapshot() if self.counter_state is not None else None
        if not points and snapshot is None:
            return
        while True:
            try:
                self._queue.put_nowait((points, snapshot))
                break
            except queue.Full:
                try:
                    dropped, _ = self._queue.get_nowait()
                except queue.Empty:
                    continue
                self.stats.points_dropped += len(dropped)
                self._warn.warning("queue", "write queue full: the sink is too slow; dropping oldest")
        self.stats.queue_depth = self._queue.qsize()

    def run(self, rounds: int | None = None) -> None:
        """Sample until :meth:`stop` (or for ``rounds`` rounds), then flush the writer."""
        self._start_writer()
        start = self.clock.monotonic()
        k = 0  # index of the tick on the fixed grid start + k * interval
        done = 0
        try:
            while not self._stop.is_set():
                self._enqueue(self.sample_once())
                done += 1
                if rounds is not None and done >= rounds:
                    break
                k += 1
                now = self.clock.monotonic()
                behind = int((now - start) / self.interval_s) + 1
                if behind > k + 1 or (behind == k + 1 and now > start + k * self.interval_s):
                    self.stats.rounds_missed += behind - k
                    k = behind
                if self.clock.wait(start + k * self.interval_s - now, self._stop):
                    break
        finally:
            self._finish_writer()

    def stop(self) -> None:
        self._stop.set()

    # --- writing ------------------------------------------------------------
    def _start_writer(self) -> None:
        self._writer_done = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="wattlens-writer", daemon=True)
        self._writer.start()

    def _finish_writer(self, timeout_s: float = 30.0) -> None:
        self._writer_done.set()
        try:  # wake the writer now rather than at its next poll
            self._queue.put(_WAKE, timeout=timeout_s)
        except queue.Full:
            pass
        if self._writer is not None:
            self._writer.join(timeout_s)

    def _write_loop(self) -> None:
        while True:
            try:
                first, snapshot = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._writer_done.is_set():
                    return
                continue
            if first is _WAKE[0]:
                if self._writer_done.is_set() and self._queue.empty():
                    return
                continue
            batch = list(first)
            while len(batch) < self.batch_max_points:
                try:
                    more, newer = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _WAKE[0]:
                    with contextlib.suppress(queue.Full):  # else the poll timeout notices
                        self._queue.put_nowait(_WAKE)  # handle it after this batch
                    break
                batch.extend(more)
                snapshot = newer or snapshot
            self.stats.queue_depth = self._queue.qsize()
            if self._write(batch) and snapshot is not None and self.counter_state is not None:
                try:
                    self.counter_state.save(snapshot)
                except OSError as exc:
                    self._warn.warning("counter state", f"cannot save counter state: {exc}")

    def _write(self, batch: list[Point]) -> bool:
        """Write one batch; True when the sink took it (stored or durably spooled)."""
        if not batch:
            return True
        started = time.monotonic()
        ok = False
        try:
            self.sink.write(batch)
        except StoreRejected as exc:
            self.stats.points_dropped += len(batch)
            self.stats.write_errors += 1
            self._warn.warning("write", f"store rejected {len(batch)} points: {exc}")
        except Exception as exc:
            self.stats.points_dropped += len(batch)
            self.stats.write_errors += 1
            self._warn.warning("write", f"write failed, {len(batch)} points lost: {exc}")
        else:
            ok = True
            self.stats.points_written += len(batch)
            self.stats.last_good_write_wall_s = time.time()
            self._warn.clear("write", "writes recovered")
        self.stats.last_write_s = time.monotonic() - started
        return ok
