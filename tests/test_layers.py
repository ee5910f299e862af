"""The layers of DESIGN.md §1 hold (import-linter, .importlinter): run with the tests, so CI runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_layers_and_store_reads_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Dependencies run one way: wattlens -> dashboard -> analytics -> collector KEPT" \
        in out.stdout
    assert "Only analytics.queries reads a store" in out.stdout
    assert "Contracts: 2 kept, 0 broken." in out.stdout


def test_the_check_fails_on_a_dashboard_that_opens_a_store(tmp_path: Path) -> None:
    """The same contracts over a copy where a dashboard module imports the SQLite store."""
    for pkg in ("wattlens", "dashboard", "analytics", "collector"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "collector" / "store").mkdir()
    (tmp_path / "collector" / "store" / "__init__.py").write_text("")
    for name in ("sqlite", "base", "cache"):
        (tmp_path / "collector" / "store" / f"{name}.py").write_text("")
    # What the real tree does and the contracts allow: the Store type, and queries' cache.
    (tmp_path / "dashboard" / "app.py").write_text("from collector.store import base\n")
    (tmp_path / "analytics" / "report.py").write_text("from collector.store import base\n")
    (tmp_path / "analytics" / "queries.py").write_text("from collector.store import cache\n")
    (tmp_path / "dashboard" / "views.py").write_text("from collector.store import sqlite\n")
    (tmp_path / "collector" / "agent.py").write_text("import analytics\n")
    out = subprocess.run([str(Path(sys.executable).with_name("lint-imports")),
                          str(ROOT / ".importlinter")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Contracts: 0 kept, 2 broken." in out.stdout
    assert "dashboard.views -> collector.store.sqlite" in out.stdout
    assert "collector.agent -> analytics" in out.stdout
