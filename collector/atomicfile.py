"""Replace a small file atomically: a crash leaves the old content or the new, never a torn file.

One implementation for every state file the agent and the alert engine keep (counter
snapshots, autopilot originals, simulated limits, alert state, exported rules).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and a rename.

    ``durable`` also fsyncs the file and its directory, so the new content survives a power
    loss (state that must not be lost, such as original power limits); without it a crash may
    leave the old content, which is fine for a snapshot rewritten every round.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
