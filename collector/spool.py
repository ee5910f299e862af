"""Durable spool: a Sink wrapper that keeps points on disk while the store is down and replays them in order."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from collector.errors import ConfigError, StoreRejected, StoreUnavailable
from collector.lineprotocol import LineEncoder, parse_line
from collector.logutil import LogOnce
from collector.schema import Point
from collector.spool_files import SpoolFiles, _Chunk, _Segment
from collector.store.base import Sink

log = logging.getLogger("wattlens.spool")

@dataclass
class _Sent:
    """A body handed to the store's sender thread; settled before the next write."""

    future: Future[None]
    body: bytes
    lines: int


class SpoolingSink(SpoolFiles):
    """Writes to ``inner`` while it answers; spools to ``spool_dir`` while it does not, and replays.

    - Healthy and nothing spooled: ``write`` passes the batch straight to the
      inner sink (no disk I/O).
    - The inner sink raises StoreUnavailable (down, timeout, 5xx, 429): the
      batch is appended to the spool, and every later batch too, so order is
      kept; ``write`` then returns at once (a local file append). A background
      thread replays the spool oldest first, with exponential backoff while the
      store stays down, and goes back to direct writes once it has drained.
    - The inner sink raises StoreRejected (4xx: bad data): the batch is split in
      halves and retried until the bad points are isolated; those are logged
      and dropped (``points_rejected``), never retried forever.
    - The spool holds at most ``max_bytes``: beyond it the oldest segment is
      dropped, counted in ``points_dropped``, and logged once.
    - What was delivered is acknowledged in a small ``ack`` file, so a restart
      reopens the directory and replays only the rest. A chunk in flight when
      the process dies is sent again: stores key points by series and time
      (InfluxDB, and SQLite's upsert), so it is stored once.

    An inner sink may offer ``write_lines(bytes)`` (replay without re-parsing)
    and ``take_failed() -> list[bytes]`` (batches its own background writer
    could not deliver, as the influxdb2 store has); both are used when present.
    One that also sets ``pipelined_lines = True`` and has ``encode(points)``
    (the influxdb:// store) gets its direct writes pipelined: ``write``
    serializes a batch while earlier ones are still on the wire (at most the
    store's ``max_inflight``), so the agent's serializing and the server's
    work overlap. Batches in flight are settled, and spooled as bytes if they
    failed, before anything newer is spooled; ``flush`` and ``close`` settle
    them all.
    """

    def __init__(
        self,
        inner: Sink,
        spool_dir: Path | str,
        max_bytes: int = 256 * 1024 * 1024,
        *,
        segment_bytes: int | None = None,
        replay_batch_points: int = 5000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        close_timeout_s: float = 5.0,
        fsync: bool = False,
    ) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 4096:
            raise ConfigError(f"spool max_bytes: must be at least 4096, got {max_bytes!r}")
        if not retry_initial_s > 0 or not retry_max_s >= retry_initial_s:
            raise ConfigError(f"spool retry: need 0 < retry_initial_s <= retry_max_s, got "
                              f"{retry_initial_s!r} and {retry_max_s!r}")
        self.inner = inner
        self.spool_dir = Path(spool_dir)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(8 * 1024 * 1024, max_bytes // 8))
        self.replay_batch_points = replay_batch_points
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.close_timeout_s = close_timeout_s
        self.fsync = fsync
        # Counters the exporter reads.
        self.points_dropped = 0  # oldest points dropped because the spool was full
        self._rejected_unlogged = 0
        self._reject_logged_s = -math.inf
        self._rejected = 0  # points the store refused (4xx) or line protocol cannot carry
        self.write_errors = 0  # failed attempts to write to the inner sink
        self.last_good_write_wall_s = 0.0
        self.points_spooled = 0
        self.points_replayed = 0
        self.points_delivered = 0  # accepted by the inner sink, directly or by replay

        self._encoder = LineEncoder()
        self._warn = LogOnce(log)
        self._lock = threading.Lock()  # spool state
        self._write_lock = threading.Lock()  # one writer at a time
        self._wake = threading.Event()
        self._segments: list[_Segment] = []
        self._fh: BinaryIO | None = None
        self._encode: Callable[[Sequence[Point]], Iterable[tuple[bytes, int]]] | None = (
            getattr(inner, "encode", None) if getattr(inner, "pipelined_lines", False)
            and callable(getattr(inner, "write_lines", None)) else None)
        self._pipelined = callable(self._encode)
        self._max_inflight = max(1, int(getattr(inner, "max_inflight", 1) or 1))
        self._sender = (ThreadPoolExecutor(self._max_inflight, thread_name_prefix="wattlens-send")
                        if self._pipelined else None)
        self._sent: list[_Sent] = []
        self._inflight: _Chunk | None = None
        self._down = False
        self._backoff_s = retry_initial_s
        self._next_try = 0.0
        self._deadline: float | None = None
        self._open_dir()
        self._thread = threading.Thread(target=self._replay_loop, name="wattlens-spool",
                                        daemon=True)
        self._thread.start()

    # --- what the exporter reads --------------------------------------------------
    @property
    def depth_points(self) -> int:
        with self._lock:
            return sum(s.pending_lines for s in self._segments)

    @property
    def depth_bytes(self) -> int:
        with self._lock:
            return sum(s.pending_bytes for s in self._segments)

    @property
    def points_rejected(self) -> int:
        return self._rejected + int(getattr(self.inner, "points_rejected", 0) or 0)

    # --- Sink -----------------------------------------------------------------------
    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        with self._write_lock:
            if self._sender is not None and self._encode is not None and self._direct():
                # Serialize now, while earlier batches may still be on the wire.
                bodies = list(self._encode(points))
                self._settle(keep=self._max_inflight - 1)
                direct = self._direct()
                if not direct:
                    self._settle()  # spool what is still in flight before anything newer
                for body, n in bodies:
                    if direct:
                        self._sent.append(_Sent(self._sender.submit(self._send, body), body, n))
                    else:
                        self._append_bytes(body + b"\n", n)
            else:
                self._settle()
                if self._direct():
                    self._write_direct(points)
                else:
                    self._append_points(points)
            self._collect_failed()

    def _direct(self) -> bool:
        with self._lock:
            return not self._down and not any(s.pending_lines for s in self._segments)

    def _settle(self, keep: int = 0) -> None:
        """Wait for the oldest batches on the wire until ``keep`` remain; spool what failed."""
        if len(self._sent) <= keep:
            return
        cut = len(self._sent) - keep
        sent, self._sent = self._sent[:cut], self._sent[cut:]
        for item in sent:
            try:
                item.future.result()
            except StoreUnavailable as exc:
                self._note_failure(exc)
                self._append_bytes(item.body + b"\n", item.lines)
            except StoreRejected as exc:
                with self._lock:
                    self.write_errors += 1
                try:
                    delivered = self._send_isolating(item.body + b"\n", exc)
                except StoreUnavailable as down:
                    self._note_failure(down)
                    self._append_bytes(item.body + b"\n", item.lines)
                else:
                    self._note_success(delivered, replayed=False)
            except Exception as exc:  # a bug in the inner sink: drop, never spin
                log.exception("spool: the store failed unexpectedly; dropping %d points",
                              item.lines)
                self._reject(item.lines, exc)
            else:
                self._note_success(item.lines, replayed=False)

    def _write_direct(self, points: Sequence[Point]) -> None:
        try:
            self.inner.write(points)
        except StoreUnavailable as exc:
            self._note_failure(exc)
            self._append_points(points)
        except StoreRejected as exc:
            with self._lock:
                self.write_errors += 1
            self._isolate_points(list(points), exc)
        else:
            self._note_success(len(points), replayed=False)

    def _isolate_points(self, points: list[Point], exc: StoreRejected) -> None:
        """Bisect a rejected batch: write what the store takes, drop (and log) what it refuses."""
        if len(points) == 1:
            self._reject(1, exc)
            return
        half = len(points) // 2
        for part in (points[:half], points[half:]):
            try:
                self.inner.write(part)
            except StoreRejected as inner_exc:
                self._isolate_points(part, inner_exc)
            except StoreUnavailable as down:
                self._note_failure(down)
                self._append_points(part)
            else:
                self._note_success(len(part), replayed=False)

    def _reject(self, n: int, exc: BaseException) -> None:
        # At most one line a minute however many are refused (all are counted in /metrics),
        # with the reason made printable: a refused line may hold any bytes.
        now = time.monotonic()
        with self._lock:
            self._rejected += n
            self._rejected_unlogged += n
            if now - self._reject_logged_s < 60.0:
                return
            self._reject_logged_s, count, self._rejected_unlogged = now, self._rejected_unlogged, 0
        log.warning("store rejected %d point(s), dropped: %s (further rejections are counted in "
                    "wattlens_spool_rejected_points_total, logged at most once a minute)", count,
                    _printable(str(exc)))

    def _note_failure(self, exc: BaseException) -> None:
        with self._lock:
            self.write_errors += 1
            self._down = True
        self._warn.warning("down", f"store unavailable, spooling to {self.spool_dir}: {exc}")

    def _note_success(self, n: int, *, replayed: bool) -> None:
        with self._lock:
            self.points_delivered += n
            if replayed:
                self.points_replayed += n
            self.last_good_write_wall_s = time.time()

    def _collect_failed(self) -> None:
        take: Callable[[], list[bytes]] | None = getattr(self.inner, "take_failed", None)
        if take is None:
            return
        bodies = take()
        if bodies:
            self._note_failure(StoreUnavailable(f"{len(bodies)} background batch(es) failed"))
            for body in bodies:
                self._append_bytes(body if body.endswith(b"\n") else body + b"\n",
                                   body.count(b"\n") + (not body.endswith(b"\n")))

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the spool is empty (the store took everything); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._write_lock:
            self._settle()
        flush_inner: Callable[[], None] | None = getattr(self.inner, "flush", None)
        if flush_inner is not None:
            flush_inner()
        while time.monotonic() < deadline:
            with self._write_lock:
                self._collect_failed()
            if self.depth_points == 0 and self._inflight is None:
                return True
            with self._lock:
                self._next_try = 0.0
            self._wake.set()
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Drain what the store takes within ``close_timeout_s``; the rest stays on disk for next time."""
        with self._write_lock:
            self._settle()
        if self._sender is not None:
            self._sender.shutdown(wait=True)
        self._deadline = time.monotonic() + self.close_timeout_s
        self._wake.set()
        self._thread.join(self.close_timeout_s + 30.0)
        try:
            self.inner.close()
        finally:
            with self._write_lock:
                self._collect_failed()
            with self._lock:
                self._close_fh()

    # --- spooling (the files: collector.spool_files) -----------------------------------
    def _append_points(self, points: Sequence[Point]) -> None:
        lines: list[str] = []
        encode = self._encoder.line
        for p in points:
            try:
                line = encode(p)
            except ValueError as exc:
                self._reject(1, exc)
                continue
            if "\n" in line:
                self._reject(1, ValueError(
                    f"a string field of a {p.measurement} point holds a newline, which the spool "
                    f"cannot keep"))
                continue
            lines.append(line)
        if lines:
            self._append_bytes(("\n".join(lines) + "\n").encode(), len(lines))

    # --- replay ------------------------------------------------------------------------
    def _next_chunk(self) -> _Chunk | None:
        with self._lock:
            for seg in self._segments:
                if seg.pending_lines:
                    break
            else:
                return None
            if self._fh is not None and seg is self._segments[-1]:
                self._fh.flush()
            with seg.path.open("rb") as fh:
                fh.seek(seg.offset)
                data = fh.read(min(seg.pending_bytes, 4 * 1024 * 1024))
            end = 0
            lines = 0
            while lines < self.replay_batch_points:
                nl = data.find(b"\n", end)
                if nl < 0:
                    break
                end = nl + 1
                lines += 1
            if end == 0:  # a single line longer than 4 MiB cannot be real: skip the segment
                self._reject(seg.pending_lines, ValueError(f"unreadable spool file {seg.path}"))
                seg.offset, seg.acked = seg.size, seg.lines
                return None
            chunk = _Chunk(seg, seg.offset, seg.offset + end, lines, data[:end])
            self._inflight = chunk
            return chunk

    def _send(self, body: bytes) -> None:
        write_lines: Callable[[bytes], None] | None = getattr(self.inner, "write_lines", None)
        if write_lines is not None:
            write_lines(body.rstrip(b"\n"))
            return
        points: list[Point] = []
        for raw in body.decode("utf-8", "replace").splitlines():
            try:
                points.append(parse_line(raw))
            except ValueError as exc:
                self._reject(1, exc)
        if points:
            self.inner.write(points)

    def _send_isolating(self, body: bytes, exc: StoreRejected) -> int:
        """Bisect a rejected chunk by lines; returns lines delivered. Raises StoreUnavailable."""
        lines = body.splitlines(keepends=True)
        if len(lines) <= 1:
            self._reject(len(lines), exc)
            return 0
        half = len(lines) // 2
        delivered = 0
        for part in (b"".join(lines[:half]), b"".join(lines[half:])):
            try:
                self._send(part)
            except StoreRejected as inner_exc:
                delivered += self._send_isolating(part, inner_exc)
            else:
                delivered += part.count(b"\n")
        return delivered

    def _replay_loop(self) -> None:
        while True:
            deadline = self._deadline
            with self._lock:
                pending = any(s.pending_lines for s in self._segments)
                wait_s = max(0.0, self._next_try - time.monotonic())
            if deadline is not None and (
                not pending or time.monotonic() >= deadline or (self._down and wait_s > 0)
            ):
                return
            if not pending:
                self._wake.wait(1.0)
                self._wake.clear()
                # Failures of an inner sink's own background writer surface here
                # too, so they are spooled even when no new write comes along.
                if self._write_lock.acquire(blocking=False):
                    try:
                        self._collect_failed()
                    finally:
                        self._write_lock.release()
                continue
            if wait_s > 0:
                self._wake.wait(min(wait_s, 1.0))
                self._wake.clear()
                continue
            chunk = self._next_chunk()
            if chunk is None:
                continue
            try:
                try:
                    self._send(chunk.body)
                    delivered = chunk.lines
                except StoreRejected as exc:
                    with self._lock:
                        self.write_errors += 1
                    delivered = self._send_isolating(chunk.body, exc)
            except StoreUnavailable as exc:
                self._replay_failed(chunk, exc)
                continue
            except Exception as exc:  # a bug in the inner sink must not spin forever
                log.exception("spool replay: the store failed unexpectedly; dropping %d points",
                              chunk.lines)
                self._reject(chunk.lines, exc)
                delivered = 0
            self._replay_done(chunk, delivered)

    def _replay_failed(self, chunk: _Chunk, exc: StoreUnavailable) -> None:
        with self._lock:
            self.write_errors += 1
            self._inflight = None
            if chunk.dropped:
                self._count_dropped(chunk.lines)
            self._down = True
            delay = self._backoff_s * random.uniform(0.8, 1.2)
            self._next_try = time.monotonic() + delay
            self._backoff_s = min(self._backoff_s * 2, self.retry_max_s)
        self._warn.warning("down", f"store unavailable, spooling to {self.spool_dir}: {exc}")

    def _replay_done(self, chunk: _Chunk, delivered: int) -> None:
        with self._lock:
            self._inflight = None
            self.points_delivered += delivered
            self.points_replayed += delivered
            if delivered:
                self.last_good_write_wall_s = time.time()
            self._backoff_s = self.retry_initial_s
            self._next_try = 0.0
            seg = chunk.seg
            if not chunk.dropped:
                seg.offset = chunk.end
                seg.acked += chunk.lines
                if seg.pending_lines == 0 and seg is not self._segments[-1]:
                    self._segments.remove(seg)
                    seg.path.unlink(missing_ok=True)
                elif seg.pending_lines:
                    self._write_ack(seg)
            if not any(s.pending_lines for s in self._segments):
                self._reset_files()
                self._down = False
                self._warn.clear("down", "store is back; the spool has drained")
                self._warn.clear("full")
            elif seg.pending_lines == 0 and self._segments:
                self._write_ack(self._segments[0])


# The spool holds line protocol; collector.lineprotocol writes and parses it.


def _printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with anything unprintable escaped."""
    text = text[:limit]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
