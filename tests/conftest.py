"""Shared pytest setup. Server fixtures live in tests/fixtures_*.py, one file per server family."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Fuzzing budgets: "ci" keeps the suite quick; `bash scripts/fuzz.sh` runs "long".
settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("WATTLENS_FUZZ_PROFILE", "ci"))

pytest_plugins = [
    "tests.fixtures_common",
    "tests.fixtures_influx",
    "tests.fixtures_prometheus",
    "tests.fixtures_alertmanager",
]
