"""The PodResources client against a real gRPC server on a Unix socket: devices, absence, errors, slowness."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from collector.k8s.podresources import PodRef, PodResourcesClient, PodResourcesError
from collector.k8s.pods import PodLabels
from collector.schema import point
from tests.collector.k8s.kubelet import FakeKubelet


def _cluster(kubelet: FakeKubelet) -> None:
    kubelet.pods = {
        ("research", "llm-0"): [("trainer", {"nvidia.com/gpu": ["GPU-0", "GPU-1"]}),
                                ("sidecar", {})],
        ("prod", "serve-1"): [("vllm", {"nvidia.com/mig-3g.40gb": ["MIG-a"],
                                        "example.com/fpga": ["fpga-0"]})],
        ("prod", "web"): [("nginx", {})],
    }


@pytest.fixture
def kubelet(tmp_path: Path) -> FakeKubelet:
    with FakeKubelet(tmp_path / "kubelet.sock") as server:
        yield server  # type: ignore[misc]


def test_list_maps_gpu_and_mig_devices_to_their_containers(kubelet: FakeKubelet) -> None:
    _cluster(kubelet)
    client = PodResourcesClient(str(kubelet.socket_path))
    assert client.absent_reason() is None
    assert client.devices() == {
        "GPU-0": PodRef("research", "llm-0", "trainer"),
        "GPU-1": PodRef("research", "llm-0", "trainer"),
        "MIG-a": PodRef("prod", "serve-1", "vllm"),
    }  # fpga-0 is not a GPU resource; pods without devices map nothing
    client.close()


def test_absent_socket_is_named_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = PodResourcesClient(str(tmp_path / "nope.sock"))
    assert client.absent_reason() == f"no kubelet PodResources socket at {tmp_path / 'nope.sock'}"
    with pytest.raises(PodResourcesError, match="no kubelet PodResources socket"):
        client.devices()
    labels = PodLabels(client, refresh_s=0.0)
    job = point("job", {"job": "k8s-pod-1", "host": "h"}, {"energy_j": 1.0}, 1)
    with caplog.at_level(logging.INFO, logger="wattlens.k8s"):
        for now in (1.0, 2.0, 3.0):
            assert labels.tag([job], {"k8s-pod-1": {7}}, lambda: {"GPU-0": [7]}, now) == [job]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "cgroup pod UID (k8s-pod-<uid>)" in lines[0]


@pytest.mark.parametrize("status", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED])
def test_a_failing_kubelet_is_reported_with_its_status(kubelet: FakeKubelet, status: grpc.StatusCode,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    _cluster(kubelet)
    kubelet.error = status
    client = PodResourcesClient(str(kubelet.socket_path))
    with pytest.raises(PodResourcesError, match=f"List failed: {status.name}"):
        client.devices()
    labels = PodLabels(client, refresh_s=0.0)
    job = point("job", {"job": "j", "host": "h"}, {"energy_j": 1.0}, 1)
    with caplog.at_level(logging.WARNING, logger="wattlens.k8s"):
        assert labels.tag([job], {"j": {7}}, lambda: {"GPU-0": [7]}, 1.0) == [job]
        assert labels.tag([job], {"j": {7}}, lambda: {"GPU-0": [7]}, 2.0) == [job]
    assert len(caplog.records) == 1  # warned once, not every round
    kubelet.error = None  # the kubelet answers again: tags come back
    tagged = labels.tag([job], {"j": {7}}, lambda: {"GPU-0": [7]}, 3.0)[0]
    assert (tagged.tag("namespace"), tagged.tag("pod"), tagged.tag("container")) == \
        ("research", "llm-0", "trainer")


def test_a_slow_kubelet_times_out(kubelet: FakeKubelet) -> None:
    _cluster(kubelet)
    kubelet.delay_s = 10.0
    client = PodResourcesClient(str(kubelet.socket_path), timeout_s=0.2)
    with pytest.raises(PodResourcesError, match=r"did not answer within 0.2 s"):
        client.devices()
    kubelet.release.set()
    client.close()


def test_unknown_devices_on_either_side_tag_nothing(kubelet: FakeKubelet) -> None:
    kubelet.pods = {("ns", "p"): [("c", {"nvidia.com/gpu": ["GPU-not-on-this-node"]})]}
    labels = PodLabels(PodResourcesClient(str(kubelet.socket_path)))
    job = point("job", {"job": "j", "host": "h"}, {"energy_j": 1.0}, 1)
    # NVML's GPU-0 is no pod's; the pod's device is not one NVML sees
    assert labels.tag([job], {"j": {7}}, lambda: {"GPU-0": [7]}, 1.0) == [job]
