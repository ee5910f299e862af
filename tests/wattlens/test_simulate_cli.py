"""`wattlens simulate write|caps|truth`: the simulator's own command, checked against its physics and a store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analytics import queries
from analytics.levels import job_totals
from analytics.timeutil import Window, parse_time_ns
from collector.sim.models import find_model
from collector.sim.physics import KINDS, cap_table
from collector.store import open_store
from wattlens.cli import main

END = "2026-11-28T00:00:00Z"
NS = 1_000_000_000


def test_caps_json_is_the_physics_table_and_reproduces_mit_ll(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "caps", "--gpu", "v100-pcie", "--workload", "train", "--step", "50",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu"] == "Tesla V100-PCIE-32GB" and out["min_cap_w"] == 100 and out["tdp_w"] == 250
    want = cap_table(find_model("V100-PCIE"), KINDS["train"], 50)
    assert [r["cap_w"] for r in out["rows"]] == [r.cap_w for r in want] == [100, 150, 200, 250]
    assert out["rows"] == [r.__dict__ for r in want]
    rows = {r["cap_w"]: r for r in out["rows"]}
    assert all(r["power_w"] <= r["cap_w"] for r in out["rows"])
    energy = rows[150]["energy_per_work_j"] / rows[250]["energy_per_work_j"] - 1
    time_ = rows[150]["time_per_work_s"] / rows[250]["time_per_work_s"] - 1
    assert energy == pytest.approx(-0.137, abs=0.02) and time_ == pytest.approx(0.068, abs=0.015)


def test_caps_table_lists_every_cap_from_min_to_tdp(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "caps", "--gpu", "H100", "--workload", "llm-infer"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("NVIDIA H100 80GB HBM3, llm-infer")
    caps = [int(line.split()[0]) for line in text.splitlines()[2:] if line.split()[0].isdigit()]
    assert caps[0] == 200 and caps[-1] == 700 and caps == sorted(caps)
    assert "Samsi" in text  # the calibration source is printed


@pytest.mark.parametrize(("argv", "field"), [
    (["--gpu", "A100", "--workload", "train"], "--gpu: 'A100' is ambiguous"),
    (["--gpu", "B200", "--workload", "train"], "--gpu: 'B200' matches none"),
    (["--gpu", "H100", "--workload", "pretrain"], "--workload: must be one of"),
    (["--gpu", "H100", "--workload", "train", "--util", "1.5"], "--util: must be in [0, 1]"),
])
def test_bad_caps_arguments_are_one_clear_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                                               field: str) -> None:
    assert main(["simulate", "caps", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_write_then_truth_cover_the_same_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    assert main(["simulate", "write", "--hours", "2", "--end", END, "--store", url]) == 0
    captured = capsys.readouterr()
    assert "100.0%" in captured.err and "wrote" in captured.out  # a progress bar, then a summary
    assert main(["simulate", "truth", "--hours", "2", "--end", END, "--json"]) == 0
    truth = json.loads(capsys.readouterr().out)
    end = parse_time_ns(END, "end")
    assert (truth["start_ns"], truth["end_ns"]) == (end - 2 * 3600 * NS, end)
    store = open_store(url)
    span = store.time_range("gpu")
    assert span is not None and span[1] == end and span[0] == end - 2 * 3600 * NS + 60 * NS
    # The idle GPUs' true saving is what the store says they drew, scaled to a day.
    (idle,) = [i for i in truth["items"] if i["kind"] == "idle_gpu"]
    window = Window(truth["start_ns"] + 1, end + 1)
    drawn = sum(e for (host, gpu), e in queries.energy_by(store, window, "gpu", ("host", "gpu")).items()
                if f"{host}/{gpu}" in idle["gpus"])
    assert idle["savings_kwh_per_day"] == pytest.approx(drawn / 3.6e6 * 12, rel=0.01)
    assert truth["healthy_gpus"] and not set(truth["healthy_gpus"]) & {g for i in truth["items"]
                                                                       for g in i["gpus"]}


def test_write_refuses_a_bad_scenario_and_hours(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "write", "--hours", "2", "--scenario", "nope", "--store", f"sqlite:///{tmp_path}/x.db"])
    assert exc.value.code == 2 and "--scenario" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "write", "--hours", "-1", "--store", f"sqlite:///{tmp_path}/x.db"])
    assert exc.value.code == 2 and "--hours" in capsys.readouterr().err


@pytest.mark.integration
def test_write_into_influxdb_agrees_with_sqlite(influx_url: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate write` takes any store URL: the same window into InfluxDB and SQLite reads back
    the same energy per host and the same job work."""
    sqlite_url = f"sqlite:///{tmp_path / 'sim.db'}"
    for url in (influx_url, sqlite_url):
        assert main(["simulate", "write", "--hours", "0.5", "--end", END, "--store", url,
                     "--scenario", "mixed"]) == 0
    capsys.readouterr()
    end = parse_time_ns(END, "end")
    window = Window(end - 1800 * NS + 1, end + 1)
    a, b = open_store(influx_url), open_store(sqlite_url)
    ea = queries.energy_by(a, window, "gpu", ("host",))
    eb = queries.energy_by(b, window, "gpu", ("host",))
    assert set(ea) == set(eb) and len(ea) == 4
    for host, e in eb.items():
        assert ea[host] == pytest.approx(e, rel=1e-9)
    ja = {name: j.work["tokens"] for name, j in job_totals(a, window).items()}
    jb = {name: j.work["tokens"] for name, j in job_totals(b, window).items()}
    assert ja.keys() == jb.keys() and all(ja[k] == pytest.approx(v, rel=1e-9) for k, v in jb.items())
