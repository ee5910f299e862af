"""Write the stack's secrets into a directory once: a given value from the environment, else a random one.

Run by the compose service `secrets` before anything else starts:

    python init_secrets.py /run/wattlens/secrets

For each name below, an existing non-empty file is kept (a restart never
rotates a token under a running InfluxDB); otherwise the value comes from the
environment variable of the same name upper-cased (e.g. from docker/.env), or
is generated with ``secrets.token_urlsafe``. Values are never printed.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# file name -> environment variable that may provide it.
SECRETS: dict[str, str] = {
    "influx_token": "WATTLENS_INFLUX_TOKEN",
    "influx_admin_password": "INFLUXDB_ADMIN_PASSWORD",
    "agent_token": "WATTLENS_AGENT_TOKEN",
    "grafana_admin_password": "GRAFANA_ADMIN_PASSWORD",
}
MIN_LENGTH = 16


def ensure(directory: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Create missing secret files in ``directory``; returns name -> kept | from env | generated."""
    directory.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, str] = {}
    for name, var in SECRETS.items():
        path = directory / name
        if path.is_file() and path.read_text(encoding="utf-8").strip():
            outcome[name] = "kept"
            continue
        given = env.get(var, "").strip()
        if given and len(given) < MIN_LENGTH:
            raise ValueError(f"{var}: must be at least {MIN_LENGTH} characters, got {len(given)}")
        value = given or secrets.token_urlsafe(32)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value, encoding="utf-8")
        # World-readable inside a volume that only the stack's services mount, read-only:
        # the images run as different users (influxdb, nobody, grafana, wattlens).
        tmp.chmod(0o444)
        tmp.replace(path)
        outcome[name] = "from env" if given else "generated"
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: init_secrets.py DIRECTORY", file=sys.stderr)
        return 2
    try:
        outcome = ensure(Path(args[0]), os.environ)
    except (OSError, ValueError) as exc:
        print(f"init_secrets: error: {exc}", file=sys.stderr)
        return 1
    for name, how in outcome.items():
        print(f"init_secrets: {name}: {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
