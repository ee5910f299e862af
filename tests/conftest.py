"""Shared pytest setup. Server fixtures live in tests/fixtures_*.py, one file per server family."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures_common",
]
