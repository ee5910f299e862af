"""torch integration: samples, tokens and FLOPs per step into a wattlens job, FLOPs measured once per shape.

::

    import wattlens
    from wattlens.torch_helper import StepCounter

    with wattlens.job("bert-ft", batch_size=64) as job:
        counter = StepCounter(job, model)
        for batch in loader:
            with counter.step(batch):          # the whole step: forward, backward, optimizer
                loss = model(batch).loss
                loss.backward()
                optimizer.step()

The first step with a new input shape runs under
``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs the
step really executes (forward and backward); later steps of that shape reuse
the count, so the measurement costs one step per shape. The same step records
the dtype the matrix multiplies ran in, which gives the precision (``amp-bf16``
under autocast to bf16, ``bf16`` for a bf16 model, ``fp32``, ``tf32``, ...).
For Hugging Face's Trainer, pass :class:`WattlensCallback` in ``callbacks``;
it needs no import of transformers.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from wattlens.jobs import Job
from wattlens.jobs import job as make_job

log = logging.getLogger("wattlens.torch")

__all__ = ["StepCounter", "WattlensCallback", "batch_counts", "precision_of"]

_aten = torch.ops.aten
# Ops whose input dtype is the compute precision of a model.
_MATMUL_OPS = frozenset({
    _aten.mm, _aten.addmm, _aten.bmm, _aten.baddbmm, _aten.matmul, _aten.convolution,
    _aten._scaled_dot_product_flash_attention, _aten._scaled_dot_product_efficient_attention,
    _aten._scaled_dot_product_cudnn_attention, _aten._scaled_mm,
})
_DTYPE_NAMES = {
    torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
    torch.int8: "int8",
}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        _DTYPE_NAMES[getattr(torch, _name)] = "fp8"


class _MatmulDtypes(TorchDispatchMode):
    """Records the dtypes matrix multiplies see after autocast has cast their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        if func.overloadpacket in _MATMUL_OPS:
            for a in args:
                if isinstance(a, torch.Tensor) and a.is_floating_point():
                    self.dtypes.add(a.dtype)
                    self.devices.add(a.device.type)
                    break
        return func(*args, **(kwargs or {}))


