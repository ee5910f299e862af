"""`wattlens alerts` check, export-prometheus-rules, run --once and status, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.store.sqlite import SQLiteStore
from tests.analytics.alerts.helpers import MIN, aligned, gpu_points
from tests.analytics.alerts.receivers import Receiver
from tests.analytics.alerts.test_rules import EXAMPLE
from wattlens.cli import main

ROOT = Path(__file__).resolve().parents[3]
SECRET = "cli-secret-must-not-leak-0xC0FFEE"


def test_check_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts", "check", "--rules", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {EXAMPLE}: 8 rules")


def test_check_reports_every_problem_with_its_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "a"\nkind = "idle_waste"\n\n'
                   '[[rule]]\nname = "b"\nkind = "threshold"\nabove_w = 500\nfor = "soon"\n')
    assert main(["alerts", "check", "--rules", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"wattlens: error: {bad}:1: rule 'a': above_w: is required for kind 'idle_waste'",
        f"wattlens: error: {bad}:9: rule 'b': for: expected a duration like 90s, 15m or "
        f"1h30m, got 'soon'",
    ]


def test_run_needs_rules_and_a_readable_file(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'w.db'}"
    assert main(["alerts", "run", "--once", "--store", store]) == 2
    assert "--rules" in capsys.readouterr().err
    assert main(["alerts", "run", "--once", "--store", store, "--rules",
                 str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_writes_a_file(tmp_path: Path, promtool: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wattlens.rules.yml"
    assert main(["alerts", "export-prometheus-rules", "--rules", str(EXAMPLE),
                 "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "rule 'deferrable-at-carbon-peak' not exported" in err
    proc = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_once_in_a_real_process_signs_with_the_env_secret_and_never_leaks_it(
        tmp_path: Path) -> None:
    now = aligned(time.time_ns())
    store = SQLiteStore(tmp_path / "wattlens.db")
    # `run --once` evaluates at wall time, so the data is made for now: one idle GPU, one busy
    store.write(gpu_points("node-01", "6", now - 5 * MIN, now, power_w=55, util_pct=0))
    store.write(gpu_points("node-01", "0", now - 5 * MIN, now, power_w=310, util_pct=95))
    store.close()
    idle = {"node-01/gpu6"}
    receiver = Receiver(secret=SECRET.encode())
    rules = tmp_path / "alerts.toml"
    rules.write_text(f'''
[[hook]]
name = "ops"
type = "webhook"
url = "{receiver.url}"
secret_env = "OPS_HOOK_SECRET"

[[rule]]
name = "idle"
kind = "idle_waste"
above_w = 40
for = "0s"
window = "2m"
''')
    env = {**os.environ, "OPS_HOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "wattlens", "-v", "alerts", "run", "--once",
            "--rules", str(rules), "--store", f"sqlite:///{tmp_path / 'wattlens.db'}",
            "--state-file", str(tmp_path / "state" / "alerts.json")]
    try:
        first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                               cwd=tmp_path)
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                                cwd=tmp_path)
        status = subprocess.run([sys.executable, "-m", "wattlens", "alerts", "status",
                                 "--state-file", str(tmp_path / "state" / "alerts.json")],
                                env=env, capture_output=True, text=True, timeout=120)
    finally:
        receiver.close()
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    firing = {line.split()[2] for line in first.stdout.splitlines() if line.startswith("firing")}
    assert firing == idle
    # one signed request from the first process; the second, reading the state file, sent none
    assert len(receiver.requests) == 1 and receiver.requests[0].status == 200
    assert {a["target"] for a in receiver.requests[0].json()["alerts"]} == idle
    for proc in (first, second):
        assert SECRET not in proc.stdout + proc.stderr
    assert "idle" in first.stderr  # -v logs the transitions
    assert {line.split()[2] for line in status.stdout.splitlines()
            if line.startswith("firing")} == idle
    assert SECRET not in (tmp_path / "state" / "alerts.json").read_text()
