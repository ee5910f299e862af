"""A database file deleted or replaced under a running agent: noticed, logged with the path, nothing lost."""

from __future__ import annotations

import itertools
import os
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


def _gpu_times(store: SQLiteStore) -> list[int]:
    conn = store._conn()
    return [int(r[0]) for r in conn.execute('SELECT DISTINCT time_ns FROM "raw:gpu" ORDER BY 1')]


def test_deleting_the_file_under_a_running_agent_loses_nothing_after_it(tmp_path: Path) -> None:
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
        before = reader.count("gpu")
        assert before >= 10
        deleted_ns = time.time_ns()
        os.remove(db)  # `rm agent.db`: the WAL and shared-memory files stay behind
        _out, err = agent.communicate(timeout=90)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert f"SQLite store {db} was deleted while open; recreating it" in err
    after = SQLiteStore(db)
    times = _gpu_times(after)
    assert times, "the agent wrote nothing after the file was deleted"
    # Every round after the deletion is in the new file: the first within a round or two of it,
    # then no gap, and both GPUs at each time.
    assert times[0] <= deleted_ns + int(3 * INTERVAL_S * NS)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < int(2.5 * INTERVAL_S * NS), gaps
    assert after.count("gpu") == 2 * len(times)
    # The reader notices the new file on its next round too, and reads the same numbers.
    reader.check_file(force=True)
    q = AggregateQuery("gpu", (("count", "power_w"), ("sum", "energy_j")), times[0],
                       times[-1] + 1)
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
