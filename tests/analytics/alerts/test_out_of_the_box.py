"""Alerts for a newcomer, as a subprocess: the shipped rules need no secret, take FILE, judge `for` on history."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from analytics.alerts.rules import DEFAULT_RULES, load_rules
from collector.store.sqlite import SQLiteStore
from tests.analytics.alerts.helpers import IDLE_GPUS, MIN, aligned, trailing_idle_s, write_fleet

ROOT = Path(__file__).resolve().parents[3]
LOCAL = ROOT / "examples" / "alerts-local.toml"


def wattlens(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # a clean environment: no secret of any hook is set, the state goes to tmp_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "wattlens", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _run_once_over(tmp_path: Path, history_ns: int) -> tuple[
        subprocess.CompletedProcess[str], list[list[str]], dict[str, str], dict[str, float]]:
    """The simulated fleet's last ``history_ns`` stored, then `alerts run --once` over it: the
    run, its status rows, the idle-gpu-waste state per target, and each GPU's idle run in the data."""
    now = aligned(time.time_ns())
    store = SQLiteStore(tmp_path / "w.db")
    write_fleet(store, now - history_ns, now)
    idle_for = trailing_idle_s(store, now - history_ns, now)
    store.close()
    run = wattlens("alerts", "run", "--once", "examples/alerts-local.toml",
                   "--store", f"sqlite:///{tmp_path / 'w.db'}", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()[1:]]
    return run, rows, {r[2]: r[0] for r in rows if r[1] == "idle-gpu-waste"}, idle_for


def test_the_local_example_is_the_packaged_default_and_takes_a_positional_file(tmp_path: Path) -> None:
    assert LOCAL.resolve() == DEFAULT_RULES.resolve()  # one file: what the demo runs is what ships
    positional = wattlens("alerts", "check", "examples/alerts-local.toml", tmp_path=tmp_path)
    flag = wattlens("alerts", "check", "--rules", "examples/alerts-local.toml", tmp_path=tmp_path)
    assert positional.returncode == 0 and flag.returncode == 0, positional.stderr + flag.stderr
    assert positional.stdout == flag.stdout
    assert positional.stdout.startswith("ok: examples/alerts-local.toml: 5 rules")
    assert positional.stderr == ""  # no "environment variable ... is not set" note: no secret needed
    # the full example still checks positionally; its hooks need secrets, and it says which
    full = wattlens("alerts", "check", "examples/alerts.toml", tmp_path=tmp_path)
    assert full.returncode == 0 and "8 rules" in full.stdout
    assert "WATTLENS_WEBHOOK_SECRET is not set" in full.stderr
    missing = wattlens("alerts", "run", "--once", tmp_path=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("wattlens: error: FILE: a rule file is needed")


def test_run_once_on_a_fresh_install_fires_the_idle_gpus_at_the_first_evaluation(tmp_path: Path) -> None:
    # an hour of the simulated fleet ending now: node-01's spare A100s idle all along
    run, rows, idle, idle_for = _run_once_over(tmp_path, 60 * MIN)
    firing = {t for t, state in idle.items() if state == "firing"}
    assert IDLE_GPUS <= firing  # idle for the whole hour: fires at the first evaluation
    # Any other GPU fires only if the data show it idle for the rule's 15 minutes too (one
    # between runs of the simulated schedule, depending on the time of day); none beyond.
    # (The engine judges means over the rule's window buckets: 5 minutes of slack either side.)
    assert {t for t, s in idle_for.items() if s >= 20 * 60} <= firing
    assert firing <= {t for t, s in idle_for.items() if s >= 10 * 60}
    # the file hook got the same alerts, as webhook payloads (version 1), one JSON line each
    out = tmp_path / "state" / "wattlens" / "alerts-local.jsonl"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    sent = [a for line in out.read_text().splitlines() for a in json.loads(line)["alerts"]]
    firing = {(r[1], r[2]) for r in rows if r[0] == "firing"}
    assert {(a["rule"], a["target"]) for a in sent if a["status"] == "firing"} == firing
    assert str(out) in run.stderr  # the log says where notifications go


def test_a_short_history_leaves_the_idle_gpus_pending(tmp_path: Path) -> None:
    # the same fleet with only 5 minutes stored: 5 min idle is not 15, so nothing fires yet
    _run, _rows, idle, idle_for = _run_once_over(tmp_path, 5 * MIN)
    assert IDLE_GPUS <= set(idle) and set(idle.values()) == {"pending"}  # nothing fires yet
    # exactly the GPUs the data show idle now (a GPU between runs too, at some times of day)
    # (means over the rule's window: a GPU idle for the whole 5 minutes is certainly among them)
    assert {t for t, s in idle_for.items() if s >= 5 * 60} <= set(idle)
    assert set(idle) <= {t for t, s in idle_for.items() if s > 0}


def test_a_file_hook_takes_a_path_and_nothing_networked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[hook]]\nname = "f"\ntype = "file"\nurl = "http://127.0.0.1:1/x"\n\n'
                   '[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\n')
    res = wattlens("alerts", "check", str(bad), tmp_path=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"wattlens: error: {bad}:4: hook 'f': url: a file hook writes JSON lines to `path` and "
        f"takes no url"]
    good = tmp_path / "good.toml"
    good.write_text(f'[[hook]]\nname = "f"\ntype = "file"\npath = "{tmp_path / "out.jsonl"}"\n\n'
                    '[[rule]]\nname = "idle"\nkind = "idle_waste"\nabove_w = 40\n')
    assert load_rules(str(good)).hooks[0].path == str(tmp_path / "out.jsonl")
