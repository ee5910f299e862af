"""A stand-in for the pynvml module: the binding's real names and error codes, GPU state in Python."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# Values as in nvml.h / pynvml (test_fake_matches_real_binding checks them).
NVML_SUCCESS = 0
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5
NVML_VALUE_TYPE_UNSIGNED_SHORT = 6
NVML_GPM_METRIC_GRAPHICS_UTIL = 1
NVML_GPM_METRIC_SM_UTIL = 2
NVML_GPM_METRICS_GET_VERSION = 1
NVML_GPM_SUPPORT_VERSION = 1

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonHwSlowdown = 0x8
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80

CONSTANTS = {k: v for k, v in dict(globals()).items()
             if k.startswith(("NVML_", "nvmlClocksEventReason"))}


class NVMLError(Exception):
    """Like pynvml.NVMLError: carries the NVML return code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"NVML error {self.value}"


@dataclass
class FakeMig:
    """One MIG device (GPU instance / compute instance) on a fake GPU.

    ``activity_pct`` is what GPM reports as the instance's graphics activity
    between two samples (None: the GPM metric fails for it).
    """

    pids: list[int] = field(default_factory=list)
    uuid: str = ""  # "" -> MIG-<gpu>-<slot>
    gi_id: int = 0
    slices: int = 1  # gpuInstanceSliceCount: 1g, 2g, 3g, 4g, 7g
    activity_pct: float | None = 0.0


@dataclass
class FakeGpu:
    """State of one fake GPU; None for a value means the GPU does not support it."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    power_mw: int | None = 300_000
    instant_mw: int | None = 310_000
    average_mw: int | None = 295_000
    energy_mj: int | None = 1_000_000
    util: tuple[int, int] | None = (90, 40)
    sm_clock_mhz: int | None = 1980
    mem_clock_mhz: int | None = 2619
    temp_c: int | None = 55
    temp_v_supported: bool = True
    enforced_limit_mw: int | None = 700_000
    limit_constraints_mw: tuple[int, int] = (200_000, 700_000)
    limit_mw: int = 700_000
    default_limit_mw: int = 700_000
    reasons: int | None = 0
    pids: list[int] = field(default_factory=list)
    mig_enabled: bool | None = False  # None: MIG not supported at all
    migs: dict[int, FakeMig] = field(default_factory=dict)  # slot -> device
    max_mig_slots: int = 7
    gpm_supported: bool = False  # Hopper+: per-instance activity through GPM
    lost: bool = False
    set_limit_error: int | None = None

    def consume_mj(self, mj: int) -> None:
        """Advance the energy counter, as running the GPU would."""
        assert self.energy_mj is not None, "this GPU has no energy counter"
        self.energy_mj += mj


@dataclass(frozen=True)
class _Handle:
    index: int


@dataclass(frozen=True)
class _MigHandle:
    index: int
    slot: int


class _GpmMetric:
    def __init__(self) -> None:
        self.metricId = 0
        self.nvmlReturn = NVML_SUCCESS
        self.value = 0.0


class c_nvmlGpmMetricsGet_t:  # the binding's name
    """Like the binding's ctypes struct: version, numMetrics, sample1, sample2, metrics[]."""

    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: Any = None
        self.sample2: Any = None
        self.metrics = [_GpmMetric() for _ in range(8)]


@dataclass
class _GpmSample:
    serial: int
    taken: dict[str, Any] = field(default_factory=dict)


