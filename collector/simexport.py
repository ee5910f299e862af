"""The simulated fleet in other exporters' own formats: dcgm-exporter, Kepler (>= 0.10) and vLLM.

``wattlens simulate serve --as FORMAT`` serves this on /metrics so the
``prometheus://`` store and its mappings can be tested and shown without GPUs.
Names, label sets, units and counter semantics follow each exporter (sources
in docs/prometheus.md). Counters start at zero when the server starts, as a
device counter does after a driver reload; the numbers come from the same
simulated physics as every other simulated point (collector/sources/simulated.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from collector.schema import Point
from collector.sources.simulated import SIM_TICK_S, JobSpec, SimulatedFleet, job_id

NS = 1_000_000_000
FORMATS = ("dcgm-exporter", "kepler", "vllm")
DRIVER = "550.54.15"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: its TYPE, HELP and the value of each label set."""

    kind: str  # counter | gauge
    help: str
    values: dict[Labels, float] = field(default_factory=dict)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: dict[str, Family]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for name, fam in families.items():
        lines.append(f"# HELP {name} {fam.help}")
        lines.append(f"# TYPE {name} {fam.kind}")
        for labels, value in fam.values.items():
            body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{body}}} {value!r}")
    return "\n".join(lines) + "\n"


class SimExporter:
    """Keeps the exporter's counters and gauges; ``advance`` moves them to a new time."""

    def __init__(self, fleet: SimulatedFleet, fmt: str, *, mig: int = 0, hpc_jobs: bool = False,
                 start_ns: int | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"--as: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        if mig < 0 or mig > 7:
            raise ValueError(f"--mig: expected 0 to 7 instances per GPU, got {mig!r}")
        self.fleet = fleet
        self.fmt = fmt
        self.mig = mig
        self.hpc_jobs = hpc_jobs
        self._lock = threading.Lock()
        self._last_ns = start_ns if start_ns is not None else time.time_ns()
        self._gpu_mj: dict[tuple[str, str], float] = {}
        self._families: dict[str, Family] = {}
        self._counters: dict[tuple[str, Labels], float] = {}

    @property
    def last_ns(self) -> int:
        """The time the counters were last advanced to (the last scrape)."""
        return self._last_ns

    def metrics(self, now_ns: int | None = None) -> str:
        """The exposition at ``now_ns`` (default: now), after advancing the counters to it."""
        with self._lock:
            self.advance(now_ns if now_ns is not None else time.time_ns())
            return render(self._families)

    def advance(self, now_ns: int) -> None:
        if now_ns <= self._last_ns:
            return
        start_ns, self._last_ns = self._last_ns, now_ns
        points = self.fleet.points_between(start_ns, now_ns)
        self._families = {}
        if self.fmt == "dcgm-exporter":
            self._dcgm(points, now_ns)
        elif self.fmt == "kepler":
            self._kepler(points, (now_ns - start_ns) / NS)
        else:
            self._vllm(points)

    # --- helpers ---------------------------------------------------------------------
    def _gauge(self, name: str, help_text: str, labels: Labels, value: float) -> None:
        self._families.setdefault(name, Family("gauge", help_text)).values[labels] = value

    def _count(self, name: str, help_text: str, labels: Labels, inc: float) -> None:
        total = self._counters.get((name, labels), 0.0) + inc
        self._counters[(name, labels)] = total
        self._families.setdefault(name, Family("counter", help_text)).values[labels] = total

    def _job_at(self, host: str, gpu: int, now_ns: int) -> tuple[str, JobSpec] | None:
        """The job (id and spec) holding a GPU during the simulation tick that ends the interval."""
        tick = (now_ns - 1) // (SIM_TICK_S * NS)
        for grp in self.fleet.groups:
            if grp.host == host and gpu in grp.gpu_indices:
                state = self.fleet.gpu_state(grp, gpu, tick)
                if state.job is None:
                    return None
                run, k = state.job
                return job_id(run, k), run.job
        return None

    def _workloads(self) -> dict[str, str]:
        """Job spec name -> workload, for labels such as vLLM's model_name."""
        return {run.job.name: run.job.workload or run.job.name
                for grp in self.fleet.groups for run in grp.runs}

    # --- dcgm-exporter ---------------------------------------------------------------
    def _dcgm(self, points: list[Point], now_ns: int) -> None:
        for p in points:
            if p.measurement != "gpu":
                continue
            t, f = p.tag_map, p.field_map
            host, gpu = t["host"], t["gpu"]
            key = (host, gpu)
            self._gpu_mj[key] = self._gpu_mj.get(key, 0.0) + float(f["energy_j"]) * 1000.0
            base: list[tuple[str, str]] = [
                ("gpu", gpu), ("UUID", t["uuid"]), ("pci_bus_id", f"00000000:{0x18 + int(gpu):02X}:00.0"),
                ("device", f"nvidia{gpu}"), ("modelName", t["model"]), ("Hostname", host),
                ("DCGM_FI_DRIVER_VERSION", DRIVER)]
            held = self._job_at(host, int(gpu), now_ns)
            instances = [[]] if not self.mig else [
                [("GPU_I_PROFILE", f"{7 // self.mig}g.{80 // self.mig}gb"), ("GPU_I_ID", str(i))]
                for i in range(self.mig)]
            for extra in instances:
                labels = [*base, *extra]
                if held is not None and self.hpc_jobs:
                    labels.append(("hpc_job", held[0]))
                elif held is not None:
                    labels += [("container", held[1].name), ("namespace", held[1].kind),
                               ("pod", held[0])]
                lt = tuple(labels)
                self._families.setdefault("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Family(
                    "counter", "Total energy consumption since boot (in mJ).")).values[lt] = round(
                        self._gpu_mj[key])
                self._gauge("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lt,
                            float(f["power_w"]))
                self._gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lt,
                            round(float(f["util_pct"])))
                self._gauge("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lt,
                            float(f["sm_clock_mhz"]))
                self._gauge("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", lt,
                            float(f["mem_clock_mhz"]))
                self._gauge("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lt,
                            round(float(f["temp_c"])))
                self._gauge("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Power management limit (in W).", lt,
                            float(f["power_limit_w"]))

    # --- Kepler >= 0.10 --------------------------------------------------------------
    def _kepler(self, points: list[Point], dt_s: float) -> None:
        zones = {"package-0": ("package", "/sys/class/powercap/intel-rapl:0"),
                 "package-1": ("package", "/sys/class/powercap/intel-rapl:1"),
                 "dram": ("dram", "/sys/class/powercap/intel-rapl:0:2")}
        pkg_j: dict[str, float] = {}
        for p in points:
            if p.measurement != "cpu":
                continue
            t, f = p.tag_map, p.field_map
            zone, path = zones[t["domain"]]
            labels: Labels = (("node_name", t["host"]), ("path", path), ("zone", zone))
            self._count("kepler_node_cpu_joules_total",
                        "Energy consumption of cpu at node level in joules", labels,
                        float(f["energy_j"]))
            self._gauge("kepler_node_cpu_watts", "Power consumption of cpu at node level in watts",
                        labels, float(f["power_w"]))
            self._gauge("kepler_node_cpu_usage_ratio", "CPU usage ratio of a node (0-1)",
                        (("node_name", t["host"]),), float(f["util_pct"]) / 100)
            if zone == "package":
                pkg_j[t["host"]] = pkg_j.get(t["host"], 0.0) + float(f["energy_j"])
        # Containers: the node's package energy shared by GPU-seconds (the simulator has no
        # per-process CPU time; Kepler itself shares by CPU time).
        share: dict[str, list[tuple[str, float]]] = {}
        for p in points:
            if p.measurement == "job":
                f = p.field_map
                gpu_s = float(f["active_s"]) * float(f["gpus"])
                share.setdefault(p.tag("host") or "", []).append((p.tag("job") or "", gpu_s))
        for host, jobs in share.items():
            total_s = max(sum(s for _, s in jobs), self.fleet.gpus_per_node * dt_s)
            for job, gpu_s in jobs:
                labels = (("container_id", f"{abs(hash(job)) % 16**12:012x}"),
                          ("container_name", job), ("node_name", host), ("pod_id", ""),
                          ("runtime", "containerd"), ("state", "running"), ("zone", "package"))
                self._count("kepler_container_cpu_joules_total",
                            "Energy consumption of cpu at container level in joules", labels,
                            pkg_j.get(host, 0.0) * gpu_s / total_s)

    # --- vLLM ------------------------------------------------------------------------
    def _vllm(self, points: list[Point]) -> None:
        workloads = self._workloads()
        for p in points:
            if p.measurement != "job" or p.tag("kind") != "infer":
                continue
            f = p.field_map
            job = p.tag("job") or ""
            # A job id is its spec's name, plus "-MMDD-HHMM" for a run (simulated.job_id).
            spec = max((n for n in workloads if job == n or job.startswith(n + "-")), key=len,
                       default=job)
            labels = (("engine", "0"), ("model_name", workloads.get(spec, spec)),
                      ("namespace", "infer"), ("node", p.tag("host") or ""), ("pod", job))
            self._count("vllm:generation_tokens_total", "Number of generation tokens processed.",
                        labels, float(f["tokens"]))
            self._count("vllm:request_success_total", "Count of successfully processed requests.",
                        (*labels[:2], ("finished_reason", "stop"), *labels[2:]),
                        float(f["samples"]))
            self._gauge("vllm:num_requests_running", "Number of requests in model execution "
                        "batches.", labels, float(f["batch_size"]))
