"""Shared pytest setup. Server fixtures live in tests/fixtures_*.py, one file per server family."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
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


@pytest.fixture(autouse=True)
def _logger_levels_restored() -> Iterator[None]:
    """A test that changes a logger's level must restore it (caplog.set_level does): a level
    left at ERROR silences every later test's log assertions, far from the cause."""
    names = ("", "wattlens")
    before = [logging.getLogger(n).level for n in names]
    yield
    after = [logging.getLogger(n).level for n in names]
    for name, level in zip(names, before, strict=True):
        logging.getLogger(name).setLevel(level)
    assert after == before, f"logger levels {dict(zip(names, after, strict=True))} left changed"