class FakeNvml:
    """Module-like object with pynvml's function names; pass it as ``NvmlSource(nvml=...)``."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None,
                 driver: str = "550.54.15") -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.driver = driver
        self.initialized = 0
        self.calls: dict[str, int] = {}
        self.set_limits: list[tuple[int, int]] = []
        self.gpm_live: set[int] = set()  # allocated, not yet freed GPM samples
        self._gpm_serial = 0
        self.c_nvmlGpmMetricsGet_t = c_nvmlGpmMetricsGet_t
        for name, value in CONSTANTS.items():
            setattr(self, name, value)

    # helpers
    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _gpu(self, handle: Any) -> FakeGpu:
        if not isinstance(handle, _Handle):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    @staticmethod
    def _need(value: Any) -> Any:
        if value is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return value

    # library
    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")
        if self.initialized <= 0:
            raise NVMLError(1)  # NVML_ERROR_UNINITIALIZED
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return _Handle(index)

    # identity
    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if isinstance(handle, _MigHandle):
            return self._mig(handle).uuid or f"MIG-{handle.index}-{handle.slot}"
        return self._gpu(handle).uuid

    # MIG
    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        gpu = self._gpu(handle)
        mode = self._need(gpu.mig_enabled)
        state = NVML_DEVICE_MIG_ENABLE if mode else NVML_DEVICE_MIG_DISABLE
        return [state, state]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        self._need(gpu.mig_enabled)
        return gpu.max_mig_slots

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> _MigHandle:
        gpu = self._gpu(handle)
        if index not in gpu.migs:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return _MigHandle(handle.index, index)

    def _mig(self, handle: Any) -> FakeMig:
        if not isinstance(handle, _MigHandle):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        self._gpu(_Handle(handle.index))  # raises GPU_IS_LOST for a lost parent
        mig = self.gpus[handle.index].migs.get(handle.slot)
        if mig is None:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return mig

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> int:
        return int(isinstance(handle, _MigHandle))

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> _Handle:
        self._mig(handle)
        return _Handle(handle.index)

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return self._mig(handle).gi_id

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        self._mig(handle)
        return 0

    def nvmlDeviceGetAttributes(self, handle: Any) -> SimpleNamespace:
        mig = self._mig(handle)
        return SimpleNamespace(multiprocessorCount=16 * mig.slices, gpuInstanceSliceCount=mig.slices,
                               computeInstanceSliceCount=mig.slices, memorySizeMB=10_000 * mig.slices)

    # GPM (per-instance activity on Hopper+)
    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> SimpleNamespace:
        gpu = self._gpu(handle)
        return SimpleNamespace(version=NVML_GPM_SUPPORT_VERSION, isSupportedDevice=int(gpu.gpm_supported))

    def nvmlGpmSampleAlloc(self) -> _GpmSample:
        self._gpm_serial += 1
        self.gpm_live.add(self._gpm_serial)
        return _GpmSample(self._gpm_serial)

    def nvmlGpmSampleFree(self, sample: _GpmSample) -> None:
        if sample.serial not in self.gpm_live:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # double free
        self.gpm_live.discard(sample.serial)

    def nvmlGpmMigSampleGet(self, handle: Any, gpu_instance_id: int, sample: _GpmSample) -> _GpmSample:
        gpu = self._gpu(handle)
        if not gpu.gpm_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        mig = next((m for m in gpu.migs.values() if m.gi_id == gpu_instance_id), None)
        if mig is None or sample.serial not in self.gpm_live:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        sample.taken = {"activity": mig.activity_pct}
        return sample

    def nvmlGpmMetricsGet(self, get: c_nvmlGpmMetricsGet_t) -> c_nvmlGpmMetricsGet_t:
        for s in (get.sample1, get.sample2):
            if not isinstance(s, _GpmSample) or s.serial not in self.gpm_live or not s.taken:
                raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        for m in get.metrics[:get.numMetrics]:
            value = get.sample2.taken["activity"] if m.metricId == NVML_GPM_METRIC_GRAPHICS_UTIL else None
            m.nvmlReturn = NVML_SUCCESS if value is not None else NVML_ERROR_NOT_SUPPORTED
            m.value = value or 0.0
        return get

    # power and energy
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        self._count("nvmlDeviceGetPowerUsage")
        return int(self._need(self._gpu(handle).power_mw))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        return int(self._need(self._gpu(handle).energy_mj))

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> list[SimpleNamespace]:
        self._count("nvmlDeviceGetFieldValues")
        gpu = self._gpu(handle)
        out = []
        for fid in field_ids:
            raw = {NVML_FI_DEV_POWER_INSTANT: gpu.instant_mw,
                   NVML_FI_DEV_POWER_AVERAGE: gpu.average_mw}.get(fid)
            status = NVML_SUCCESS if raw is not None else NVML_ERROR_NOT_SUPPORTED
            out.append(SimpleNamespace(
                fieldId=fid, scopeId=0, timestamp=0, latencyUsec=0,
                valueType=NVML_VALUE_TYPE_UNSIGNED_INT, nvmlReturn=status,
                value=SimpleNamespace(uiVal=raw or 0, dVal=0.0, ulVal=0, ullVal=0, sllVal=0,
                                      siVal=0, usVal=0),
            ))
        return out

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return int(self._need(self._gpu(handle).enforced_limit_mw))

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        return list(self._gpu(handle).limit_constraints_mw)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return self._gpu(handle).limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        return self._gpu(handle).default_limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, handle: Any, limit: int) -> None:
        gpu = self._gpu(handle)
        if gpu.set_limit_error is not None:
            raise NVMLError(gpu.set_limit_error)
        lo, hi = gpu.limit_constraints_mw
        if not lo <= limit <= hi:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu.limit_mw = limit
        self.set_limits.append((handle.index, limit))

    # utilisation, clocks, temperature, reasons
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> SimpleNamespace:
        gpu_util, mem_util = self._need(self._gpu(handle).util)
        return SimpleNamespace(gpu=gpu_util, memory=mem_util)

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        gpu = self._gpu(handle)
        value = gpu.sm_clock_mhz if clock_type == NVML_CLOCK_SM else gpu.mem_clock_mhz
        return int(self._need(value))

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu(handle)
        if not gpu.temp_v_supported:
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        return int(self._need(gpu.temp_c))

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self._count("nvmlDeviceGetTemperature")
        return int(self._need(self._gpu(handle).temp_c))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return int(self._need(self._gpu(handle).reasons))

    # processes
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[SimpleNamespace]:
        if isinstance(handle, _MigHandle):
            parent = self.gpus[handle.index]
            if parent.lost:
                raise NVMLError(NVML_ERROR_GPU_IS_LOST)
            pids = parent.migs[handle.slot].pids
        else:
            pids = self._gpu(handle).pids
        return [SimpleNamespace(pid=pid, usedGpuMemory=1 << 30) for pid in pids]
