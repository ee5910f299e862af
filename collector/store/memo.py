"""A per-key answer remembered for a few seconds, asked once between threads that want it at once.

Reads at once (``analytics.queries.gather``) often need the same small fact of a remote store,
e.g. InfluxDB's newest point or where its rollups begin: each fact costs influxd a cursor per
series. One thread asks; the others wait for its answer instead of asking again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class Memo(Generic[_K, _V]):
    """``get(key, ask)``: ``ask()``'s answer, remembered ``ttl_s`` seconds (monotonic clock)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._key_locks: dict[_K, threading.Lock] = {}
        self._held: dict[_K, tuple[float, _V]] = {}
        self._forgotten = 0  # forget() calls: an answer asked before one is not kept

    def get(self, key: _K, ask: Callable[[], _V]) -> _V:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            held = self._held.get(key)
            if held is not None and time.monotonic() - held[0] < self.ttl_s:
                return held[1]
            with self._lock:
                generation = self._forgotten
            value = ask()
            with self._lock:
                if generation == self._forgotten:
                    self._held[key] = (time.monotonic(), value)
            return value

    def peek(self, key: _K) -> _V | None:
        """The answer held for ``key`` if it is still fresh, without asking; None otherwise."""
        with self._lock:
            held = self._held.get(key)
        if held is None or time.monotonic() - held[0] >= self.ttl_s:
            return None
        return held[1]

    def forget(self, key: _K | None = None) -> None:
        """Drop one key's answer, or all of them."""
        with self._lock:
            self._forgotten += 1
            if key is None:
                self._held.clear()
            else:
                self._held.pop(key, None)
