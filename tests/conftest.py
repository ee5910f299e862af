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

# Keep every default path (store, spool, audit log) of the code under test, and of the
# CLI subprocesses it starts, inside a temp dir: a test run never touches ~/.local.
if "WATTLENS_TEST_HOME" not in os.environ:
    import tempfile

    _home = tempfile.mkdtemp(prefix="wattlens-test-home-")
    os.environ["WATTLENS_TEST_HOME"] = _home
    os.environ["XDG_DATA_HOME"] = os.path.join(_home, "data")
    os.environ["XDG_STATE_HOME"] = os.path.join(_home, "state")

pytest_plugins = [
    "tests.fixtures_common",
    "tests.fixtures_influx",
    "tests.fixtures_prometheus",
    "tests.fixtures_alertmanager",
]
