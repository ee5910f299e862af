"""MIG: a GPU's measured energy split over its MIG instances by activity share (or slice size), conserving the whole.

NVML has no per-instance power or energy: the board's counter covers every
instance. dcgm-exporter reports that whole-board energy on every slice, so a
sum over slices is a multiple of the GPU (its issues 257 and 317). Here each
round's board energy is split, and the parts sum to it:

- ``activity``: each instance's graphics-engine activity from GPM
  (``nvmlGpmMigSampleGet`` + ``NVML_GPM_METRIC_GRAPHICS_UTIL``, Hopper and
  later) times its size in GPU slices, so a busy 3g instance outweighs a busy
  1g one. Used when every instance has a reading and any is non-zero.
- ``slice-size``: each instance's share of the GPU's slices
  (``nvmlDeviceGetAttributes().gpuInstanceSliceCount``), where GPM is missing
  (A100, A30) or every instance was idle.
- ``even``: neither is known.

The basis is written on every ``mig`` point (tag ``basis``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.errors import DeviceLost
from collector.logutil import LogOnce
from collector.schema import Point, point

log = logging.getLogger("wattlens.sources.mig")

ACTIVITY = "activity"
SLICE_SIZE = "slice-size"
EVEN = "even"

_GPU_IS_LOST = 15
_GPM_GRAPHICS_UTIL = 1  # NVML_GPM_METRIC_GRAPHICS_UTIL
_GPM_METRICS_GET_VERSION = 1


def split_by_weight(energy_j: float, weights: Mapping[str, float]) -> dict[str, float]:
    """Split ``energy_j`` over ``weights`` (non-negative; all zero means even); the parts sum to the whole.

    The largest part is the whole minus the others, so rounding never makes
    the sum exceed or fall short of ``energy_j`` by more than an ulp of it.
    """
    if not (math.isfinite(energy_j) and energy_j >= 0):
        raise ValueError(f"energy_j: must be a non-negative finite number, got {energy_j!r}")
    if not weights:
        return {}
    clean = {k: w if math.isfinite(w) and w > 0 else 0.0 for k, w in weights.items()}
    total = math.fsum(clean.values())
    if total <= 0:
        clean, total = dict.fromkeys(clean, 1.0), float(len(clean))
    parts = {k: energy_j * (w / total) for k, w in clean.items()}
    biggest = max(parts, key=lambda k: (parts[k], k))
    rest = math.fsum(v for k, v in parts.items() if k != biggest)
    if rest > energy_j:  # rounding pushed the others past the whole: scale them back
        parts = {k: v * (energy_j / rest) for k, v in parts.items()}
        rest = math.fsum(v for k, v in parts.items() if k != biggest)
    parts[biggest] = max(0.0, energy_j - rest)
    return parts


def gpm_request(nv: Any, before: Any, after: Any) -> Any:
    """An ``nvmlGpmMetricsGet_t`` asking for the graphics activity between two GPM samples."""
    get = nv.c_nvmlGpmMetricsGet_t()
    get.version = getattr(nv, "NVML_GPM_METRICS_GET_VERSION", _GPM_METRICS_GET_VERSION)
    get.numMetrics = 1
    get.sample1, get.sample2 = before, after
    get.metrics[0].metricId = getattr(nv, "NVML_GPM_METRIC_GRAPHICS_UTIL", _GPM_GRAPHICS_UTIL)
    return get


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG device of a GPU as read this round."""

    slot: int
    uuid: str
    gi_id: int | None
    slices: int | None  # GPU slices the instance holds (gpuInstanceSliceCount)
    activity_pct: float | None  # GPM graphics-engine activity over the last round, 0-100
    pids: tuple[int, ...] = ()


def weights_of(instances: list[MigInstance]) -> tuple[dict[str, float], str]:
    """Each instance's weight in the split, and the basis used (activity, slice-size or even)."""
    if not instances:
        return {}, EVEN
    sizes = {i.uuid: float(i.slices) for i in instances if i.slices}
    if len(sizes) == len(instances):
        acts = {i.uuid: i.activity_pct for i in instances}
        if all(a is not None and math.isfinite(a) and a >= 0 for a in acts.values()):
            weights = {u: (acts[u] or 0.0) * sizes[u] for u in sizes}
            if math.fsum(weights.values()) > 0:
                return weights, ACTIVITY
        return sizes, SLICE_SIZE
    return {i.uuid: 1.0 for i in instances}, EVEN


