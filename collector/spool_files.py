"""The spool on disk: segment files of line protocol, the ack file, recovery after a crash, the size bound."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from collector.errors import ConfigError, StoreUnavailable
from collector.lineprotocol import parse_line
from collector.logutil import LogOnce

log = logging.getLogger("wattlens.spool")

_SEGMENT = re.compile(r"^(\d{16})\.lp$")
_ACK = "ack"


@dataclass
class _Segment:
    """One spool file of line protocol; ``offset`` bytes / ``acked`` lines of it were delivered."""

    seq: int
    path: Path
    size: int = 0
    lines: int = 0
    offset: int = 0
    acked: int = 0

    @property
    def pending_bytes(self) -> int:
        return self.size - self.offset

    @property
    def pending_lines(self) -> int:
        return self.lines - self.acked


@dataclass
class _Chunk:
    seg: _Segment
    start: int
    end: int
    lines: int
    body: bytes
    dropped: bool = False


class SpoolFiles:
    """The segment files under ``spool_dir`` and their bookkeeping; :class:`collector.spool.SpoolingSink`
    is the one subclass, and sets these attributes before calling ``_open_dir``."""

    spool_dir: Path
    max_bytes: int
    segment_bytes: int
    fsync: bool
    points_dropped: int
    points_spooled: int
    _rejected: int
    _down: bool
    _lock: threading.Lock
    _wake: threading.Event
    _warn: LogOnce
    _segments: list[_Segment]
    _fh: BinaryIO | None
    _inflight: _Chunk | None

    def _open_dir(self) -> None:
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"spool dir: cannot create {self.spool_dir}: {exc.strerror}; "
                              f"choose a writable directory") from None
        ack_seq, ack_offset = self._read_ack()
        for path in sorted(self.spool_dir.iterdir()):
            m = _SEGMENT.match(path.name)
            if not m:
                continue
            seq = int(m.group(1))
            if seq < ack_seq:  # delivered before a crash, not yet deleted
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # torn tail: the process died in the middle of an append
                log.warning("spool %s: dropping %d bytes of an incomplete last line",
                            path, len(data) - end)
                with path.open("r+b") as fh:
                    fh.truncate(end)
                data = data[:end]
            start = ack_offset if seq == ack_seq and 0 < ack_offset <= len(data) else 0
            cleaned = self._without_corrupt_lines(path, data, start)
            if cleaned is not None:
                data, start = cleaned, 0
            seg = _Segment(seq, path, size=len(data), lines=data.count(b"\n"))
            if start:
                seg.offset = start
                seg.acked = data.count(b"\n", 0, start)
            self._segments.append(seg)
        pending = sum(s.pending_lines for s in self._segments)
        if pending:
            self._down = True  # replay what is left before writing anything new directly
            log.info("spool %s: %d points from an earlier run to replay", self.spool_dir, pending)
            self._wake.set()
        else:
            self._reset_files()

    def _without_corrupt_lines(self, path: Path, data: bytes, start: int) -> bytes | None:
        """A segment we did not write as it is (disk damage, another program): keep the lines
        that are UTF-8 line protocol, drop the rest as rejected, say so once with counts.
        Returns the kept lines (the file is rewritten), or None when the file is sound."""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return None
        kept: list[bytes] = []
        lines = [line + b"\n" for line in data[start:].split(b"\n")[:-1]]
        for raw in lines:
            try:
                parse_line(raw.decode("utf-8").rstrip("\n"))
            except ValueError:  # UnicodeDecodeError included
                continue
            kept.append(raw)
        bad = len(lines) - len(kept)
        with self._lock:
            self._rejected += bad
        log.warning("spool %s: %d of %d lines are not line protocol (a damaged file?): dropped, "
                    "counted in wattlens_spool_rejected_points_total; %d kept for replay",
                    path, bad, len(lines), len(kept))
        body = b"".join(kept)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        return body

    def _read_ack(self) -> tuple[int, int]:
        try:
            seq, offset = (self.spool_dir / _ACK).read_text().split()
            return int(seq), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _write_ack(self, seg: _Segment) -> None:
        tmp = self.spool_dir / (_ACK + ".tmp")
        tmp.write_text(f"{seg.seq} {seg.offset}\n")
        os.replace(tmp, self.spool_dir / _ACK)

    def _reset_files(self) -> None:
        """Nothing pending: remove every segment and the ack, so the next spell starts clean."""
        self._close_fh()
        for seg in self._segments:
            seg.path.unlink(missing_ok=True)
        self._segments = []
        (self.spool_dir / _ACK).unlink(missing_ok=True)

    def _close_fh(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def _append_bytes(self, data: bytes, n_lines: int) -> None:
        with self._lock:
            if len(data) > self.max_bytes:  # a single batch larger than the whole spool
                cut = data.find(b"\n", len(data) - self.max_bytes) + 1
                dropped = data.count(b"\n", 0, cut)
                self._count_dropped(dropped)
                data, n_lines = data[cut:], n_lines - dropped
                if not data:
                    return
            current = self._segments[-1] if self._segments else None
            if (current is None or self._fh is None
                    or current.size + len(data) > self.segment_bytes):
                current = self._new_segment()
            while self._pending_bytes() + len(data) > self.max_bytes and len(self._segments) > 1:
                self._drop_oldest()
            fh = self._fh
            assert fh is not None
            fh.write(data)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
            current.size += len(data)
            current.lines += n_lines
            self.points_spooled += n_lines
        self._wake.set()

    def _pending_bytes(self) -> int:
        return sum(s.pending_bytes for s in self._segments)

    def _new_segment(self) -> _Segment:
        self._close_fh()
        seq = (self._segments[-1].seq + 1) if self._segments else int(time.time() * 1000)
        seg = _Segment(seq, self.spool_dir / f"{seq:016d}.lp")
        try:
            self._fh = seg.path.open("ab")
        except OSError as exc:
            raise StoreUnavailable(f"spool: cannot write {seg.path}: {exc.strerror}") from None
        self._segments.append(seg)
        return seg

    def _drop_oldest(self) -> None:
        seg = self._segments.pop(0)
        dropped = seg.pending_lines
        chunk = self._inflight
        if chunk is not None and chunk.seg is seg:
            # Being replayed right now: its outcome decides about those lines.
            chunk.dropped = True
            dropped -= chunk.lines
        self._count_dropped(dropped)
        seg.path.unlink(missing_ok=True)

    def _count_dropped(self, n: int) -> None:
        self.points_dropped += n
        self._warn.warning(
            "full", f"spool {self.spool_dir} is full ({self.max_bytes} bytes): dropping the "
                    f"oldest points (see points_dropped); raise the spool size or fix the store")
