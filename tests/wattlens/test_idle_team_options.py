"""`--idle-policy` and `--team-map` reach the agent's job tracker from flags, environment and the
config file alike; a bad value is one error naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.tracker import JobTracker
from wattlens.cli import build_parser
from wattlens.config import resolve


def _args(*argv: str) -> object:
    args = build_parser().parse_args(["collect", "--source", "sim", *argv])
    resolve(args._parser, args, args._section)
    return args


def test_flags_environment_and_file_set_the_policy_and_the_map(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    args = _args("--idle-policy", "even", "--team-map", "ml-prod=ml, web=product")
    assert (args.idle_policy, args.team_map) == ("even", {"ml-prod": "ml", "web": "product"})  # type: ignore[attr-defined]
    assert _args().idle_policy == "allocation"  # type: ignore[attr-defined]
    monkeypatch.setenv("WATTLENS_IDLE_POLICY", "unattributed")
    assert _args().idle_policy == "unattributed"  # type: ignore[attr-defined]
    monkeypatch.delenv("WATTLENS_IDLE_POLICY")
    conf = tmp_path / "w.toml"
    conf.write_text('[collect]\nidle_policy = "even"\nteam_map = "a=b"\n')
    args = _args("--config", str(conf))
    assert (args.idle_policy, args.team_map) == ("even", {"a": "b"})  # type: ignore[attr-defined]
    tracker = JobTracker("h", idle_policy=args.idle_policy, team_map=args.team_map)  # type: ignore[attr-defined]
    assert "idle power shared by even" in tracker.probe().detail


@pytest.mark.parametrize(("argv", "named"), [
    (["--idle-policy", "fair"], "--idle-policy: must be one of allocation, even, unattributed"),
    (["--team-map", "ns"], "--team-map: expected NAMESPACE=TEAM"),
    (["--team-map", "ns=a b"], "--team-map: expected NAMESPACE=TEAM"),
])
def test_a_bad_value_names_the_option(argv: list[str], named: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _args(*argv)
    assert info.value.code == 2
    assert named in capsys.readouterr().err.replace("argument ", "")


def test_the_tracker_refuses_a_bad_policy() -> None:
    with pytest.raises(ValueError, match="--idle-policy: expected one of"):
        JobTracker("h", idle_policy="fair")
