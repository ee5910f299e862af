"""The sampling loop: fixed rate on a monotonic clock, batching to a sink through a bounded queue."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s: must be positive, got {interval_s!r}")
        self.sources = list(sources)
        self.sink = sink
        self.interval_s = float(interval_s)
        self.clock: Clock = clock or SystemClock()
        self.observers = list(observers)
        self.batch_max_points = batch_max_points
        self.stats = AgentStats()
        self._queue: queue.Queue[list[Point]] = queue.Queue(maxsize=queue_max_batches)
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

    def _enqueue(self, batch: list[Point]) -> None:
        if not batch:
            return
        while True:
            try:
                self._queue.put_nowait(batch)
                break
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
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
        if self._writer is not None:
            self._writer.join(timeout_s)

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._writer_done.is_set():
                    return
                continue
            batch = list(first)
            while len(batch) < self.batch_max_points:
                try:
                    batch.extend(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.stats.queue_depth = self._queue.qsize()
            self._write(batch)

    def _write(self, batch: list[Point]) -> None:
        started = time.monotonic()
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
            self.stats.points_written += len(batch)
            self.stats.last_good_write_wall_s = time.time()
            self._warn.clear("write", "writes recovered")
        self.stats.last_write_s = time.monotonic() - started
