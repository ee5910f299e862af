"""The file hook: each notification appended as one JSON line to a local file, no network and no secret."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from analytics.alerts.rules import HookSpec

log = logging.getLogger("wattlens.alerts.hooks")


class FileDelivery:
    """Appends each request body (the webhook payload, version 1) as one line to ``path`` (mode 0600).

    It has the interface of :class:`~analytics.alerts.hooks.HookDelivery`, so the
    dispatcher treats it like any hook; the write is synchronous, so nothing is
    ever pending. A write that fails is logged and counted; evaluation goes on.
    """

    def __init__(self, spec: HookSpec, path: Path) -> None:
        self.spec = spec
        self.path = path
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.submitted = 0
        self.failed = 0

    def submit(self, body: bytes, owed: bool = False) -> str:
        """Append ``body``; ``owed`` (a resolved notice that must not be lost) changes nothing here."""
        delivery_id = uuid.uuid4().hex
        with self._lock:
            self.submitted += 1
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "ab") as fh:
                    fh.write(body + b"\n")
            except OSError as exc:
                self.failed += 1
                log.error("hook %s: cannot append to %s: %s", self.spec.name, self.path, exc)
        return delivery_id

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float | None = None) -> None:
        self._closing.set()

    @property
    def pending(self) -> int:
        return 0
