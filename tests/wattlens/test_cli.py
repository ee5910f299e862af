"""The CLI front door: subcommands listed, config precedence, clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.store import AggregateQuery, open_store
from wattlens.cli import main


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattlens", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_the_subcommands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("collect", "demo", "dashboard"):
        assert name in out.stdout


def test_collect_runs_the_simulated_agent_into_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    out = run_cli("collect", "--source", "sim", "--store", url, "--interval", "0.2",
                  "--duration", "1.5", "--nodes", "1", "--gpus", "2", "--prometheus-port", "0")
    assert out.returncode == 0, out.stderr
    store = open_store(url)
    span = store.time_range("gpu")
    assert span is not None
    rows = store.query(AggregateQuery("gpu", (("count", "power_w"),), span[0], span[1] + 1,
                                      group_by=("gpu",)))
    assert [r.tags["gpu"] for r in rows] == ["0", "1"]
    assert all((r.values["count_power_w"] or 0) >= 3 for r in rows)


def test_flags_beat_environment_beat_config_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from wattlens.config import option, resolve

    cfg = tmp_path / "w.toml"
    cfg.write_text('[collect]\ninterval = 5.0\nstore = "sqlite:///from-file.db"\nnodes = 3\n')
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    option(parser, "--interval", type=float, default=1.0)
    option(parser, "--store", default="sqlite:///default.db")
    option(parser, "--nodes", type=int, default=4)
    option(parser, "--seed", type=int, default=1)
    monkeypatch.setenv("WATTLENS_STORE", "sqlite:///from-env.db")
    args = parser.parse_args(["--config", str(cfg), "--interval", "2"])
    resolve(parser, args, "collect")
    assert args.interval == 2.0  # flag
    assert args.store == "sqlite:///from-env.db"  # env beats file
    assert args.nodes == 3  # file beats default
    assert args.seed == 1  # default


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["collect", "--source", "nope"], {}, "--source: unknown source 'nope'"),
    (["collect", "--store", "mysql://x/y", "--source", "sim"], {}, "unknown scheme 'mysql'"),
    (["collect", "--source", "sim"], {"WATTLENS_INTERVAL": "fast"},
     "WATTLENS_INTERVAL: invalid value 'fast'"),
    (["demo", "--backfill", "yesterday"], {}, "--backfill: expected a duration"),
])
def test_bad_input_gets_one_clear_line_and_a_nonzero_exit(
        tmp_path: Path, args: list[str], env: dict[str, str], needle: str) -> None:
    out = run_cli(*args, env={"WATTLENS_STORE": f"sqlite:///{tmp_path / 'x.db'}", **env})
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_file_names_the_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text("[collect]\nintervall = 5\n")
    assert main(["collect", "--config", str(cfg), "--source", "sim", "--once"]) == 2
    assert "unknown setting 'intervall'" in capsys.readouterr().err


def test_agent_import_path_never_loads_dash_plotly_or_torch() -> None:
    code = ("import sys; import wattlens.cli as c; p = c.build_parser(); "
            "import collector.agent, collector.sources.simulated, collector.store.sqlite; "
            "bad = [m for m in ('dash', 'plotly', 'torch') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
