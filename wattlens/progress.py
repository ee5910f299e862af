"""A small progress bar for long work (backfill, reports): redraws in place on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress("backfill", total) as bar: bar.update(n)``; prints to stderr."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 unit: str = "", min_interval_s: float = 0.1) -> None:
        self.label = label
        self.total = max(1, total)
        self.done = 0
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._min_interval_s = min_interval_s if self.tty else 5.0
        self._last_draw = 0.0
        self._start = time.monotonic()
        self.extra = ""

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(force=True)
        self.stream.write("\n" if self.tty else "")
        self.stream.flush()

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done = min(self.total, self.done + n)
        if extra:
            self.extra = extra
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self._min_interval_s:
            return
        self._last_draw = now
        frac = self.done / self.total
        width = 30
        filled = int(width * frac)
        elapsed = now - self._start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {100 * frac:5.1f}% "
                f"{self.extra} elapsed {elapsed:4.0f} s, eta {eta:4.0f} s")
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
