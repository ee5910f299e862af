"""`wattlens store init` against a real InfluxDB, and on SQLite (nothing to do)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from collector.errors import ConfigError, StoreUnavailable
from tests.fixtures_influx import influx_query
from tests.servers import ServerProcess, free_port
from wattlens.commands import store as store_command
from wattlens.config import resolve


def _run(argv: list[str]) -> int:
    """Parse and run as wattlens.cli.main does (flags > env > config file > defaults)."""
    parser = argparse.ArgumentParser(prog="wattlens")
    store_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if getattr(args, "_parser", None) is not None:
        resolve(args._parser, args, args._section)
    return int(args.func(args))


@pytest.mark.integration
def test_store_init_creates_the_database_and_rollups(influxdb: ServerProcess,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    url = f"influxdb://127.0.0.1:{influxdb.port}/from_cli"
    assert _run(["store", "init", "--store", url, "--raw-retention", "14d",
                 "--backfill-hours", "1"]) == 0
    out = capsys.readouterr().out
    assert "database 'from_cli': ready" in out
    assert "retention policy 'raw': 14d (default) created" in out
    assert "continuous query 'wattlens_facility_1h_v2': created" in out
    assert "wattlens_gpu_1m_v2: 0 points" in out
    dbs = json.loads(influx_query(influxdb, "SHOW DATABASES"))
    assert ["from_cli"] in dbs["results"][0]["series"][0]["values"]
    assert _run(["store", "init", "--store", url]) == 0  # idempotent
    assert "continuous query 'wattlens_gpu_1m_v2': exists" in capsys.readouterr().out


@pytest.mark.integration
def test_store_init_from_environment_and_errors(influxdb: ServerProcess,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WATTLENS_STORE", f"influxdb://127.0.0.1:{influxdb.port}/from_env")
    monkeypatch.setenv("WATTLENS_NO_ROLLUPS", "true")
    assert _run(["store", "init"]) == 0
    out = capsys.readouterr().out
    assert "from_env" in out and "rollup" not in out
    with pytest.raises(ConfigError, match="--raw-retention: 'forever'"):
        _run(["store", "init", "--raw-retention", "forever"])
    with pytest.raises(StoreUnavailable, match="connection refused"):
        _run(["store", "init", "--store", f"influxdb://u:pw@127.0.0.1:{free_port()}/x"])


def test_store_init_sets_the_sqlite_retention(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert _run(["store", "init", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "retention raw: 7 d" in out and "retention 1m: 90 d" in out and "retention 1h: kept" in out
    assert _run(["store", "init", "--store", url, "--raw-retention", "2d",
                 "--rollup-1m-retention", "30d"]) == 0
    out = capsys.readouterr().out
    assert "retention raw: 2 d" in out and "retention 1m: 30 d" in out and "retention 1h: kept" in out
    with pytest.raises(ConfigError, match="--raw-retention: '2 days'"):
        _run(["store", "init", "--store", url, "--raw-retention", "2 days"])
    with pytest.raises(ConfigError, match="downsample is for InfluxDB"):
        _run(["store", "downsample", "--store", url])
