"""The layers of DESIGN.md §1 hold (import-linter, .importlinter, plus a check of the calls import
rules cannot see): run with the tests, so CI runs it."""

from __future__ import annotations

import ast
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
    assert "The dashboard reads data only through analytics" in out.stdout
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def test_the_check_fails_on_a_dashboard_that_opens_a_store(tmp_path: Path) -> None:
    """The same contracts over a copy where a dashboard module imports the SQLite store."""
    for pkg in ("wattlens", "dashboard", "analytics", "collector"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "collector" / "store").mkdir()
    (tmp_path / "collector" / "store" / "__init__.py").write_text("")
    for name in ("sqlite", "base", "cache"):
        (tmp_path / "collector" / "store" / f"{name}.py").write_text("")
    for name in ("sources", "sim"):
        (tmp_path / "collector" / name).mkdir()
        (tmp_path / "collector" / name / "__init__.py").write_text("")
    for name in ("schema", "spool", "lineprotocol", "agent", "ingest"):
        (tmp_path / "collector" / f"{name}.py").write_text("")
    (tmp_path / "analytics" / "queries").mkdir()
    (tmp_path / "analytics" / "queries" / "__init__.py").write_text("")
    # What the real tree does and the contracts allow: the Store type, and queries' cache.
    (tmp_path / "dashboard" / "app.py").write_text("from collector.store import base\n")
    (tmp_path / "analytics" / "report.py").write_text("from collector.store import base\n")
    (tmp_path / "analytics" / "queries" / "fleet.py").write_text("from collector.store import cache\n")
    (tmp_path / "dashboard" / "views.py").write_text("from collector.store import sqlite\n")
    (tmp_path / "collector" / "agent.py").write_text("import analytics\n")
    out = subprocess.run([str(Path(sys.executable).with_name("lint-imports")),
                          str(ROOT / ".importlinter")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Contracts: 0 kept, 3 broken." in out.stdout
    assert "dashboard.views -> collector.store.sqlite" in out.stdout
    assert "collector.agent -> analytics" in out.stdout


# What import rules cannot see: a module that was handed a Store and calls it. Reads
# (query, time_range, tag_values) belong to analytics/queries/, writes to analytics/alerts/record.py.
READS = ("query", "time_range", "tag_values")


def store_calls(source: str) -> list[tuple[int, str]]:
    """(line, method) of each call ``<x>.store.M(..)`` or ``store.M(..)`` reading or writing a store."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        recv = node.func.value
        name = recv.id if isinstance(recv, ast.Name) else recv.attr if isinstance(
            recv, ast.Attribute) else ""
        if "store" in name.lower() and node.func.attr in (*READS, "write"):
            found.append((node.lineno, node.func.attr))
    return found


def test_only_queries_read_a_store_and_only_alerts_record_writes() -> None:
    bad = []
    for path in sorted([*(ROOT / "analytics").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        for line, method in store_calls(path.read_text()):
            allowed = (rel.startswith("analytics/queries/") if method in READS
                       else rel == "analytics/alerts/record.py")
            if not allowed:
                bad.append(f"{rel}:{line} calls store.{method}")
    assert not bad, "\n".join(bad)


def test_the_call_check_sees_reads_and_writes() -> None:
    src = ("def f(store, self):\n    store.time_range('gpu')\n    self.store.write([])\n"
           "    fh.write(b'')\n    cache_store.query(q)\n")
    assert store_calls(src) == [(2, "time_range"), (3, "write"), (5, "query")]
