"""Mappings from the schema (measurement, tags, fields) to metrics other exporters already publish.

A ``prometheus://`` store reads through one or more mappings, chosen with
``?mapping=NAME[,NAME]`` (default ``wattlens``). Each schema field maps to one
or more exporter metrics; each schema tag to a label of that metric, or to a
constant. Names, units and labels are those the exporters document; the
sources are cited in docs/prometheus.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from collector.errors import ConfigError

Kind = Literal["counter", "gauge", "series"]


@dataclass(frozen=True)
class Source:
    """One exporter metric behind one schema field.

    ``kind``: ``counter`` (a cumulative counter: a bucket's total is its
    ``increase()``), ``gauge`` (a sampled value), or ``series`` (the field is
    the number of distinct ``distinct`` label sets, e.g. GPUs a pod holds).
    ``scale`` converts to the schema unit (mJ -> J is 0.001). ``share_by``
    splits a counter equally among the series that share those labels, so a
    device counter repeated on every MIG instance is counted once per device.
    """

    metric: str
    kind: Kind
    labels: Mapping[str, str]  # schema tag -> label of this metric
    scale: float = 1.0
    matchers: str = ""  # extra PromQL label matchers, e.g. 'zone=~"package|dram"'
    share_by: tuple[str, ...] = ()
    distinct: tuple[str, ...] = ()
    constants: Mapping[str, str] = field(default_factory=dict)  # schema tag -> fixed value


# The tags that identify a row of each measurement: rows from different metrics are joined
# on these (dcgm-exporter energy and vLLM tokens of one pod on one node become one job row).
KEYS: dict[str, tuple[str, ...]] = {
    "gpu": ("host", "gpu"), "cpu": ("host", "domain"), "job": ("job", "host"),
    "facility": ("site",), "carbon": ("region",),
}


@dataclass(frozen=True)
class MeasurementMap:
    """A measurement: the sources of each of its fields."""

    fields: Mapping[str, tuple[Source, ...]]


Mapping_ = dict[str, MeasurementMap]


def _wattlens() -> Mapping_:
    """wattlens' own exporter (collector/exporter.py): the names are read from it, not repeated."""
    from collector.exporter import COUNTERS, GAUGES, LABELS

    out: Mapping_ = {}
    for measurement, label_names in LABELS.items():
        labels = {t: t for t in label_names}
        fields: dict[str, tuple[Source, ...]] = {}
        for g in GAUGES.get(measurement, ()):
            fields[g.field] = (Source(g.name, "gauge", labels, scale=1.0 / g.scale),)
        for c in COUNTERS.get(measurement, ()):
            fields[c.field] = (Source(c.name, "counter", labels),)
        out[measurement] = MeasurementMap(fields)
    return out


# dcgm-exporter (NVIDIA/dcgm-exporter, etc/default-counters.csv; labels from its
# pkg/cmd and Kubernetes pod mapper): one series per GPU (or per MIG instance,
# with GPU_I_ID), pod/namespace/container added while a pod holds the GPU.
DCGM_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # counter, mJ since driver load
DCGM_GPU = {"host": "Hostname", "gpu": "gpu", "uuid": "UUID", "model": "modelName"}
DCGM_DEVICE = ("Hostname", "UUID")  # a physical GPU: MIG instances share it
DCGM_JOB = {"job": "pod", "host": "Hostname", "gpu_model": "modelName", "team": "namespace",
            # its Kubernetes pod mapper's labels, as the agent tags job points (collector/k8s)
            "namespace": "namespace", "pod": "pod", "container": "container"}
IN_POD = 'pod!=""'


def _dcgm() -> Mapping_:
    gpu = {
        "energy_j": (Source(DCGM_ENERGY, "counter", DCGM_GPU, 1e-3, share_by=DCGM_DEVICE),),
        "power_w": (Source("DCGM_FI_DEV_POWER_USAGE", "gauge", DCGM_GPU),),
        "util_pct": (Source("DCGM_FI_DEV_GPU_UTIL", "gauge", DCGM_GPU),),
        "sm_clock_mhz": (Source("DCGM_FI_DEV_SM_CLOCK", "gauge", DCGM_GPU),),
        "mem_clock_mhz": (Source("DCGM_FI_DEV_MEM_CLOCK", "gauge", DCGM_GPU),),
        "temp_c": (Source("DCGM_FI_DEV_GPU_TEMP", "gauge", DCGM_GPU),),
        "power_limit_w": (Source("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", DCGM_GPU),),
    }
    job = {
        "energy_j": (Source(DCGM_ENERGY, "counter", DCGM_JOB, 1e-3, IN_POD, DCGM_DEVICE),),
        "gpus": (Source(DCGM_ENERGY, "series", DCGM_JOB, matchers=IN_POD, distinct=DCGM_DEVICE),),
        "util_pct": (Source("DCGM_FI_DEV_GPU_UTIL", "gauge", DCGM_JOB, matchers=IN_POD),),
        "power_limit_w": (Source("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", DCGM_JOB,
                                 matchers=IN_POD),),
        # a clock lock shows here: the measured clock-lock saving (analytics.clock_lock)
        "sm_clock_mhz": (Source("DCGM_FI_DEV_SM_CLOCK", "gauge", DCGM_JOB, matchers=IN_POD),),
    }
    return {"gpu": MeasurementMap(gpu), "job": MeasurementMap(job)}


