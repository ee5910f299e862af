"""Logging helpers: a warning that repeats is logged once, with a count when it clears or changes."""

from __future__ import annotations

import logging


class LogOnce:
    """Log each distinct (key, message) once; say how often it repeated when the message changes."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last: dict[str, tuple[str, int]] = {}

    def warning(self, key: str, message: str) -> bool:
        """Log ``message`` unless it is the same as the last one for ``key``. Returns True if logged."""
        last = self._last.get(key)
        if last is not None and last[0] == message:
            self._last[key] = (message, last[1] + 1)
            return False
        if last is not None and last[1] > 1:
            self._logger.warning("%s: previous warning repeated %d times", key, last[1])
        self._last[key] = (message, 1)
        self._logger.warning("%s", message)
        return True

    def clear(self, key: str, message: str | None = None) -> None:
        """Forget ``key`` (the condition ended); log ``message`` at INFO if it had warned."""
        last = self._last.pop(key, None)
        if last is not None and message:
            self._logger.info("%s (after %d repeated warnings)", message, last[1])
