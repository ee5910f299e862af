"""A database file deleted or replaced under a running agent: noticed, logged with the path, nothing lost."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from collector.schema import point
from collector.store import AggregateQuery
from collector.store.sqlite import SQLiteStore
from tests.servers import wait_until

NS = 1_000_000_000
INTERVAL_S = 0.2


def _rows(db: Path) -> int:
    """Rows in every raw table of the file at ``db`` (a reader's snapshot, the WAL included)."""
    conn = sqlite3.connect(db, timeout=0)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'raw:%'")]
        return sum(conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names)
    finally:
        conn.close()


def _pause_between_writes(agent: subprocess.Popen[str], db: Path) -> None:
    """Stop the agent at a moment it holds no write transaction (so no write is half done)."""
    while True:
        os.kill(agent.pid, signal.SIGSTOP)
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # the agent was mid-write: let it finish
            os.kill(agent.pid, signal.SIGCONT)
            time.sleep(0.02)
        finally:
            conn.close()


def test_deleting_the_file_under_a_running_agent_loses_nothing_after_it(tmp_path: Path) -> None:
    """Every point the agent reports written is in the old file (until it was deleted) or the new."""
    db = tmp_path / "agent.db"
    agent = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--store",
         f"sqlite:///{db}", "--interval", str(INTERVAL_S), "--duration", "6", "--nodes", "1",
         "--gpus", "2", "--prometheus-port", "0", "--spool-dir", str(tmp_path / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: db.exists() and SQLiteStore(db).count("gpu") >= 10, timeout_s=60,
                   what="the agent writing its first rounds")
        reader = SQLiteStore(db)  # the dashboard's side of the file
        _pause_between_writes(agent, db)
        in_old_file = _rows(db)
        os.remove(db)  # `rm agent.db`: the WAL and shared-memory files stay behind
        os.kill(agent.pid, signal.SIGCONT)
        _out, err = agent.communicate(timeout=90)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert f"SQLite store {db} was deleted while open; recreating it" in err
    written = re.search(r"stopped: \d+ rounds, (\d+) points written, 0 spooled; lost: 0 in the "
                        r"write queue \(agent_dropped_points\), 0 to a full spool", err)
    assert written is not None, err
    in_new_file = _rows(db)
    assert in_new_file > 0
    assert in_old_file + in_new_file == int(written.group(1))  # nothing lost silently
    # The reader notices the new file on its next round too, and reads the same numbers.
    after = SQLiteStore(db)
    span = after.time_range("gpu")
    assert span is not None
    reader.check_file(force=True)
    q = AggregateQuery("gpu", (("count", "power_w"), ("sum", "energy_j")), span[0], span[1] + 1)
    assert reader.query(q) == after.query(q)
    assert reader.reopened == 1


def test_a_replaced_file_is_reopened_and_the_old_journal_is_not_replayed(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    store = SQLiteStore(db)
    t0 = 1_795_000_000 * NS
    store.write([point("gpu", {"gpu": "0"}, {"energy_j": 1.0}, t0)])
    other = SQLiteStore(tmp_path / "other.db")
    other.write([point("gpu", {"gpu": "9"}, {"energy_j": 5.0}, t0)])
    other.close()
    os.replace(tmp_path / "other.db", db)  # someone restores another database over it
    store.write([point("gpu", {"gpu": "0"}, {"energy_j": 2.0}, t0 + NS)])
    assert store.reopened == 1
    rows = store.query(AggregateQuery("gpu", (("sum", "energy_j"),), t0, t0 + 2 * NS,
                                      group_by=("gpu",)))
    assert {r.tags["gpu"]: r.values["sum_energy_j"] for r in rows} == {"0": 2.0, "9": 5.0}
