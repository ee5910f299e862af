"""`wattlens report`: formats, windows, config precedence, clear errors, and the progress bar."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.store.sqlite import SQLiteStore
from tests.analytics.handmade import write_small_fleet
from tests.analytics.simstore import SimStore, sim_store
from wattlens.cli import main
from wattlens.commands.report import LazyProgress


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> SimStore:
    return sim_store(tmp_path_factory, 24)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_report_of_the_simulated_day(day: SimStore, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "report", "--store", day.url, "--format", "json", "--lambda", "0.8")
    assert rc == 0
    r = json.loads(out)
    assert r["tradeoff_weight"] == 0.8
    assert r["window"]["end"] == "2026-11-28 00:00:00Z"  # 'latest': just after the newest point
    kinds = {rec["kind"] for rec in r["recommendations"]}
    assert {"idle_gpu", "mixed_precision", "power_cap", "carbon_window"} <= kinds
    assert r["totals"]["kg_co2"] > 0 and r["totals"]["cost"] > 0


def test_table_and_markdown(day: SimStore, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "report", "--store", day.url)
    assert rc == 0 and out.startswith("wattlens report\n") and "Recommendations" in out
    rc, md, _ = run(capsys, "report", "--store", day.url, "--format", "md")
    assert rc == 0 and md.startswith("# wattlens report") and "\n## Totals\n" in md
    assert "| name | energy | PER | note |" in md


def test_explicit_window_and_prices(day: SimStore, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "report", "--store", day.url, "--since", "2026-11-27T12:00Z",
                     "--until", "2026-11-28T00:00:01Z", "--format", "json", "--price", "0.2",
                     "--currency", "EUR")
    r = json.loads(out)
    assert rc == 0 and r["window"]["start"] == "2026-11-27 12:00:00Z"
    assert r["totals"]["currency"] == "EUR"
    assert r["totals"]["cost"] == pytest.approx(r["totals"]["grid_energy_j"] / 3.6e6 * 0.2)
    rc, out, _ = run(capsys, "report", "--store", day.url, "--since", "6h", "--format", "json")
    assert json.loads(out)["window"]["start"] == "2026-11-27 18:00:00Z"


def test_lambda_from_environment_and_flag_beats_it(day: SimStore, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLENS_TRADEOFF_WEIGHT", "0.8")
    _, out, _ = run(capsys, "report", "--store", day.url, "--format", "json")
    assert json.loads(out)["tradeoff_weight"] == 0.8
    _, out, _ = run(capsys, "report", "--store", day.url, "--format", "json", "--tradeoff-weight",
                    "0.3", "--objective-lambda-j", "1000")
    r = json.loads(out)
    assert r["tradeoff_weight"] == 0.3 and r["objective_lambda_j"] == 1000


def test_carbon_csv_and_country(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_small_fleet(tmp_path / "s.db").close()
    url = f"sqlite:///{tmp_path / 's.db'}"
    rc, out, _ = run(capsys, "report", "--store", url, "--format", "json")
    r = json.loads(out)
    assert rc == 0 and r["totals"]["kg_co2"] is None
    assert "--carbon-csv" in r["totals"]["emissions"]["message"]
    csv = tmp_path / "grid.csv"
    csv.write_text("timestamp,region,g_per_kwh\n2026-11-27T00:00Z,here,100\n"
                   "2026-11-27T01:00Z,here,300\n2026-11-27T02:00Z,here,300\n")
    rc, out, _ = run(capsys, "report", "--store", url, "--format", "json", "--carbon-csv", str(csv))
    em = json.loads(out)["totals"]["emissions"]
    # Points every 10 min from 00:10: five in hour 0 (100 g/kWh), six in hour 1 and one at 02:00
    # (300 g/kWh), each with 56,400 J of facility energy.
    assert em["g_co2"] == pytest.approx((5 * 100 + 7 * 300) * 56_400 / 3.6e6)
    assert em["source"] == "here (average, csv: grid.csv)"
    rc, out, _ = run(capsys, "report", "--store", url, "--format", "json", "--country", "FR")
    em = json.loads(out)["totals"]["emissions"]
    assert em["mean_g_per_kwh"] == pytest.approx(56.039) and "Ember" in em["source"]  # FR, Ember 2023


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "--since: expected an ISO time"),
    (["--until", "2026-11-27T00:00Z", "--since", "2026-11-28T00:00Z"], "--until must be after --since"),
    (["--price", "cheap"], "--price: the first item must be the price per kWh"),
    (["--country", "XX"], "--country: no bundled annual intensity for 'XX'"),
    (["--carbon-csv", "/nonexistent/grid.csv"], "--carbon-csv: file '/nonexistent/grid.csv' does not exist"),
])
def test_bad_input_is_one_clear_line(day: SimStore, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    rc, out, err = run(capsys, "report", "--store", day.url, *args)
    assert rc == 2 and out == "" and message in err and err.count("\n") == 1


def test_missing_or_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "report", "--store", str(tmp_path / "nope.db"))
    assert rc == 2 and "does not exist" in err
    assert not (tmp_path / "nope.db").exists()  # reading never creates a store
    SQLiteStore(tmp_path / "empty.db").close()
    rc, _, err = run(capsys, "report", "--store", f"sqlite:///{tmp_path / 'empty.db'}")
    assert rc == 2 and "holds no gpu or job points" in err
    with pytest.raises(SystemExit):
        main(["report", "--store", str(tmp_path / "empty.db"), "--lambda", "1.5"])
    assert "must be between 0 and 1, got '1.5'" in capsys.readouterr().err


def test_progress_bar_appears_only_after_the_delay() -> None:
    slow, fast = io.StringIO(), io.StringIO()
    with LazyProgress("report", ("a", "b"), delay_s=0.0, stream=slow) as bar:
        bar.step("a")
        bar.step("b")
    assert bar.shown and "report [" in slow.getvalue() and "100.0%" in slow.getvalue()
    with LazyProgress("report", ("a", "b"), delay_s=3600.0, stream=fast) as bar:
        bar.step("a")
        bar.step("b")
    assert not bar.shown and fast.getvalue() == ""


def test_the_console_entry_point(tmp_path: Path) -> None:
    write_small_fleet(tmp_path / "s.db").close()
    out = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store",
                          str(tmp_path / "s.db"), "--format", "md"], capture_output=True, text=True,
                         timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert "## Recommendations" in out.stdout and "h1: GPU 1 idle but drawing power" in out.stdout


def test_a_20_s_collection_reports_about_20_s_of_data(tmp_path: Path) -> None:
    """A real agent run of 20 s, then `report`: span_s is the time the data covers (about 20 s),
    not a bucket count × the bucket width, and per-day figures say they are scaled from it."""
    url = f"sqlite:///{tmp_path / 'short.db'}"
    env = {**os.environ, "WATTLENS_STATE_DIR": str(tmp_path / "state")}
    collect = subprocess.run(
        [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", "1", "--gpus",
         "2", "--interval", "1", "--duration", "20", "--store", url, "--prometheus-port", "0",
         "--spool-dir", str(tmp_path / "spool")],
        capture_output=True, text=True, timeout=120, env=env)
    assert collect.returncode == 0, collect.stderr
    report = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store", url,
                             "--since", "1h", "--until", "latest", "--format", "json"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)["totals"]
    assert 16 <= totals["span_s"] <= 23, totals["span_s"]
    assert totals["coverage"] < 0.01  # 20 s of a one-hour window
    assert totals["per_day"]["too_short"] and totals["per_day"]["scaled_from_s"] == totals["span_s"]
    text = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store", url, "--since",
                           "1h", "--until", "latest"], capture_output=True, text=True, timeout=120,
                          env=env).stdout
    assert "data cover 2" in text or "data cover 1" in text
    assert "too short to extrapolate to a day reliably" in text
