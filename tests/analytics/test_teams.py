"""Team showback: the report's `teams` rows sum to its own fleet GPU + CPU energy, carbon and cost;
the team filter narrows every figure; the CLI's CSV holds the report's numbers."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from analytics.context import Settings
from analytics.cost import parse_tariff
from analytics.filters import Filter
from analytics.report import build_report
from analytics.teams import NO_TEAM, REST_OF_HOSTS, UNATTRIBUTED_TEAM
from analytics.timeutil import Window
from collector.schema import point
from collector.store import open_store
from collector.store.sqlite import SQLiteStore
from tests.analytics.simstore import SimStore, sim_store

NS = 1_000_000_000
SETTINGS = Settings(tariff=parse_tariff("0.10,17-21=0.40"))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> SimStore:
    return sim_store(tmp_path_factory, 24)


def _sums(rows: list[dict[str, object]], key: str) -> float:
    return math.fsum(float(r[key] or 0.0) for r in rows)  # type: ignore[arg-type]


def test_the_teams_sum_to_the_reports_own_fleet_totals(day: SimStore) -> None:
    report = build_report(open_store(day.url), day.window, 0.5, SETTINGS).to_dict()
    t, teams = report["totals"], report["teams"]
    assert _sums(teams, "energy_j") == pytest.approx(t["gpu_energy_j"] + t["cpu_energy_j"], rel=1e-9)
    assert _sums(teams, "kg_co2") == pytest.approx(t["kg_co2"], rel=1e-9)
    assert _sums(teams, "cost") == pytest.approx(t["cost"], rel=1e-9)
    assert _sums(teams, "share") == pytest.approx(1.0, rel=1e-9)
    names = [r["team"] for r in teams]
    assert {"research", "product", "nlp", "search", UNATTRIBUTED_TEAM} <= set(names)
    assert names[-1] == UNATTRIBUTED_TEAM  # the unclaimed rows come last
    # Each team's work is its jobs' work: the teams' tokens sum to the fleet's.
    assert math.fsum(r["work"].get("tokens", 0.0) for r in teams) == pytest.approx(t["work"]["tokens"])
    # The same rollup per Kubernetes namespace sums to the same whole, and maps onto the teams.
    spaces = {r["namespace"]: r["energy_j"] for r in report["namespaces"]}
    assert math.fsum(spaces.values()) == pytest.approx(t["gpu_energy_j"] + t["cpu_energy_j"], rel=1e-9)
    by_team = {r["team"]: r["energy_j"] for r in teams}
    assert by_team["research"] == pytest.approx(spaces["llm-research"] + spaces["evals"], rel=1e-9)
    assert by_team["search"] == pytest.approx(spaces["search"], rel=1e-9)  # unmapped: its own team
    assert report["idle_policy"]["text"] == "idle power shared by allocation"
    assert any("idle power shared by allocation" in n for n in report["notes"])
    for r in teams:
        if r["team"] != UNATTRIBUTED_TEAM:
            assert 0 < r["idle_j"] < r["energy_j"]
            assert r["per"][r["per_unit"]] == pytest.approx(r["work"][r["per_unit"]] / r["energy_j"])


def test_a_team_filter_narrows_the_figures_to_its_jobs_and_hosts(day: SimStore) -> None:
    store = open_store(day.url)
    whole = build_report(store, day.window, 0.5, SETTINGS).to_dict()
    part = build_report(store, day.window, 0.5, SETTINGS, flt=Filter(team="nlp")).to_dict()
    nlp = {r["team"]: r for r in whole["teams"]}["nlp"]
    rows = {r["team"]: r for r in part["teams"]}
    assert set(rows) <= {"nlp", REST_OF_HOSTS}
    assert rows["nlp"]["energy_j"] == pytest.approx(nlp["energy_j"], rel=1e-9)
    t = part["totals"]
    assert t["gpu_energy_j"] < whole["totals"]["gpu_energy_j"]
    assert _sums(part["teams"], "energy_j") == pytest.approx(t["gpu_energy_j"] + t["cpu_energy_j"],
                                                              rel=1e-9)
    assert {o["job"] for o in part["objectives"]} <= {o["job"] for o in whole["objectives"]}
    assert part["totals"]["filter"]["team"] == "nlp"


def test_no_team_unattributed_and_uncovered_energy_are_listed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    t0 = 1_795_800_000 * NS
    pts = []
    for i in range(10):  # 10 minutes of two hosts: h2 has no job tracker
        t = t0 + i * 60 * NS
        for host, e in (("h1", 1000.0), ("h2", 500.0)):
            pts.append(point("gpu", {"host": host, "gpu": "0", "model": "Test GPU", "method": "counter"},
                             {"energy_j": e, "power_w": e / 60, "util_pct": 50.0}, t))
        pts.append(point("cpu", {"host": "h1", "domain": "package-0", "method": "counter"},
                         {"energy_j": 200.0, "power_w": 200 / 60}, t))
        for job, team, e, idle in (("j1", "ml", 600.0, 100.0), ("j2", "", 300.0, 50.0),
                                   ("unattributed", "", 300.0, 0.0)):
            pts.append(point("job", {"job": job, "host": "h1", "team": team, "idle_policy": "even"},
                             {"energy_j": e, "idle_j": idle, "active_s": 60.0}, t))
    store.write(pts)
    report = build_report(store, Window(t0, t0 + 600 * NS), 0.5, SETTINGS).to_dict()
    rows = {r["team"]: r["energy_j"] for r in report["teams"]}
    assert rows == pytest.approx({"ml": 6000.0, NO_TEAM: 3000.0, UNATTRIBUTED_TEAM: 3000.0 + 5000.0})
    assert report["idle_policy"]["policies"]["even"]["idle_j"] == pytest.approx(1500.0)
    t = report["totals"]
    assert sum(rows.values()) == pytest.approx(t["gpu_energy_j"] + t["cpu_energy_j"])


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // NS, UTC).isoformat()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattlens", "report", *args], capture_output=True,
                          text=True, timeout=300)


def test_the_chargeback_csv_holds_the_reports_rows(day: SimStore, tmp_path: Path) -> None:
    window = ("--since", _iso(day.window.start_ns), "--until", _iso(day.window.end_ns))
    out = tmp_path / "teams.csv"
    done = _cli("--store", day.url, *window, "--format", "json", "--teams-csv", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["team"] for r in rows] == [r["team"] for r in report["teams"]]
    for line, r in zip(rows, report["teams"], strict=True):
        assert float(line["energy_kwh"]) == pytest.approx(r["energy_j"] / 3.6e6, rel=1e-5)
        assert float(line["cost"]) == pytest.approx(r["cost"], rel=1e-5)
    bad = _cli("--store", day.url, *window, "--team", "nobody")
    assert bad.returncode == 2 and "--team: no data for 'nobody'" in bad.stderr
    # One error line (a progress bar may precede it on a slow machine), and no traceback.
    lines = bad.stderr.strip().splitlines()
    assert lines[-1].startswith("wattlens: error: --team") and "Traceback" not in bad.stderr
