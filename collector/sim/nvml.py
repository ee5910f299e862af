"""The simulated fleet behind the NVML binding's names: power limits set here change the physics.

``SimulatedNvml(fleet, host)`` answers the calls the agent's actuation path makes
(``collector.sources.nvml.get_power_limits`` / ``set_power_limit_w``) for one host of a
:class:`collector.sources.simulated.SimulatedFleet`, with pynvml's names and error codes. A limit
set through it holds from the next simulation tick on (``SimulatedFleet.set_cap``), so the
autopilot's loop runs end to end without a GPU. The range check is the physics' own
(``GpuSpec.check_cap``): NVML_ERROR_INVALID_ARGUMENT outside [min, max].
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from collector.sim.models import GPU_SPECS

# One writer at a time: the agent's HTTP cap endpoint and the autopilot set limits from different
# threads, and the fleet rewrites its whole saved limit state on each change.
_SET_LOCK = threading.Lock()

NVML_SUCCESS = 0
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4


class NVMLError(Exception):
    """pynvml's exception: ``value`` is the nvmlReturn_t code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {2: "Invalid Argument", 3: "Not Supported", 4: "Insufficient Permissions"}.get(
            self.value, f"NVML error {self.value}")


@dataclass(frozen=True)
class _Handle:
    index: int


class SimulatedNvml:
    """The NVML calls power-limit actuation uses, for ``host``'s GPUs in ``fleet``."""

    NVMLError = NVMLError
    NVML_ERROR_INVALID_ARGUMENT = NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION

    def __init__(self, fleet: Any, host: str) -> None:
        self.fleet = fleet
        self.host = host
        self.indices = sorted(i for grp in fleet.groups if grp.host == host for i in grp.gpu_indices)
        if not self.indices:
            raise ValueError(f"host: {host!r} is not in the simulated fleet")

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.indices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if index not in self.indices:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def _spec(self, handle: _Handle) -> Any:
        return GPU_SPECS[self.fleet.group_of(self.host, handle.index).model]

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return str(self._spec(handle).model)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        spec = self._spec(handle)
        return [round(spec.min_cap_w * 1000), round(spec.tdp_w * 1000)]

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        return round(self.fleet.current_cap(self.host, handle.index) * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return self.nvmlDeviceGetPowerManagementLimit(handle)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        return round(self._spec(handle).tdp_w * 1000)

    def nvmlDeviceSetPowerManagementLimit(self, handle: _Handle, limit: int) -> None:
        try:
            with _SET_LOCK:
                self.fleet.set_cap(self.host, handle.index, limit / 1000)
        except ValueError:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT) from None
