"""The jobs API's default `workload` tag: the job name without its run suffix."""

from __future__ import annotations

import pytest

from wattlens.jobs import default_workload


@pytest.mark.parametrize(("name", "workload"), [
    ("bert-ft-1128-0100", "bert-ft"),
    ("resnet50-run-42", "resnet50-run"),
    ("resnet50", "resnet50"),
    ("my-node-classifier", "my-node-classifier"),  # never split on "-node"
    ("llama-7b-ft-3", "llama-7b-ft"),
    ("sweep_lr.0.001", "sweep_lr"),
    ("42", "42"),
])
def test_default_workload(name: str, workload: str) -> None:
    assert default_workload(name) == workload
