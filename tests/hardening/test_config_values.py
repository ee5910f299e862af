"""Every bad config-file value is refused like the same bad flag: one line naming key and value, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattlens.cli import main

BAD = [
    ("interval = -1", "interval", "-1"),
    ("interval = 0", "interval", "0"),
    ("interval = 0.01", "interval", "0.01"),
    ("interval = 1e-9", "interval", "1e-09"),
    ("interval = nan", "interval", "nan"),
    ("interval = inf", "interval", "inf"),
    ("interval = true", "interval", "True"),
    ('interval = "fast"', "interval", "fast"),
    ("interval = [1]", "interval", "[1]"),
    ("spool_max_mb = nan", "spool_max_mb", "nan"),
    ("spool_max_mb = -5", "spool_max_mb", "-5"),
    ("prometheus_port = 70000", "prometheus_port", "70000"),
    ("prometheus_port = -1", "prometheus_port", "-1"),
    ("prometheus_port = 80.5", "prometheus_port", "80.5"),
    ("duration = -3", "duration", "-3"),
    ("duration = 0", "duration", "0"),
    ("http_timeout = inf", "http_timeout", "inf"),
    ("gpus = 0", "gpus", "0"),
    ("enable_actuation = 1", "enable_actuation", "1"),
    ("store = 5", "store", "5"),
]


@pytest.mark.parametrize(("line", "key", "value"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_config_value_is_one_line_naming_it_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str, value: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[collect]\n{line}\n")
    code = main(["collect", "--config", str(config), "--source", "sim",
                 "--spool-dir", str(tmp_path / "spool")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"[collect] {key}:" in err and value in err
    assert not (tmp_path / "spool").exists(), "refused before anything started"


@pytest.mark.parametrize("flag", [["--interval", "1e-9"], ["--interval", "nan"],
                                  ["--prometheus-port", "70000"], ["--duration", "-3"]])
def test_the_same_bad_values_as_flags_exit_2(capsys: pytest.CaptureFixture[str], flag: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["collect", "--source", "sim", *flag])
    assert info.value.code == 2
    assert flag[0] in capsys.readouterr().err


def test_good_values_from_the_file_are_used(tmp_path: Path) -> None:
    import argparse

    from wattlens.commands import collect
    from wattlens.config import resolve

    parser = argparse.ArgumentParser()
    collect.add_agent_options(parser)
    parser.add_argument("--config")
    config = tmp_path / "c.toml"
    config.write_text("[collect]\ninterval = 0.05\nprometheus_port = 0\nspool_max_mb = 8\n")
    args = parser.parse_args(["--config", str(config)])
    resolve(parser, args, "collect")
    assert (args.interval, args.prometheus_port, args.spool_max_mb) == (0.05, 0, 8.0)