@dataclass
class MigReader:
    """Reads one MIG-enabled GPU's instances each round and keeps their GPM samples between rounds.

    ``nvml`` is the pynvml module (or the test fake); ``parent`` the GPU's handle.
    """

    nvml: Any
    parent: Any
    index: int
    warn: LogOnce = field(default_factory=lambda: LogOnce(log))
    gpm: bool | None = None  # None: not probed yet
    _samples: dict[int, Any] = field(default_factory=dict)  # gi id -> sample of the last round
    _instances: list[MigInstance] = field(default_factory=list)

    def _lost(self, exc: Exception) -> bool:
        return getattr(exc, "value", None) == getattr(self.nvml, "NVML_ERROR_GPU_IS_LOST", _GPU_IS_LOST)

    def handles(self) -> list[tuple[int, Any]]:
        """(slot, handle) of each MIG device present; raises DeviceLost when the GPU is."""
        nv = self.nvml
        try:
            count = int(nv.nvmlDeviceGetMaxMigDeviceCount(self.parent))
        except nv.NVMLError as exc:
            if self._lost(exc):
                raise DeviceLost(f"nvml: gpu {self.index} is lost") from exc
            return []
        out = []
        for slot in range(count):
            try:
                out.append((slot, nv.nvmlDeviceGetMigDeviceHandleByIndex(self.parent, slot)))
            except nv.NVMLError as exc:
                if self._lost(exc):
                    raise DeviceLost(f"nvml: gpu {self.index} is lost") from exc
                continue  # NVML_ERROR_NOT_FOUND: that slot holds no MIG device
        return out

    def _call(self, what: str, fn_name: str, *args: Any) -> Any:
        nv = self.nvml
        fn = getattr(nv, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except nv.NVMLError as exc:
            if self._lost(exc):
                raise DeviceLost(f"nvml: gpu {self.index} is lost") from exc
            self.warn.warning(f"mig {self.index} {what}", f"nvml: gpu {self.index}: MIG {what} "
                              f"unavailable ({exc})")
            return None

    def _gpm_supported(self) -> bool:
        if self.gpm is None:
            nv, support = self.nvml, None
            try:  # an old driver or binding without GPM is the normal case before Hopper: no warning
                support = getattr(nv, "nvmlGpmQueryDeviceSupport", lambda _h: None)(self.parent)
            except nv.NVMLError as exc:
                if self._lost(exc):
                    raise DeviceLost(f"nvml: gpu {self.index} is lost") from exc
            self.gpm = bool(support is not None and getattr(support, "isSupportedDevice", 0))
            if not self.gpm:
                log.info("nvml: gpu %d: no GPM per-instance activity; MIG energy split by slice size",
                         self.index)
        return self.gpm

    def _activity(self, gi_id: int | None) -> float | None:
        """GPM graphics activity (%) of GPU instance ``gi_id`` since the last call; None the first time."""
        if gi_id is None or not self._gpm_supported():
            return None
        nv = self.nvml
        sample = self._call("GPM sample", "nvmlGpmSampleAlloc")
        if sample is None:
            return None
        if self._call("GPM sample", "nvmlGpmMigSampleGet", self.parent, gi_id, sample) is None:
            self._free(sample)
            return None
        before, self._samples[gi_id] = self._samples.get(gi_id), sample
        if before is None:
            return None
        try:
            got = self._call("GPM metrics", "nvmlGpmMetricsGet", gpm_request(nv, before, sample))
        finally:
            self._free(before)
        if got is None or int(got.metrics[0].nvmlReturn) != 0:
            return None
        value = float(got.metrics[0].value)
        return min(100.0, value) if math.isfinite(value) and value >= 0 else None

    def _free(self, sample: Any) -> None:
        try:
            self.nvml.nvmlGpmSampleFree(sample)
        except Exception as exc:  # freeing must never stop sampling
            log.debug("nvmlGpmSampleFree failed: %s", exc)

    def read(self, pids_of: Any) -> list[MigInstance]:
        """This round's instances (UUID, GPU-instance id, size, activity, PIDs); ``pids_of(handle)``."""
        out: list[MigInstance] = []
        for slot, handle in self.handles():
            uuid = self._call("UUID", "nvmlDeviceGetUUID", handle)
            gi_id = self._call("GPU instance id", "nvmlDeviceGetGpuInstanceId", handle)
            attrs = self._call("attributes", "nvmlDeviceGetAttributes", handle)
            slices = getattr(attrs, "gpuInstanceSliceCount", None) if attrs is not None else None
            uuid_text = uuid.decode() if isinstance(uuid, bytes) else str(uuid or f"slot-{slot}")
            out.append(MigInstance(slot, uuid_text, None if gi_id is None else int(gi_id),
                                   int(slices) if slices else None,
                                   self._activity(None if gi_id is None else int(gi_id)),
                                   tuple(sorted(pids_of(handle)))))
        present = {i.gi_id for i in out}
        for gone in [g for g in self._samples if g not in present]:
            self._free(self._samples.pop(gone))
        self._instances = out
        return out

    @property
    def instances(self) -> list[MigInstance]:
        """The instances of the last :meth:`read`."""
        return list(self._instances)

    def points(self, host: str, gpu_uuid: str, energy_j: float | None, power_w: float | None,
               time_ns: int) -> list[Point]:
        """One ``mig`` point per instance: its share of this round's board energy and power."""
        weights, basis = weights_of(self._instances)
        if not weights:
            return []
        total = math.fsum(weights.values())
        energy = split_by_weight(energy_j, weights) if energy_j is not None else {}
        points = []
        for inst in self._instances:
            share = weights[inst.uuid] / total if total > 0 else 1.0 / len(weights)
            tags = {"host": host, "gpu": str(self.index), "uuid": gpu_uuid, "mig": inst.uuid,
                    "gi": "" if inst.gi_id is None else str(inst.gi_id), "basis": basis}
            points.append(point("mig", tags, {
                "energy_j": energy.get(inst.uuid), "share": share,
                "power_w": None if power_w is None else power_w * share,
                "util_pct": inst.activity_pct,
                "slices": None if inst.slices is None else float(inst.slices),
            }, time_ns))
        return points

    def pid_weights(self) -> dict[int, float]:
        """Each PID's weight for job attribution: its instance's share, split over the PIDs there.

        A job's weight on the GPU is then the share of the instances it runs on.
        """
        weights, _basis = weights_of(self._instances)
        total = math.fsum(weights.values())
        out: dict[int, float] = {}
        if total <= 0:
            return out
        for inst in self._instances:
            for pid in inst.pids:
                out[pid] = out.get(pid, 0.0) + 100.0 * weights[inst.uuid] / total / len(inst.pids)
        return out

    def close(self) -> None:
        for sample in self._samples.values():
            self._free(sample)
        self._samples.clear()