def _dcgm_slurm() -> Mapping_:
    """dcgm-exporter with its HPC job mapping (``hpc_job`` label, Slurm): jobs by hpc_job."""
    labels = {"job": "hpc_job", "host": "Hostname", "gpu_model": "modelName"}
    in_job = 'hpc_job!=""'
    job = {
        "energy_j": (Source(DCGM_ENERGY, "counter", labels, 1e-3, in_job, DCGM_DEVICE),),
        "gpus": (Source(DCGM_ENERGY, "series", labels, matchers=in_job, distinct=DCGM_DEVICE),),
        "util_pct": (Source("DCGM_FI_DEV_GPU_UTIL", "gauge", labels, matchers=in_job),),
    }
    return {"gpu": _dcgm()["gpu"], "job": MeasurementMap(job)}


# Kepler >= 0.10 (sustainable-computing-io/kepler, docs/user/metrics.md): RAPL zones;
# core and uncore are inside package, so only package and dram are summed.
KEPLER_ZONES = 'zone=~"package|dram"'


def _kepler() -> Mapping_:
    node = {"host": "node_name", "domain": "zone"}
    container = {"job": "container_name", "host": "node_name"}
    cpu = {
        "energy_j": (Source("kepler_node_cpu_joules_total", "counter", node,
                            matchers=KEPLER_ZONES, constants={"method": "counter"}),),
        "power_w": (Source("kepler_node_cpu_watts", "gauge", node, matchers=KEPLER_ZONES),),
        "util_pct": (Source("kepler_node_cpu_usage_ratio", "gauge", {"host": "node_name"},
                            scale=100.0),),
    }
    job = {"energy_j": (Source("kepler_container_cpu_joules_total", "counter", container,
                               matchers=KEPLER_ZONES),)}
    return {"cpu": MeasurementMap(cpu), "job": MeasurementMap(job)}


# vLLM (vllm-project/vllm, docs "Production Metrics"): counters per model_name; the
# pod, namespace and node labels are the ones Prometheus' Kubernetes discovery attaches.
VLLM_JOB = {"job": "pod", "host": "node", "team": "namespace"}
INFER = {"kind": "infer"}


def _vllm() -> Mapping_:
    job = {
        "tokens": (Source("vllm:generation_tokens_total", "counter", VLLM_JOB,
                          constants=INFER),),
        "samples": (Source("vllm:request_success_total", "counter", VLLM_JOB,
                           constants=INFER),),
    }
    return {"job": MeasurementMap(job)}


# Triton Inference Server (triton-inference-server/server, docs/user_guide/metrics.md).
def _triton() -> Mapping_:
    job = {"samples": (Source("nv_inference_count", "counter", VLLM_JOB, constants=INFER),)}
    return {"job": MeasurementMap(job)}


MAPPINGS = {
    "wattlens": _wattlens,
    "dcgm-exporter": _dcgm,
    "dcgm-exporter-slurm": _dcgm_slurm,
    "kepler": _kepler,
    "vllm": _vllm,
    "triton": _triton,
}


def combine(names: str) -> Mapping_:
    """The mappings named in ``names`` (comma separated), merged field by field.

    A field two mappings both provide (e.g. job energy from dcgm-exporter and
    from Kepler) sums their sources: they measure different devices.
    """
    out: dict[str, MeasurementMap] = {}
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    if not chosen:
        raise ConfigError(f"mapping: expected one of {', '.join(MAPPINGS)}, got {names!r}")
    for name in chosen:
        if name not in MAPPINGS:
            raise ConfigError(f"mapping: unknown {name!r}; choose from {', '.join(MAPPINGS)}")
        for measurement, mm in MAPPINGS[name]().items():
            have = out.get(measurement)
            if have is None:
                out[measurement] = mm
                continue
            fields = dict(have.fields)
            for f, sources in mm.fields.items():
                fields[f] = fields.get(f, ()) + sources
            out[measurement] = MeasurementMap(fields)
    return out
