"""Container HEALTHCHECK: GET a local URL (the agent's /metrics, the dashboard's page) and exit 0 on HTTP 200.

Standard library only, so it runs in both images. The URL comes from argv[1] or
WATTLENS_HEALTHCHECK_URL; a bearer token from WATTLENS_AGENT_TOKEN or the file
named by WATTLENS_AGENT_TOKEN_FILE is sent when set (the agent asks for it when
it listens beyond loopback). The token is never printed.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:9464/metrics"


def read_token(env: Mapping[str, str]) -> str | None:
    """The agent token from the environment or its *_FILE; None when neither is set."""
    token = env.get("WATTLENS_AGENT_TOKEN", "")
    path = env.get("WATTLENS_AGENT_TOKEN_FILE", "")
    if not token and path:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    return token or None


def check(url: str, token: str | None, timeout_s: float = 4.0) -> tuple[bool, str]:
    """(healthy, one-line reason) for a GET of ``url``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, f"healthcheck URL must be http(s)://host:port/path, got {url!r}"
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - scheme checked above
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - scheme checked
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered HTTP {exc.code}"
    except (OSError, urllib.error.URLError) as exc:
        return False, f"{url} unreachable: {getattr(exc, 'reason', exc)}"
    if status != 200:
        return False, f"{url} answered HTTP {status}"
    return True, f"{url} answered HTTP 200"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if env is None else env
    url = args[0] if args else environ.get("WATTLENS_HEALTHCHECK_URL", DEFAULT_URL)
    try:
        token = read_token(environ)
    except OSError as exc:
        print(f"unhealthy: cannot read WATTLENS_AGENT_TOKEN_FILE: {exc.strerror}", file=sys.stderr)
        return 1
    ok, reason = check(url, token)
    print(("healthy: " if ok else "unhealthy: ") + reason, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
