"""Pod tags (namespace, pod, container) on job points, from the kubelet's device assignments, bounded.

Each round the job tracker knows which PIDs every job has and NVML knows which
device (GPU or MIG UUID) each PID computes on; the kubelet knows which
container holds each device. A job point gets the tags of the containers its
processes' devices belong to. Off Kubernetes, or without the socket, nothing is
tagged and pods keep their cgroup names (``k8s-pod-<uid>``, see
:mod:`collector.attribution`); that is logged once.

Cardinality: at most ``max_pods`` distinct (namespace, pod, container) values
are live at once and at most ``max_namespaces`` namespaces; a value keeps its
slot until unseen for ``forget_s``. Past the limit a new container is tagged
``pod=_other, container=_other`` (its namespace kept while the namespace limit
allows, else ``_other`` too), and values that are not Kubernetes names become
``_invalid``. So a node adds at most ``max_pods`` job series per ``forget_s``
however fast pods churn.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from collector.k8s.podresources import PodRef, PodResourcesClient, PodResourcesError
from collector.logutil import LogOnce
from collector.schema import Point, point

log = logging.getLogger("wattlens.k8s")

OTHER = "_other"
INVALID = "_invalid"
TAGS = ("namespace", "pod", "container")
# DNS-1123 names (namespaces, pods, containers) are lower-case; allow what label values can carry.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def _clean(value: str) -> str:
    return value if _NAME_RE.fullmatch(value) else INVALID


class PodLabels:
    """Device ID -> bounded pod tags, refreshed from the kubelet every ``refresh_s``."""

    def __init__(self, client: PodResourcesClient | None, *, max_pods: int = 256,
                 max_namespaces: int = 64, forget_s: float = 3600.0, refresh_s: float = 10.0) -> None:
        if max_pods < 1 or max_namespaces < 1:
            raise ValueError(f"max_pods/max_namespaces: must be at least 1, got {max_pods}/{max_namespaces}")
        self.client = client
        self.max_pods = max_pods
        self.max_namespaces = max_namespaces
        self.forget_s = forget_s
        self.refresh_s = refresh_s
        self._seen: dict[PodRef, float] = {}  # admitted value -> last time seen
        self._namespaces: dict[str, float] = {}
        self._devices: dict[str, PodRef] = {}
        self._fetched_s: float | None = None
        self._fallback_logged = False
        self._warn = LogOnce(log)

    # --- the bound -------------------------------------------------------------------
    def bound(self, ref: PodRef, now_s: float) -> PodRef:
        """The value to write for ``ref``: itself while within the limits, else an overflow value."""
        for table in (self._seen, self._namespaces):
            for key in [k for k, t in table.items() if now_s - t > self.forget_s]:
                del table[key]  # type: ignore[arg-type]
        ref = PodRef(_clean(ref.namespace), _clean(ref.pod), _clean(ref.container))
        ns = ref.namespace
        if ns not in self._namespaces and len(self._namespaces) >= self.max_namespaces:
            ns = OTHER
        else:
            self._namespaces[ns] = now_s
        if ns == ref.namespace and (ref in self._seen or len(self._seen) < self.max_pods):
            self._seen[ref] = now_s
            return ref
        self._warn.warning("overflow", f"kubernetes: more than {self.max_pods} pods or "
                           f"{self.max_namespaces} namespaces seen within {self.forget_s:g} s; "
                           f"new ones are tagged {OTHER}")
        return replace(ref, namespace=ns, pod=OTHER, container=OTHER)

    # --- the kubelet -----------------------------------------------------------------
    def devices(self, now_s: float) -> dict[str, PodRef]:
        """Device ID -> pod from the kubelet (cached ``refresh_s``); {} when it cannot be asked."""
        if self.client is None:
            return {}
        if self._fetched_s is not None and now_s - self._fetched_s < self.refresh_s:
            return self._devices
        self._fetched_s = now_s
        reason = self.client.absent_reason()
        if reason is not None:
            if not self._fallback_logged:
                self._fallback_logged = True
                log.info("kubernetes: %s; GPU pods are named by their cgroup pod UID "
                         "(k8s-pod-<uid>), without namespace/pod/container tags", reason)
            self._devices = {}
            return self._devices
        try:
            self._devices = self.client.devices()
        except PodResourcesError as exc:
            self._warn.warning("kubelet", f"kubernetes: {exc}; job points carry no pod tags "
                               f"until it answers")
            self._devices = {}
        else:
            self._warn.clear("kubelet", "kubernetes: kubelet PodResources answers again")
        return self._devices

    # --- job points ------------------------------------------------------------------
    def tag(self, points: Sequence[Point], job_pids: Mapping[str, set[int]],
            device_pids: Callable[[], Mapping[str, Sequence[int]]], now_s: float) -> list[Point]:
        """``points`` with pod tags on each ``job`` point whose processes run on a pod's device.

        A job whose processes are in one container gets all three tags; in several
        containers of one pod, namespace and pod; across pods of one namespace,
        the namespace only.
        """
        devices = self.devices(now_s)
        if not devices:
            return list(points)
        pid_ref: dict[int, PodRef] = {}
        for device, pids in device_pids().items():
            ref = devices.get(device)
            if ref is not None:
                for pid in pids:
                    pid_ref[pid] = ref
        out: list[Point] = []
        for p in points:
            job = p.tag("job") if p.measurement == "job" else None
            refs = {pid_ref[pid] for pid in job_pids.get(job, ()) if pid in pid_ref} if job else set()
            out.append(self._with_tags(p, refs, now_s) if refs else p)
        return out

    def _with_tags(self, p: Point, refs: set[PodRef], now_s: float) -> Point:
        bounded = {self.bound(r, now_s) for r in sorted(refs)}
        tags = p.tag_map
        for i, name in enumerate(TAGS):
            values = {astuple[i] for astuple in ((r.namespace, r.pod, r.container) for r in bounded)}
            if len(values) != 1:
                break  # spans several: leave this and the finer tags off
            tags[name] = values.pop()
        return point(p.measurement, tags, p.field_map, p.time_ns)
