"""What the CLI says agrees with what it does: help defaults, flags named in messages, numbers printed sanely."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from collector.store.sqlite import SQLiteStore
from tests.analytics.alerts.helpers import MIN, aligned, job_points

ROOT = Path(__file__).resolve().parents[2]


def wattlens(*args: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")}
    base.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_DATA_HOME=str(tmp_path / "data"),
                PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "wattlens", *args], env={**base, **(env or {})},
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_help_shows_the_real_sources_and_the_demos_own_spool(tmp_path: Path) -> None:
    collect = flat(wattlens("collect", "--help", tmp_path=tmp_path).stdout)
    from collector.sources import REGISTRY

    for name in REGISTRY:  # every registered source is listed, promscrape included
        assert re.search(rf"[ ,]{re.escape(name)}[ ,]", collect), name
    demo = flat(wattlens("demo", "--help", tmp_path=tmp_path).stdout)
    spool = tmp_path / "state" / "wattlens" / "demo-spool"
    assert f"(default: {spool};" in demo  # test_demo_e2e sees the demo spool there


def test_store_init_names_the_store_once_and_a_missing_file_with_one_slash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    res = wattlens("store", "init", "--store", url, tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(url) == 1
    first, *done = res.stdout.splitlines()
    assert first == f"{url}:" and done and all(line.startswith("  ") and line.strip() for line in done)
    missing = tmp_path / "missing.db"
    res = wattlens("report", "--store", f"sqlite:///{missing}", tmp_path=tmp_path)
    assert res.returncode == 2
    assert f"SQLite file '{missing}' does not exist" in res.stderr
    assert "'//" not in res.stderr


def test_objective_prints_j_at_the_precision_of_e(tmp_path: Path) -> None:
    args = ("objective", "--c-train", "300", "--t-train", "0.25", "--n", "1000000", "--c-inf", "150",
            "--t-inf", "0.05", "--m", "500000", "--batch", "32", "--objective-lambda-j", "0.5")
    text = wattlens(*args, tmp_path=tmp_path).stdout
    data = json.loads(wattlens(*args, "--json", tmp_path=tmp_path).stdout)
    line = next(x for x in text.splitlines() if x.startswith("J "))
    totals = re.findall(r"= (\d{1,3}(?:,\d{3})+(?:\.\d+)?) J", line)  # "= 2,460,938 J": J itself
    assert totals == ["2,460,938"], line  # J = 2,460,937.5 + 0.5 / 21, at E's precision
    assert float(totals[0].replace(",", "")) == round(data["j"])  # the JSON's figure, rounded
    assert not re.search(r"\d,\d{3}\.\d", text)  # no millions of joules with decimals anywhere


def test_a_flat_per_trend_is_plus_zero_not_minus_zero(tmp_path: Path) -> None:
    # one job: PER 1.0 samples/J in its first hour, 0.9996 in its last: -0.04 %, shown as 0.0
    now = aligned(time.time_ns())
    start = now - 150 * MIN
    store = SQLiteStore(tmp_path / "w.db")
    store.write(job_points("flat", "n", range(start, start + 60 * MIN, MIN), 1000.0, 1000.0))
    store.write(job_points("flat", "n", range(start + 60 * MIN, now - 60 * MIN, MIN), 1000.0, 1000.0))
    store.write(job_points("flat", "n", range(now - 60 * MIN, now, MIN), 1000.0, 999.6))
    store.close()
    res = wattlens("report", "--store", f"sqlite:///{tmp_path / 'w.db'}", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    trend = next(x for x in res.stdout.splitlines() if x.lstrip().startswith("flat") and "%" in x)
    assert ("+0.0%" in trend or "±0.0%" in trend) and "-0.0" not in res.stdout
    raw = json.loads(wattlens("report", "--store", f"sqlite:///{tmp_path / 'w.db'}", "--format",
                              "json", tmp_path=tmp_path).stdout)
    assert -0.05 < next(t["change_pct"] for t in raw["trends"] if t["job"] == "flat") < 0  # really below
    from analytics.context import Settings
    from collector.store.cache import CachedStore
    from dashboard.views import ContextMemo, jobs_rows

    store = SQLiteStore(tmp_path / "w.db")
    try:
        rows = jobs_rows(ContextMemo(Settings()).get(CachedStore(store), "24h"), 0.5)
    finally:
        store.close()
    pct = next(r["per_trend_pct"] for r in rows if r["job"] == "flat")
    assert pct == 0.0 and math.copysign(1.0, pct) == 1.0


def test_the_demo_refuses_auth_token_without_a_token_before_any_work(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    res = wattlens("demo", "--auth", "token", "--store", f"sqlite:///{db}", "--port", "0",
                   tmp_path=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "wattlens: error: --auth token: WATTLENS_DASHBOARD_TOKEN is not set; export it from your "
        "secret store (never pass it as a flag)"]
    assert not db.exists()


def test_the_cpu_estimate_hint_names_the_flag(tmp_path: Path) -> None:
    from tests.collector.sources.trees import proc

    root = proc(tmp_path / "proc", "Some Future CPU", [0])
    args = ("collect", "--source", "cpu-estimate", "--once", "--procfs-root", str(root))
    guessed = wattlens(*args, tmp_path=tmp_path)
    assert guessed.returncode == 0, guessed.stderr
    assert "unknown model: pass --tdp-w for a better one" in guessed.stderr
    assert "tdp_w=" not in guessed.stderr
    given = wattlens(*args, "--tdp-w", "95", tmp_path=tmp_path)
    assert given.returncode == 0, given.stderr
    assert "1 package(s) x 95 W TDP" in given.stderr and "pass --tdp-w" not in given.stderr


def test_the_demo_checks_its_rule_file_before_any_work(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    res = wattlens("demo", "--rules", str(tmp_path / "nope.toml"), "--store", f"sqlite:///{db}",
                   "--port", "0", tmp_path=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"wattlens: error: --rules: file '{tmp_path / 'nope.toml'}' "
                                       f"does not exist"]
    assert not db.exists()
