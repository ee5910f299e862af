"""NVIDIA GPU power, energy, utilisation, clocks, limits and processes through NVML (pynvml), MIG-aware."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from collector.counters import (
    CounterState,
    CounterTracker,
    PowerIntegrator,
    QualityTracker,
    quality_point,
)
from collector.errors import DeviceLost, SourceUnavailable
from collector.logutil import LogOnce
from collector.schema import FieldValue, Point, point
from collector.sources.base import Probe, Tick
from collector.sources.mig import MigReader
from collector.sources.nvml_codes import (
    _ARGUMENT_VERSION_MISMATCH,
    _FUNCTION_NOT_FOUND,
    _GPU_IS_LOST,
    _NO_PERMISSION,
    _NOT_SUPPORTED,
    _SUCCESS,
    _code,
    _field_value,
    _import_pynvml,
    _init_error_reason,
    _text,
)
from collector.sources.nvml_limits import get_power_limits, set_power_limit_w

__all__ = ["NvmlSource", "from_options", "get_power_limits", "set_power_limit_w"]

log = logging.getLogger("wattlens.sources.nvml")

# Clock event ("throttle") reason bits, nvml.h nvmlClocksEventReason*.
_REASON_SW_POWER_CAP = 0x4
_REASON_HW_SLOWDOWN = 0x8
_REASON_SW_THERMAL = 0x20
_REASON_HW_THERMAL = 0x40
_REASON_HW_POWER_BRAKE = 0x80


@dataclass
class _Gpu:
    """One physical GPU and what we remember about it between samples."""

    index: int
    handle: Any
    uuid: str = ""
    model: str = ""
    method: str | None = None  # counter | integrated, decided at discovery
    mig_enabled: bool = False
    mig_instances: int | None = None
    mig: MigReader | None = None  # the MIG instances and their activity, when MIG is on
    tracker: CounterTracker = field(default_factory=CounterTracker)  # 64-bit mJ: never wraps
    integrator: PowerIntegrator = field(default_factory=PowerIntegrator)
    quality: QualityTracker = field(default_factory=QualityTracker)
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False
    lost_at_s: float = -math.inf


class NvmlSource:
    """Samples every NVIDIA GPU through NVML and emits ``gpu`` points plus per-minute ``quality`` points.

    ``energy_j`` comes from ``nvmlDeviceGetTotalEnergyConsumption`` (Volta+,
    method=counter) or, where that is unsupported, from trapezoid integration
    of ``power_w`` (method=integrated). ``power_w`` is
    ``nvmlDeviceGetPowerUsage`` (a 1 s average on Ampere and later);
    ``power_instant_w``/``power_average_w`` come from field values where the
    driver has them. Anything a GPU does not support is left out, never 0.
    A GPU that reports NVML_ERROR_GPU_IS_LOST is skipped (others go on) and
    retried every ``retry_lost_s``. MIG: power and energy are per board (NVML has
    no per-instance power), so each physical GPU is one ``gpu`` series; each
    instance gets a ``mig`` point with its share of the board's energy
    (:mod:`collector.sources.mig`), and its processes count in :meth:`compute_pids`.
    """

    name = "nvml"

    def __init__(
        self,
        host: str,
        *,
        nvml: Any = None,
        quality_interval_s: float = 60.0,
        retry_lost_s: float = 30.0,
        counter_state: CounterState | None = None,
    ) -> None:
        self.host = host
        self.counter_state = counter_state  # saved readings: no energy lost across restarts
        self.quality_interval_s = quality_interval_s
        self.retry_lost_s = retry_lost_s
        self._nvml = nvml
        self._initialized = False
        self._gpus: list[_Gpu] | None = None
        self._driver = ""
        self._lock = threading.RLock()
        self._warn = LogOnce(log)
        self._last_mono_s = 0.0

    # --- setup ------------------------------------------------------------------
    def _module(self) -> Any:
        if self._nvml is None:
            try:
                self._nvml = _import_pynvml()
            except ImportError as exc:
                raise SourceUnavailable(
                    f"pynvml not importable ({exc}): pip install nvidia-ml-py"
                ) from exc
        return self._nvml

    def _ensure(self) -> list[_Gpu]:
        if self._gpus is not None:
            return self._gpus
        nv = self._module()
        if not self._initialized:
            try:
                nv.nvmlInit()
            except nv.NVMLError as exc:
                raise SourceUnavailable(_init_error_reason(nv, exc)) from exc
            except OSError as exc:  # a broken libnvidia-ml.so on the loader path
                raise SourceUnavailable(f"NVML library failed to load: {exc}") from exc
            self._initialized = True
        try:
            count = int(nv.nvmlDeviceGetCount())
            self._driver = _text(nv.nvmlSystemGetDriverVersion())
        except nv.NVMLError as exc:
            raise SourceUnavailable(f"NVML could not list GPUs: {exc}") from exc
        if count == 0:
            raise SourceUnavailable("NVML found no NVIDIA GPUs")
        self._gpus = [self._discover(i) for i in range(count)]
        return self._gpus

    def _discover(self, index: int) -> _Gpu:
        nv = self._nvml
        gpu = _Gpu(index=index, handle=None,
                   quality=QualityTracker(interval_s=self.quality_interval_s))
        try:
            gpu.handle = nv.nvmlDeviceGetHandleByIndex(index)
            self._identify(gpu)
        except (nv.NVMLError, DeviceLost) as exc:
            gpu.lost = True
            gpu.quality.lost()
            self._warn.warning(f"gpu {index}", f"nvml: gpu {index} unavailable at start: {exc}")
        return gpu

    def _identify(self, gpu: _Gpu) -> None:
        """Name, UUID, MIG mode and energy-counter support of a freshly acquired handle."""
        nv = self._nvml
        gpu.model = _text(self._get(gpu, "name", "nvmlDeviceGetName") or "")
        gpu.uuid = _text(self._get(gpu, "uuid", "nvmlDeviceGetUUID") or "")
        mode = self._get(gpu, "mig_mode", "nvmlDeviceGetMigMode")
        gpu.mig_enabled = bool(mode) and mode[0] == _code(nv, "NVML_DEVICE_MIG_ENABLE", 1)
        if gpu.mig_enabled:
            if gpu.mig is None or gpu.mig.parent is not gpu.handle:
                if gpu.mig is not None:
                    gpu.mig.close()
                gpu.mig = MigReader(nv, gpu.handle, gpu.index, self._warn)
            gpu.mig_instances = len(gpu.mig.handles())
        else:
            gpu.mig, gpu.mig_instances = None, None
        if gpu.method is None:
            energy = self._get(gpu, "energy", "nvmlDeviceGetTotalEnergyConsumption")
            if energy is not None:
                gpu.method = "counter"
            elif "energy" in gpu.unsupported:
                gpu.method = "integrated"

    # --- calls ------------------------------------------------------------------
    def _get(self, gpu: _Gpu, key: str, fn_name: str, *args: Any) -> Any:
        """Call one NVML device query; None when unsupported (remembered) or failing; DeviceLost if lost."""
        if key in gpu.unsupported:
            return None
        nv = self._nvml
        fn = getattr(nv, fn_name, None)
        if fn is None:
            gpu.unsupported.add(key)
            return None
        try:
            return fn(gpu.handle, *args)
        except nv.NVMLError as exc:
            self._classify(gpu, key, exc)
            return None

    def _classify(self, gpu: _Gpu, key: str, exc: Exception) -> None:
        nv = self._nvml
        code = getattr(exc, "value", None)
        if code == _code(nv, "NVML_ERROR_GPU_IS_LOST", _GPU_IS_LOST):
            raise DeviceLost(f"nvml: gpu {gpu.index} is lost (NVML_ERROR_GPU_IS_LOST)") from exc
        unsupported = {
            _code(nv, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED),
            _code(nv, "NVML_ERROR_FUNCTION_NOT_FOUND", _FUNCTION_NOT_FOUND),
            _code(nv, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", _ARGUMENT_VERSION_MISMATCH),
        }
        if code in unsupported:
            gpu.unsupported.add(key)
            return
        if code == _code(nv, "NVML_ERROR_NO_PERMISSION", _NO_PERMISSION):
            gpu.unsupported.add(key)
        self._warn.warning(f"gpu {gpu.index} {key}", f"nvml: gpu {gpu.index}: {key} failed: {exc}")

    def _power_fields(self, gpu: _Gpu) -> tuple[float | None, float | None]:
        """Instant and averaged power (W) from field values, where the driver has them."""
        nv = self._nvml
        ids = [getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None),
               getattr(nv, "NVML_FI_DEV_POWER_AVERAGE", None)]
        if None in ids:
            return None, None
        values = self._get(gpu, "power_fields", "nvmlDeviceGetFieldValues", ids)
        if values is None:
            return None, None
        out: list[float | None] = []
        statuses: list[int] = []
        for value in values:
            status = int(getattr(value, "nvmlReturn", _SUCCESS))
            statuses.append(status)
            if status == _code(nv, "NVML_ERROR_GPU_IS_LOST", _GPU_IS_LOST):
                raise DeviceLost(f"nvml: gpu {gpu.index} is lost (NVML_ERROR_GPU_IS_LOST)")
            decoded = _field_value(nv, value) if status == _SUCCESS else None
            out.append(None if decoded is None else decoded / 1000.0)
        if all(s != _SUCCESS for s in statuses):
            gpu.unsupported.add("power_fields")  # neither field exists on this GPU/driver
        padded = [*out, None, None]
        return padded[0], padded[1]

    def _temperature(self, gpu: _Gpu) -> float | None:
        nv = self._nvml
        sensor = _code(nv, "NVML_TEMPERATURE_GPU", 0)
        # nvmlDeviceGetTemperature is deprecated (removed in CUDA 14); the V form
        # needs a recent driver, so fall back to the old call where it is missing.
        value = self._get(gpu, "temp_v", "nvmlDeviceGetTemperatureV", sensor)
        if value is None and "temp_v" in gpu.unsupported:
            value = self._get(gpu, "temp", "nvmlDeviceGetTemperature", sensor)
        return None if value is None else float(value)

    def _clock_reasons(self, gpu: _Gpu) -> int | None:
        value = self._get(gpu, "clock_events", "nvmlDeviceGetCurrentClocksEventReasons")
        if value is None and "clock_events" in gpu.unsupported:
            value = self._get(gpu, "throttle", "nvmlDeviceGetCurrentClocksThrottleReasons")
        return None if value is None else int(value)

    # --- Source protocol ----------------------------------------------------------
    def probe(self) -> Probe:
        try:
            with self._lock:
                gpus = self._ensure()
        except SourceUnavailable as exc:
            return Probe.skipped(str(exc))
        models: dict[str, int] = {}
        for gpu in gpus:
            models[gpu.model or "unknown"] = models.get(gpu.model or "unknown", 0) + 1
        names = ", ".join(f"{n}x {m}" if n > 1 else m for m, n in models.items())
        counters = sum(1 for g in gpus if g.method == "counter")
        detail = (f"found {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({names}), "
                  f"driver {self._driver}, energy counter on {counters}/{len(gpus)}")
        mig = sum(1 for g in gpus if g.mig_enabled)
        if mig:
            detail += f", MIG on {mig}/{len(gpus)}"
        lost = sum(1 for g in gpus if g.lost)
        if lost:
            detail += f", {lost} unavailable"
        return Probe.found(detail)

    def sample(self, tick: Tick) -> list[Point]:
        with self._lock:
            gpus = self._ensure()
            self._last_mono_s = tick.mono_s
            points: list[Point] = []
            for gpu in gpus:
                if gpu.lost:
                    self._retry(gpu, tick.mono_s)
                if not gpu.lost:
                    try:
                        points.extend(self._sample_gpu_and_mig(gpu, tick))
                    except DeviceLost as exc:
                        self._mark_lost(gpu, tick.mono_s, str(exc))
                window = gpu.quality.poll(tick.mono_s, gpu.tracker.stats, not gpu.lost)
                if window is not None:
                    points.append(quality_point(self.host, self.name, str(gpu.index), window,
                                                tick.wall_ns))
            return points

    def _sample_gpu_and_mig(self, gpu: _Gpu, tick: Tick) -> list[Point]:
        p = self._sample_gpu(gpu, tick)
        if p is None:
            return []
        if gpu.mig is None:
            return [p]
        instances = gpu.mig.read(lambda handle: self._pids(gpu, handle))
        gpu.mig_instances = len(instances)
        energy, power = p.field("energy_j"), p.field("power_w")
        return [p, *gpu.mig.points(self.host, gpu.uuid,
                                   energy if isinstance(energy, float) else None,
                                   power if isinstance(power, float) else None, tick.wall_ns)]

    def _sample_gpu(self, gpu: _Gpu, tick: Tick) -> Point | None:
        nv = self._nvml
        power_mw = self._get(gpu, "power", "nvmlDeviceGetPowerUsage")
        power_w = None if power_mw is None else power_mw / 1000.0
        instant_w, average_w = self._power_fields(gpu)
        integrated_j = None if power_w is None else gpu.integrator.update(tick.mono_s, power_w)
        counter_j = None
        if gpu.method != "integrated":
            energy_mj = self._get(gpu, "energy", "nvmlDeviceGetTotalEnergyConsumption")
            if energy_mj is not None:
                gpu.method = "counter"
                if self.counter_state is not None:
                    key = f"nvml:{gpu.uuid}"
                    if gpu.tracker.last is None:
                        saved = self.counter_state.restore(key)
                        if saved is not None:  # the agent restarted: count its downtime's energy
                            gpu.tracker.last = saved[0]
                    self.counter_state.remember(key, float(energy_mj), tick.wall_ns / 1e9)
                delta_mj = gpu.tracker.update(float(energy_mj))
                counter_j = None if delta_mj is None else delta_mj / 1000.0
            elif "energy" in gpu.unsupported:
                gpu.method = "integrated"
        gpu.quality.add_energy(counter_j, integrated_j)
        util = self._get(gpu, "util", "nvmlDeviceGetUtilizationRates")
        limit_mw = self._get(gpu, "power_limit", "nvmlDeviceGetEnforcedPowerLimit")
        sm_mhz = self._get(gpu, "sm_clock", "nvmlDeviceGetClockInfo", _code(nv, "NVML_CLOCK_SM", 1))
        mem_mhz = self._get(gpu, "mem_clock", "nvmlDeviceGetClockInfo",
                            _code(nv, "NVML_CLOCK_MEM", 2))
        reasons = self._clock_reasons(gpu)
        fields: dict[str, FieldValue | None] = {
            "power_w": power_w,
            "power_instant_w": instant_w,
            "power_average_w": average_w,
            "energy_j": counter_j if gpu.method == "counter" else integrated_j,
            "util_pct": None if util is None else float(util.gpu),
            "mem_util_pct": None if util is None else float(util.memory),
            "sm_clock_mhz": None if sm_mhz is None else float(sm_mhz),
            "mem_clock_mhz": None if mem_mhz is None else float(mem_mhz),
            "temp_c": self._temperature(gpu),
            "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
            "clocks_event_reasons": None if reasons is None else float(reasons),
            "throttle_power": None if reasons is None else float(
                bool(reasons & (_REASON_SW_POWER_CAP | _REASON_HW_POWER_BRAKE))),
            "throttle_thermal": None if reasons is None else float(
                bool(reasons & (_REASON_SW_THERMAL | _REASON_HW_THERMAL | _REASON_HW_SLOWDOWN))),
            "mig_instances": None if gpu.mig_instances is None else float(gpu.mig_instances),
        }
        if all(v is None for v in fields.values()):
            return None
        tags = {"host": self.host, "gpu": str(gpu.index), "uuid": gpu.uuid, "model": gpu.model,
                "method": gpu.method or "counter"}
        return point("gpu", tags, fields, tick.wall_ns)

    def _mark_lost(self, gpu: _Gpu, now_s: float, why: str) -> None:
        if not gpu.lost:
            gpu.quality.lost()
        gpu.lost = True
        gpu.lost_at_s = now_s
        # Never count energy across the gap: a lost GPU is usually reset, and a
        # reset restarts its energy counter.
        gpu.tracker.forget()
        gpu.integrator.forget()
        self._warn.warning(f"gpu {gpu.index}", f"{why}; other GPUs keep sampling, "
                           f"retrying every {self.retry_lost_s:g} s")

    def _retry(self, gpu: _Gpu, now_s: float) -> None:
        if now_s - gpu.lost_at_s < self.retry_lost_s:
            return
        nv = self._nvml
        gpu.lost_at_s = now_s
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(gpu.index)
            nv.nvmlDeviceGetUUID(handle)  # answered by every GPU that is really back
        except nv.NVMLError:
            return  # still lost; try again after retry_lost_s
        gpu.handle = handle
        gpu.lost = False
        try:
            self._identify(gpu)
        except DeviceLost as exc:
            self._mark_lost(gpu, now_s, str(exc))
            return
        self._warn.clear(f"gpu {gpu.index}", f"nvml: gpu {gpu.index} is back")

    # --- beyond the protocol ----------------------------------------------------
    @property
    def nvml_module(self) -> Any:
        """The pynvml module (or stand-in) this source uses; None until first probed or sampled."""
        return self._nvml

    def compute_pids(self) -> dict[int, list[int]]:
        """PIDs of compute processes per physical GPU index (MIG instances merged into their GPU).

        For job attribution; PIDs are never tags. A lost GPU maps to an empty list.
        """
        with self._lock:
            out: dict[int, list[int]] = {}
            for gpu in self._ensure():
                out[gpu.index] = []
                if gpu.lost:
                    continue
                try:
                    handles = [gpu.handle]
                    if gpu.mig is not None:
                        handles.extend(h for _slot, h in gpu.mig.handles())
                        gpu.mig_instances = len(handles) - 1
                    pids: set[int] = set()
                    for handle in handles:
                        pids.update(self._pids(gpu, handle))
                except DeviceLost as exc:
                    self._mark_lost(gpu, self._last_mono_s, str(exc))
                    continue
                out[gpu.index] = sorted(pids)
            return out

    def mig_pid_weights(self) -> dict[int, dict[int, float]]:
        """GPU index -> PID -> weight (0-100) for the MIG GPUs: each PID's share of its instance's
        part of the GPU (:meth:`collector.sources.mig.MigReader.pid_weights`), as of the last sample."""
        with self._lock:
            return {g.index: g.mig.pid_weights() for g in self._ensure()
                    if g.mig is not None and not g.lost}

    def device_pids(self) -> dict[str, list[int]]:
        """Device ID -> compute PIDs, as Kubernetes names devices: the GPU UUID, or on a MIG GPU
        each instance's ``MIG-`` UUID (as of the last sample). For mapping processes to pods."""
        with self._lock:
            out: dict[str, list[int]] = {}
            for gpu in self._ensure():
                if gpu.lost or not gpu.uuid:
                    continue
                try:
                    if gpu.mig is not None:
                        out.update({i.uuid: list(i.pids) for i in gpu.mig.instances})
                    else:
                        out[gpu.uuid] = sorted(set(self._pids(gpu, gpu.handle)))
                except DeviceLost as exc:
                    self._mark_lost(gpu, self._last_mono_s, str(exc))
            return out

    def _pids(self, gpu: _Gpu, handle: Any) -> list[int]:
        nv = self._nvml
        # The unversioned call needs the v3 symbol (driver 510+); older drivers have v2.
        for fn_name in ("nvmlDeviceGetComputeRunningProcesses",
                        "nvmlDeviceGetComputeRunningProcesses_v2"):
            key = f"pids:{fn_name}"
            fn = getattr(nv, fn_name, None)
            if fn is None or key in gpu.unsupported:
                continue
            try:
                return [int(p.pid) for p in fn(handle)]
            except nv.NVMLError as exc:
                self._classify(gpu, key, exc)
            except Exception as exc:  # pynvml's NVMLLibraryMismatchError is not an NVMLError
                gpu.unsupported.add(key)
                self._warn.warning(f"gpu {gpu.index} {key}", f"nvml: gpu {gpu.index}: {exc}")
        return []

    def gpus(self) -> list[tuple[int, str, str, str | None]]:
        """(index, uuid, model, method) of every GPU found; for scripts and the status line."""
        with self._lock:
            return [(g.index, g.uuid, g.model, g.method) for g in self._ensure()]

    def close(self) -> None:
        with self._lock:
            for gpu in self._gpus or []:
                if gpu.mig is not None:
                    gpu.mig.close()
            if self._initialized and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception as exc:  # shutting down must not fail the agent's exit
                    log.debug("nvmlShutdown failed: %s", exc)
            self._initialized = False
            self._gpus = None


def from_options(
    host: str,
    quality_interval_s: float = 60.0,
    retry_lost_s: float = 30.0,
    interval_s: float | None = None,
    counter_state: CounterState | None = None,
) -> NvmlSource:
    """Registry factory; ``interval_s`` is accepted for a uniform agent call and not needed here."""
    del interval_s
    return NvmlSource(host, quality_interval_s=quality_interval_s, retry_lost_s=retry_lost_s,
                      counter_state=counter_state)
