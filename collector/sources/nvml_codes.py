"""NVML's return codes, string and field-value decoding, and init-error advice, shared by the NVML modules."""

from __future__ import annotations

import importlib
import math
from typing import Any

# Codes as defined by NVML (nvml.h); looked up on the module when it has them.
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_NOT_FOUND = 6
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_ARGUMENT_VERSION_MISMATCH = 25
_LIBRARY_NOT_FOUND = 12
_DRIVER_NOT_LOADED = 9
_LIB_RM_VERSION_MISMATCH = 18
_SUCCESS = 0


def _import_pynvml() -> Any:
    return importlib.import_module("pynvml")


def _code(nvml: Any, name: str, default: int) -> int:
    value = getattr(nvml, name, default)
    return value if isinstance(value, int) else default


def _text(value: Any) -> str:
    """NVML strings: str in current bindings, bytes in old ones."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _init_error_reason(nvml: Any, exc: Exception) -> str:
    code = getattr(exc, "value", None)
    if code == _code(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", _LIBRARY_NOT_FOUND):
        return "NVML library libnvidia-ml.so.1 not found: no NVIDIA driver installed here"
    if code == _code(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", _DRIVER_NOT_LOADED):
        return "NVIDIA kernel driver not loaded: check `nvidia-smi` and `modprobe nvidia`"
    if code == _code(nvml, "NVML_ERROR_NO_PERMISSION", _NO_PERMISSION):
        return "no permission to open /dev/nvidia*: run as root or a user allowed to use the GPUs"
    if code == _code(nvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", _LIB_RM_VERSION_MISMATCH):
        return ("NVML library and kernel driver versions differ (driver updated without reboot): "
                "reload the nvidia module or reboot")
    return f"NVML init failed: {exc}"


def _field_value(nv: Any, value: Any) -> float | None:
    """Decode one nvmlFieldValue_t by its valueType."""
    kind = int(getattr(value, "valueType", 1))
    members = {
        _code(nv, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
        _code(nv, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
        _code(nv, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
        _code(nv, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
        _code(nv, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
        _code(nv, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
        _code(nv, "NVML_VALUE_TYPE_UNSIGNED_SHORT", 6): "usVal",
    }
    member = members.get(kind)
    raw = getattr(value.value, member, None) if member else None
    if raw is None:
        return None
    result = float(raw)
    return result if math.isfinite(result) else None
