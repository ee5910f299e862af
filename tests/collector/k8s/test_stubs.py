"""The committed PodResources stubs are what scripts/gen_podresources.py makes from the vendored proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("gen_podresources", ROOT / "scripts" / "gen_podresources.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(tmp_path) == 0
    for name in ("podresources_v1_pb2.py", "podresources_v1_pb2.pyi", "podresources_v1_pb2_grpc.py"):
        fresh = (tmp_path / name).read_text()
        committed = (ROOT / "collector" / "k8s" / name).read_text()
        assert fresh == committed, f"{name} is stale: run python scripts/gen_podresources.py"
