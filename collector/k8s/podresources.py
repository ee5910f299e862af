"""A client of the kubelet's PodResources v1 API (gRPC on its Unix socket): GPU and MIG device IDs -> pod.

The kubelet serves ``List`` on ``/var/lib/kubelet/pod-resources/kubelet.sock``:
every pod on the node, its containers, and the device IDs each container was
given per extended resource. The NVIDIA device plugin names a whole GPU by its
UUID (``nvidia.com/gpu``) and a MIG instance by its ``MIG-`` UUID
(``nvidia.com/mig-<profile>``), the IDs NVML reports, so this maps a device to
the (namespace, pod, container) that holds it, as dcgm-exporter does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a node with many pods answers more than gRPC's 4 MiB default


class PodResourcesError(Exception):
    """The kubelet could not be asked (socket missing, refused, slow, or an error answer)."""


@dataclass(frozen=True, slots=True, order=True)
class PodRef:
    """The container a device is assigned to."""

    namespace: str
    pod: str
    container: str


def is_gpu_resource(name: str) -> bool:
    """Whether an extended resource name is an NVIDIA GPU or MIG instance."""
    return name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


def devices_of(response: Any) -> dict[str, PodRef]:
    """Device ID -> pod from a ``ListPodResourcesResponse``, GPU and MIG resources only."""
    out: dict[str, PodRef] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for dev in container.devices:
                if not is_gpu_resource(dev.resource_name):
                    continue
                for device_id in dev.device_ids:
                    out[device_id] = PodRef(pod.namespace, pod.name, container.name)
    return out


class PodResourcesClient:
    """Asks the kubelet which pod holds each GPU; one ``List`` call per :meth:`devices`.

    Needs grpcio and protobuf (``pip install 'wattlens[k8s]'``); they are
    imported on first use, so the agent runs without them off Kubernetes.
    """

    def __init__(self, socket_path: str = DEFAULT_SOCKET, *, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._channel: Any = None
        self._stub: Any = None

    def absent_reason(self) -> str | None:
        """Why the API cannot be used here (no socket, no grpcio), or None when it can be tried."""
        if not os.path.exists(self.socket_path):
            return f"no kubelet PodResources socket at {self.socket_path}"
        try:
            import grpc  # noqa: F401
        except ImportError:
            return "grpcio is not installed: pip install 'wattlens[k8s]'"
        return None

    def _connect(self) -> Any:
        if self._stub is None:
            import grpc

            from collector.k8s import podresources_v1_pb2_grpc as rpc

            self._channel = grpc.insecure_channel(
                f"unix://{os.path.abspath(self.socket_path)}",
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
            self._stub = rpc.PodResourcesListerStub(self._channel)
        return self._stub

    def devices(self) -> dict[str, PodRef]:
        """Device ID (GPU UUID, MIG UUID) -> the pod's namespace, name and container.

        Raises :class:`PodResourcesError` with the reason when the kubelet does not answer.
        """
        reason = self.absent_reason()
        if reason is not None:
            raise PodResourcesError(reason)
        import grpc

        from collector.k8s import podresources_v1_pb2 as pb

        stub = self._connect()
        try:
            response = stub.List(pb.ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = getattr(code, "name", "UNKNOWN")
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PodResourcesError(f"kubelet PodResources List did not answer within "
                                        f"{self.timeout_s:g} s ({self.socket_path})") from exc
            hint = (": the socket is root's, run the agent as root (docs/kubernetes.md)"
                    if "ermission denied" in str(detail) else "")
            raise PodResourcesError(f"kubelet PodResources List failed: {name}: {detail} "
                                    f"({self.socket_path}){hint}") from exc
        return devices_of(response)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None
