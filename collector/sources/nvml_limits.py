"""Power limits of NVIDIA GPUs through NVML (read, and set for `cap apply`): range-checked and logged."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from collector.errors import DeviceLost, SourceUnavailable
from collector.sources.nvml_codes import (
    _GPU_IS_LOST,
    _NO_PERMISSION,
    _code,
    _import_pynvml,
    _init_error_reason,
)

log = logging.getLogger("wattlens.sources.nvml")  # the NVML source's logger: one place to look


@contextmanager
def _session(nvml: Any) -> Iterator[Any]:
    nv = nvml if nvml is not None else _import_pynvml()
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        raise SourceUnavailable(_init_error_reason(nv, exc)) from exc
    try:
        yield nv
    finally:
        nv.nvmlShutdown()


def _limit_error(nv: Any, index: int, what: str, exc: Exception) -> Exception:
    code = getattr(exc, "value", None)
    if code == _code(nv, "NVML_ERROR_NO_PERMISSION", _NO_PERMISSION):
        return PermissionError(f"gpu {index}: {what} needs root (NVML: {exc}): run as root")
    if code == _code(nv, "NVML_ERROR_GPU_IS_LOST", _GPU_IS_LOST):
        return DeviceLost(f"gpu {index}: is lost (NVML_ERROR_GPU_IS_LOST)")
    if code == _code(nv, "NVML_ERROR_INVALID_ARGUMENT", 2):
        return ValueError(f"gpu index {index}: no such GPU")
    return SourceUnavailable(f"gpu {index}: {what} failed (NVML: {exc})")


def _limits(nv: Any, index: int) -> tuple[Any, tuple[float, float, float, float]]:
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        min_mw, max_mw = nv.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        current_mw = nv.nvmlDeviceGetPowerManagementLimit(handle)
        default_mw = nv.nvmlDeviceGetPowerManagementDefaultLimit(handle)
    except nv.NVMLError as exc:
        raise _limit_error(nv, index, "reading power limits", exc) from exc
    return handle, (min_mw / 1000.0, max_mw / 1000.0, current_mw / 1000.0, default_mw / 1000.0)


def get_power_limits(index: int, *, nvml: Any = None) -> tuple[float, float, float, float]:
    """(min_w, max_w, current_w, default_w) of GPU ``index``'s power-management limit."""
    with _session(nvml) as nv:
        return _limits(nv, index)[1]


def set_power_limit_w(index: int, watts: float, *, nvml: Any = None) -> None:
    """Set GPU ``index``'s power limit to ``watts``, after checking it against the GPU's range.

    Raises ValueError naming the value and range when out of bounds, and
    PermissionError when not root. The change is logged: it alters hardware state.
    """
    if isinstance(watts, bool) or not isinstance(watts, (int, float)) or not math.isfinite(watts):
        raise ValueError(f"power limit: must be a finite number of watts, got {watts!r}")
    with _session(nvml) as nv:
        handle, (min_w, max_w, current_w, _default_w) = _limits(nv, index)
        if not min_w <= watts <= max_w:
            raise ValueError(f"power limit {watts:g} W for gpu {index} is outside its allowed "
                             f"range {min_w:g}-{max_w:g} W")
        try:
            nv.nvmlDeviceSetPowerManagementLimit(handle, round(watts * 1000))
        except nv.NVMLError as exc:
            raise _limit_error(nv, index, "setting the power limit", exc) from exc
        log.warning("gpu %d: power limit changed from %g W to %g W", index, current_w, watts)