def precision_of(matmul_dtypes: set[torch.dtype], param_dtype: torch.dtype | None,
                 device_type: str = "cpu") -> str | None:
    """The precision name for what matmuls ran in, given the model's parameter dtype.

    Lower-precision matmuls over fp32 parameters mean autocast (``amp-bf16``,
    ``amp-fp16``); fp32 matmuls on CUDA with TF32 allowed are ``tf32``.
    """
    names = {_DTYPE_NAMES[d] for d in matmul_dtypes if d in _DTYPE_NAMES}
    if not names and param_dtype is not None:
        names = {_DTYPE_NAMES.get(param_dtype, "")} - {""}
    if not names:
        return None
    for low in ("fp8", "fp16", "bf16"):
        if low in names:
            if low != "fp8" and param_dtype == torch.float32:
                return f"amp-{low}"
            return low
    if "fp32" in names:
        tf32 = device_type == "cuda" and (torch.backends.cuda.matmul.allow_tf32
                                          or torch.get_float32_matmul_precision() != "highest")
        return "tf32" if tf32 else "fp32"
    return sorted(names)[0]


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in ("input_ids", "pixel_values", "input_values", "inputs", "x"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
        values = list(batch.values())
    elif isinstance(batch, (list, tuple)):
        values = list(batch)
    else:
        return None
    for v in values:
        found = _first_tensor(v)
        if found is not None:
            return found
    return None


def batch_counts(batch: Any) -> tuple[int, int]:
    """(samples, tokens) of a batch: samples from the leading dimension of its main tensor;
    tokens when that tensor holds token ids (integer, 2-D: batch x sequence), padding included.

    No device synchronisation: only shapes are read.
    """
    t = _first_tensor(batch)
    if t is None or t.dim() == 0:
        return 0, 0
    samples = int(t.shape[0])
    tokens = int(t.numel()) if t.dim() == 2 and not t.is_floating_point() and not t.is_complex() else 0
    return samples, tokens


def _shape_key(batch: Any) -> tuple[Any, ...]:
    out: list[Any] = []

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            out.append((tuple(x.shape), x.dtype, x.device.type))
        elif isinstance(x, Mapping):
            for k in sorted(x, key=str):
                out.append(str(k))
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(batch)
    return tuple(out)


def nvml_index(device: torch.device) -> int | None:
    """The NVML index (what the agent calls the GPU) of a CUDA device, or None when unknown.

    CUDA numbers devices fastest-first and after CUDA_VISIBLE_DEVICES; NVML by
    PCI bus. They are matched by UUID.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-"))
                                                      else f"GPU-{uuid}")
            return int(pynvml.nvmlDeviceGetIndex(handle))
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # no NVML, MIG, an old driver: the agent still sees the PIDs
        log.debug("no NVML index for %s: %s", device, exc)
        return None


class StepCounter:
    """Counts a torch loop's work into ``job``: samples and tokens per step, FLOPs once per shape.

    ``model`` (optional) gives the parameter dtype for precision detection and the
    device for the GPU index. ``count_flops=False`` skips FLOP measurement.
    ``samples_fn``/``tokens_fn`` override how a batch is counted.
    """

    def __init__(self, job: Job, model: torch.nn.Module | None = None, *, count_flops: bool = True,
                 samples_fn: Callable[[Any], int] | None = None,
                 tokens_fn: Callable[[Any], int] | None = None, max_shapes: int = 64) -> None:
        self.job = job
        self.model = model
        self.count_flops = count_flops
        self.samples_fn = samples_fn
        self.tokens_fn = tokens_fn
        self.max_shapes = max_shapes
        self.flops_by_shape: dict[tuple[Any, ...], float] = {}
        self.measured_steps = 0
        self.precision: str | None = None
        self._declared_precision = "precision" in job.metadata
        self._gpu_done = False

    def _param(self) -> torch.Tensor | None:
        if self.model is None:
            return None
        for p in self.model.parameters():
            if p.is_floating_point():
                return p
        return None

    def _counts(self, batch: Any, samples: int | None, tokens: int | None) -> tuple[int, int]:
        s, t = batch_counts(batch) if batch is not None else (0, 0)
        if self.samples_fn is not None:
            s = self.samples_fn(batch)
        if self.tokens_fn is not None:
            t = self.tokens_fn(batch)
        return (s if samples is None else samples), (t if tokens is None else tokens)

    @contextlib.contextmanager
    def step(self, batch: Any = None, *, samples: int | None = None,
             tokens: int | None = None) -> Iterator[None]:
        """Wrap one step; on normal exit count it (a step that raises is not counted)."""
        key = (_shape_key(batch), torch.is_grad_enabled(),
               bool(self.model.training) if self.model is not None else None)
        known = key in self.flops_by_shape
        if self.count_flops and not known and len(self.flops_by_shape) < self.max_shapes:
            with FlopCounterMode(display=False) as counter, _MatmulDtypes() as dtypes:
                yield
            self.flops_by_shape[key] = float(counter.get_total_flops())
            self.measured_steps += 1
            self._learn(dtypes)
        else:
            yield
        s, t = self._counts(batch, samples, tokens)
        self.job.step(samples=s, tokens=t, flops=self.flops_by_shape.get(key, 0.0))

    def count(self, batch: Any = None, *, samples: int | None = None, tokens: int | None = None,
              flops: float = 0.0) -> None:
        """Count a step done outside :meth:`step` (no FLOP measurement)."""
        s, t = self._counts(batch, samples, tokens)
        self.job.step(samples=s, tokens=t, flops=flops)

    def _learn(self, dtypes: _MatmulDtypes) -> None:
        param = self._param()
        device = next(iter(dtypes.devices), param.device.type if param is not None else "cpu")
        self.precision = precision_of(dtypes.dtypes, param.dtype if param is not None else None,
                                      device)
        if self.precision is not None and not self._declared_precision:
            self.job.update(precision=self.precision)
        if not self._gpu_done and param is not None and param.device.type == "cuda":
            self._gpu_done = True
            index = nvml_index(param.device)
            if index is not None and "gpus" not in self.job.metadata:
                self.job.update(gpus=[index])


_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9._:-]+")


def _job_name(raw: str) -> str:
    name = _BAD_NAME_CHARS.sub("-", raw).strip("-.")[-128:]
    return name or "hf-trainer"


class WattlensCallback:
    """A Hugging Face ``TrainerCallback`` by shape (no transformers import): ``callbacks=[WattlensCallback()]``.

    Every rank reports (its PID and GPU, for attribution) under one job name
    (``name``, else ``args.run_name``); each counts the samples it trained on;
    rank 0 alone reports steps, tokens (``state.num_input_tokens_seen``, when
    ``include_num_input_tokens_seen`` is on) and FLOPs (``state.total_flos``,
    Trainer's 6·N·tokens estimate), which Trainer already sums over ranks.
    """

    def __init__(self, name: str | None = None, *, job: Job | None = None, **job_options: Any) -> None:
        self.name = name
        self.job = job
        self.job_options = job_options
        self._owns_job = job is None
        self._flos = 0.0
        self._tokens = 0.0
        self._per_step_samples = 0
        self._rank0 = True

    def _precision(self, args: Any, model: Any) -> str | None:
        if getattr(args, "bf16", False):
            return "amp-bf16"
        if getattr(args, "fp16", False):
            return "amp-fp16"
        dtype = getattr(model, "dtype", None)
        name = _DTYPE_NAMES.get(dtype) if isinstance(dtype, torch.dtype) else None
        if name == "fp32" and getattr(args, "tf32", False):
            return "tf32"
        return name

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        per_rank = int(getattr(args, "per_device_train_batch_size", 0) or 0)
        accumulation = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
        world = int(getattr(args, "world_size", 1) or 1)
        self._per_step_samples = per_rank * accumulation
        self._rank0 = bool(getattr(state, "is_world_process_zero", True))
        self._flos = float(getattr(state, "total_flos", 0.0) or 0.0)
        self._tokens = float(getattr(state, "num_input_tokens_seen", 0) or 0)
        if self.job is None:
            options = dict(self.job_options)
            options.setdefault("precision", self._precision(args, model))
            options.setdefault("batch_size", per_rank or None)
            max_steps = int(getattr(state, "max_steps", 0) or 0)
            if max_steps > 0 and per_rank:
                options.setdefault("planned_samples", float(max_steps * per_rank * accumulation * world))
            gpus = None
            device = getattr(args, "device", None)
            if isinstance(device, torch.device):
                index = nvml_index(device)
                gpus = None if index is None else [index]
            options.setdefault("gpus", gpus)
            name = self.name or _job_name(str(getattr(args, "run_name", "") or "hf-trainer"))
            self.job = make_job(name, **options)
        if self.job.mode is None:
            self.job.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.job is None:
            return
        tokens = 0.0
        if self._rank0:
            seen = float(getattr(state, "num_input_tokens_seen", 0) or 0)
            tokens, self._tokens = max(0.0, seen - self._tokens), seen
        self.job.add(samples=self._per_step_samples, tokens=tokens, steps=1 if self._rank0 else 0)

    def _flops(self, state: Any) -> None:
        if self.job is None or not self._rank0:
            return
        total = float(getattr(state, "total_flos", 0.0) or 0.0)
        if total > self._flos:
            self.job.add(flops=total - self._flos)
        self._flos = max(self._flos, total)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self._flops(state)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flops(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flops(state)
        if self.job is not None and self._owns_job:
            self.job.finish()

    def __getattr__(self, name: str) -> Any:
        # Trainer calls every event on every callback; the ones not needed here do nothing.
        if name.startswith("on_"):
            return _noop
        raise AttributeError(name)


def _noop(*args: Any, **kwargs: Any) -> None:
    return None
