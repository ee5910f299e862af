"""A shortened soak: 1,000 simulated GPUs at 1 Hz through the agent into InfluxDB, with Prometheus."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.slow
def test_short_soak_stores_every_sampled_point_without_errors(tmp_path: Path) -> None:
    soak = load_soak()
    result = soak.run_soak(1000, 40.0, workdir=tmp_path, progress=False)
    print(soak.to_markdown(result))  # the numbers land in the CI log
    assert result.ok, result.failures
    assert result.rounds >= 30
    assert result.gpu_points_stored == 1000 * result.rounds
    assert result.prometheus_gpu_series == 1000
    assert result.dashboard_polls >= 3
