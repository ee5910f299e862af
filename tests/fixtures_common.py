"""Fixtures every test area may use: a SQLite store URL in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wattlens.db'}"
