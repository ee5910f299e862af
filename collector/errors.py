"""The collector's small exception tree; vendor errors are translated into it once, where they arise."""

from __future__ import annotations


class WattlensError(Exception):
    """Base of every error wattlens raises on purpose."""


class ConfigError(WattlensError, ValueError):
    """Bad user input: a flag, an environment variable, a config file or a URL.

    The message names the field and the value and says what to do.
    """


class SourceUnavailable(WattlensError):
    """A sensor family is not present or not readable on this machine."""


class DeviceLost(WattlensError):
    """One device stopped answering (e.g. NVML_ERROR_GPU_IS_LOST); others keep sampling."""


class StoreError(WattlensError):
    """A store could not be reached or refused a request."""


class StoreUnavailable(StoreError):
    """Transient: the store is down, timed out, or answered 5xx/429. Spool and retry."""


class StoreRejected(StoreError):
    """Permanent: the store answered 4xx for this data. Log and drop; never retry."""
