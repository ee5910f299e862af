"""`wattlens cap apply|revert`: change a GPU's power limit through its node's agent (dry run by default)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

from collector.errors import ConfigError, WattlensError

DEFAULT_AGENT_PORT = 9464


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cap", help="apply or revert a GPU power cap through the node's agent (dry run by default)",
        description="Change a GPU's NVML power limit through the wattlens agent on its node. "
                    "Without --apply this is a dry run that shows the current limit, the new one "
                    "and the allowed range; on this host it needs no token. A real change needs "
                    "the agent started with --enable-actuation as root, and its token in "
                    "WATTLENS_AGENT_TOKEN here. Every change is audited on the agent.")
    actions = p.add_subparsers(dest="cap_action", metavar="ACTION", required=True)
    for name, helptext in (("apply", "set a GPU's power limit"),
                           ("revert", "restore the limit before the latest applied change")):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("--host", required=True,
                       help="the node whose agent to ask (a simulated host, e.g. node-00, "
                            "with --agent-url of the `collect --source sim` agent)")
        a.add_argument("--gpu", required=True, type=int, help="GPU index on that node")
        if name == "apply":
            a.add_argument("--watts", required=True, type=float, help="new power limit in W")
        a.add_argument("--agent-url", help="agent base URL (default: http://HOST:9464; "
                                           "127.0.0.1 for this host)")
        a.add_argument("--apply", action="store_true",
                       help="really change the hardware (default: dry run)")
        a.set_defaults(func=run)


def agent_url(host: str, explicit: str | None) -> str:
    if explicit:
        return explicit.rstrip("/")
    local = host in ("localhost", "127.0.0.1", socket.gethostname())
    return f"http://{'127.0.0.1' if local else host}:{DEFAULT_AGENT_PORT}"


DISABLED = ("actuation is not enabled on that agent: start it with --enable-actuation "
            "(root and a token needed)")


def run(args: argparse.Namespace) -> int:
    from collector.auth import is_loopback

    token = os.environ.get("WATTLENS_AGENT_TOKEN", "")
    url = agent_url(args.host, args.agent_url)
    local = is_loopback(urllib.parse.urlsplit(url).hostname)
    if not token and (args.apply or not local):
        need = "a real change" if args.apply else "a dry run on another host"
        raise ConfigError(f"WATTLENS_AGENT_TOKEN is not set: {need} needs the agent's token "
                          "(export it from your secret store; never pass it as a flag)")
    # ``host`` picks the GPU's host on an agent that speaks for several (a simulated fleet).
    body: dict[str, object] = {"host": args.host, "gpu": args.gpu, "dry_run": not args.apply,
                               "who": getpass.getuser()[:64]}
    path = "/v1/cap"
    if args.cap_action == "apply":
        body["watts"] = args.watts
    else:
        path = "/v1/cap/revert"
    url += path
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - the operator's own agent URL
        url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
            change = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
            message, code = answer.get("error", exc.reason), answer.get("code", "")
        except (ValueError, AttributeError):
            message, code = exc.reason, ""
        if code == "actuation_disabled" or exc.code == 404:  # 404: an agent older than /v1/cap
            raise WattlensError(DISABLED) from None
        # 400: the request itself was wrong (a limit out of range, an unknown host): exit 2
        error = ConfigError if exc.code == 400 else WattlensError
        raise error(f"agent at {url} refused ({exc.code}): {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise WattlensError(f"cannot reach the agent at {url}: {exc}; is `wattlens collect` "
                            f"running there? (--agent-url names it; a simulated host's agent "
                            f"is the `collect --source sim` one, e.g. "
                            f"--agent-url http://127.0.0.1:{DEFAULT_AGENT_PORT})") from None
    mode = "dry run, nothing changed" if change["dry_run"] else "APPLIED"
    print(f"{change['host']} gpu {change['gpu']}: power limit {change['before_w']:g} W -> "
          f"{change['after_w']:g} W (allowed {change['min_w']:g}-{change['max_w']:g} W) [{mode}]")
    if change["dry_run"]:
        print("re-run with --apply to make the change (needs --enable-actuation on the agent)")
    return 0
