"""docs/analytics.md's simulated-fleet tables are what the current physics and analytics produce."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from collector.sim.truth import truth
from collector.sources.simulated import SimulatedFleet
from tests.analytics.simstore import END_NS, NS, sim_store

ROOT = Path(__file__).resolve().parents[2]


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_analytics_doc", ROOT / "scripts" / "gen_analytics_doc.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_sections_are_current(tmp_path_factory: pytest.TempPathFactory) -> None:
    gen = _gen()
    day = sim_store(tmp_path_factory, 24)  # the same 24 h, seed 1, 60 s steps the script writes
    assert gen.END_NS == END_NS
    t = truth(SimulatedFleet(), END_NS - 24 * 3600 * NS, END_NS, gen.LAMBDAS)
    blocks = {"frontier": gen.frontier_block(day.url, day.window),
              "recommendations": gen.recs_block(day.url, day.window, t)}
    doc = (ROOT / "docs" / "analytics.md").read_text()
    assert gen.apply(doc, blocks) == doc, "docs/analytics.md is stale: python scripts/gen_analytics_doc.py"
