"""Security pass: loopback by default, tokens in constant time, no secret in logs, metrics or errors."""

from __future__ import annotations

import ast
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port, wait_until
from wattlens.cli import build_parser
from wattlens.config import resolve

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-t0ken-9f8e7d"
PASSWORD = "pa55-w0rd-1a2b3c"


@pytest.mark.parametrize(("argv", "dest"), [
    (["collect"], "bind"),
    (["demo"], "bind"),
    (["demo"], "dashboard_bind"),
    (["dashboard"], "dashboard_bind"),
])
def test_every_listener_binds_loopback_by_default(argv: list[str], dest: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("WATTLENS_") and key != "WATTLENS_TEST_HOME":
            monkeypatch.delenv(key)
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve(args._parser, args, args._section)
    assert getattr(args, dest) == "127.0.0.1"


def test_binding_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_AGENT_TOKEN")}
    out = subprocess.run([sys.executable, "-m", "wattlens", "collect", "--source", "sim",
                          "--bind", "0.0.0.0", "--store", f"sqlite:///{tmp_path / 'x.db'}",
                          "--duration", "1"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 2
    assert "--bind: 0.0.0.0 is reachable from other hosts; set WATTLENS_AGENT_TOKEN" in out.stderr


SECRETISH = re.compile(r"(token|secret|password|passwd|hmac|digest|mac)s?$", re.I)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _name(node.func.value)  # token.encode() is still the token
    return ""


def _compare_sites(path: Path) -> list[str]:
    """Equality comparisons of a secret-named value with a non-constant: must not exist."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for op, (a, b) in zip(node.ops, itertools.pairwise(sides), strict=True):
            if not isinstance(op, (ast.Eq, ast.NotEq)):
                continue
            if any(isinstance(x, ast.Constant) for x in (a, b)):
                continue  # comparing with a literal (None, "", "bearer") leaks no timing
            if SECRETISH.search(_name(a).lstrip("_")) or SECRETISH.search(_name(b).lstrip("_")):
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                bad.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return bad


def test_secrets_are_compared_in_constant_time_everywhere() -> None:
    files = [p for pkg in ("collector", "analytics", "dashboard", "wattlens")
             for p in (ROOT / pkg).rglob("*.py")]
    bad = [site for p in files for site in _compare_sites(p)]
    assert bad == []
    users = {str(p.relative_to(ROOT)) for p in files if "compare_digest" in p.read_text()}
    # Tokens are checked in one place (collector/auth.py), signatures in signing.py, both with
    # hmac.compare_digest; every HTTP surface goes through collector.auth.
    assert {"collector/auth.py", "analytics/alerts/signing.py"} <= users
    for surface in ("collector/http_server.py", "collector/ingest.py", "collector/actuation.py",
                    "dashboard/auth.py"):
        assert "from collector.auth import" in (ROOT / surface).read_text(), surface


def test_no_secret_in_logs_metrics_or_error_messages(tmp_path: Path) -> None:
    port = free_port()
    dead = free_port()  # nothing listens: the store is down and errors get logged
    env = {**os.environ, "WATTLENS_AGENT_TOKEN": SECRET, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "agent.log"
    agent = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "-v", "collect", "--source", "sim", "--nodes", "1",
         "--gpus", "1", "--interval", "0.3", "--prometheus-port", str(port), "--store",
         f"influxdb://admin:{PASSWORD}@127.0.0.1:{dead}/wattlens?timeout_s=1",
         "--spool-dir", str(tmp_path / "spool")],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"

        def metrics_up() -> bool:
            try:
                with urllib.request.urlopen(base + "/metrics", timeout=2) as resp:
                    return b"wattlens_spool_points" in resp.read()
            except OSError:
                return False

        wait_until(metrics_up, 60, "agent /metrics")
        time.sleep(2)  # several failed writes to the unreachable store
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        replies = []
        for headers, body in (({"Authorization": "Bearer wrong-" + SECRET}, b'{"samples": 1}'),
                              ({}, b'{"samples": -1}'), ({}, b"not json")):
            req = urllib.request.Request(base + "/v1/jobs/j1/progress", data=body,
                                         headers={"Content-Type": "application/json", **headers},
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    replies.append(resp.read().decode())
            except urllib.error.HTTPError as exc:
                replies.append(exc.read().decode())
        req = urllib.request.Request(base + "/v1/cap", data=b'{"gpu": 0, "watts": 1}',
                                     headers={"Authorization": "Bearer nope"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        replies.append(refused.value.read().decode())
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    output = log.read_text()
    assert "127.0.0.1" in output and "wattlens" in output  # the log did say things
    assert "admin:***@" in output or "admin" not in output  # URLs are redacted when logged
    for text, where in ((output, "log"), (metrics, "/metrics"), ("\n".join(replies), "replies")):
        assert SECRET not in text, where
        assert PASSWORD not in text, where
    spooled = "".join(p.read_text(errors="replace") for p in (tmp_path / "spool").rglob("*")
                      if p.is_file())
    assert PASSWORD not in spooled and SECRET not in spooled


def test_the_constant_time_check_catches_a_plain_comparison(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def ok(given, self_token):\n    return given == self_token\n")
    assert len(_compare_sites(probe)) == 1
