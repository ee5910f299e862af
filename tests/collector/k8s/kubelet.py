"""A real gRPC server speaking the kubelet's PodResources v1 API on a Unix socket, for tests."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from collector.k8s import podresources_v1_pb2 as pb
from collector.k8s import podresources_v1_pb2_grpc as rpc

Container = tuple[str, dict[str, list[str]]]  # name, resource -> device IDs


class _Lister(rpc.PodResourcesListerServicer):
    def __init__(self, owner: FakeKubelet) -> None:
        self.owner = owner

    def List(self, request: Any, context: Any) -> Any:  # the API's name
        self.owner.calls += 1
        if self.owner.error is not None:
            context.abort(self.owner.error, "pod resources unavailable (test)")
        if self.owner.delay_s:
            self.owner.release.wait(self.owner.delay_s)
        return self.owner.response()


class FakeKubelet:
    """The kubelet's PodResourcesLister: ``pods`` maps (namespace, pod) to its containers.

    ``error`` makes List fail with that status; ``delay_s`` makes it answer late.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.pods: dict[tuple[str, str], list[Container]] = {}
        self.error: grpc.StatusCode | None = None
        self.delay_s = 0.0
        self.release = threading.Event()
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        rpc.add_PodResourcesListerServicer_to_server(_Lister(self), self.server)
        self.server.add_insecure_port(f"unix://{socket_path}")

    def response(self) -> Any:
        return pb.ListPodResourcesResponse(pod_resources=[
            pb.PodResources(namespace=ns, name=name, containers=[
                pb.ContainerResources(name=cname, devices=[
                    pb.ContainerDevices(resource_name=res, device_ids=ids)
                    for res, ids in devices.items()])
                for cname, devices in containers])
            for (ns, name), containers in self.pods.items()])

    def __enter__(self) -> FakeKubelet:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.stop(grace=None).wait(5)
