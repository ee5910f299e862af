"""Job progress ingest: ``POST /v1/jobs/{id}/progress`` and ``GET /v1/jobs`` on the agent's server.

Any program, in any language, reports what it got done::

    curl --unix-socket /run/wattlens/ingest.sock -X POST http://agent/v1/jobs/bert-ft/progress \\
         -H 'Content-Type: application/json' -d '{"samples": 64, "tokens": 32768, "steps": 1}'

Reports are checked by :mod:`collector.job_report` and kept by the
:class:`collector.tracker.JobTracker` source, which emits one ``job`` point per
job per round with its work and attributed energy. Every bad request is a 4xx
with a one-line JSON message naming the field; requests never touch the
sampling thread beyond one short lock.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from collector.auth import check_request, check_token
from collector.http_server import Peer, Request, Response
from collector.job_report import (
    KINDS,
    MAX_BODY_BYTES,
    PRECISIONS,
    WORK_FIELDS,
    IngestError,
    Progress,
    check_job_id,
    check_tags,
    check_team,
    parse_progress,
)
from collector.tracker import MAX_JOBS, JobTracker, with_jobs

__all__ = ["KINDS", "MAX_BODY_BYTES", "MAX_JOBS", "PRECISIONS", "WORK_FIELDS", "IngestApp",
           "IngestError", "JobTracker", "Progress", "check_job_id", "check_pid_owner",
           "check_tags", "check_team", "parse_progress", "with_jobs"]

log = logging.getLogger("wattlens.ingest")


Reply = tuple[int, dict[str, str], bytes]


def _json(status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, (
        json.dumps(payload, separators=(",", ":")) + "\n").encode()


class IngestApp:
    """The agent's job endpoints, as plain functions of a request; mount them with :meth:`mount`.

    - ``POST /v1/jobs/{id}/progress``: a progress report (see :func:`parse_progress`).
    - ``GET /v1/jobs``: the jobs the agent is tracking.

    Over the agent's Unix socket (the jobs API's default) no token is needed: the
    kernel says which UID posts (``peer``), a process may claim only PIDs of its own
    UID, and a job belongs to the UID that first posted to it (root may do both).
    Over TCP every request needs ``Authorization: Bearer $WATTLENS_AGENT_TOKEN``,
    from loopback too; an agent without a token refuses job ingest over TCP (403).
    """

    PROGRESS = re.compile(r"/v1/jobs/([^/]*)/progress")

    def __init__(self, tracker: JobTracker, *, token: str | None = None, proc_root: str = "/proc",
                 socket_path: str | None = None) -> None:
        self.tracker = tracker
        if token is None:
            token = os.environ.get("WATTLENS_AGENT_TOKEN") or None
        self._token = check_token(token or None)
        self.proc_root = proc_root
        self.socket_path = socket_path
        self.rejected = 0

    def _auth(self, headers: Mapping[str, str], peer: Peer | None, client: str) -> Reply | None:
        if peer is not None:
            return None
        if self._token is None:
            where = f" over the Unix socket {self.socket_path}" if self.socket_path else \
                " over the agent's Unix socket"
            return _json(403, {"error": "job ingest over TCP is off: this agent has no "
                                        f"WATTLENS_AGENT_TOKEN; local jobs post{where}"})
        denied = check_request(client, headers.get("authorization"), self._token,
                               loopback_free=False, what="job ingest over TCP")
        if denied is None:
            return None
        return _json(denied.status, {"error": denied.message},
                     {"WWW-Authenticate": "Bearer"} if denied.status == 401 else None)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
               client: str, peer: Peer | None = None) -> Reply:
        """Answer one request: (status, headers, body). Never raises for bad input."""
        reply = self._handle(method, path.split("?", 1)[0], {k.lower(): v for k, v in headers.items()},
                             body, client, peer)
        if 400 <= reply[0] < 500:
            self.rejected += 1
        return reply

    def _handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                client: str, peer: Peer | None) -> Reply:
        match = self.PROGRESS.fullmatch(path)
        if match is None and path != "/v1/jobs":
            return _json(404, {"error": f"path: no such endpoint {path[:80]!r}; "
                                        "use POST /v1/jobs/{id}/progress"})
        want = "POST" if match else "GET"
        if method != want:
            return _json(405, {"error": f"method: {method[:16]!r} not allowed on {path[:80]}; "
                                        f"use {want}"}, {"Allow": want})
        denied = self._auth(headers, peer, client)
        if denied is not None:
            return denied
        if match is None:
            return _json(200, {"jobs": self.tracker.active_jobs()})
        content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", ""):
            return _json(415, {"error": f"content-type: must be application/json, "
                                        f"got {content_type[:40]!r}"})
        try:
            progress = parse_progress(match.group(1), body)
            uid = peer.uid if peer is not None else None
            if uid is not None and uid != 0 and progress.pid is not None:
                check_pid_owner(progress.pid, uid, self.proc_root)
            counted = self.tracker.record(progress, owner=uid)
        except IngestError as exc:
            if exc.status == 403:
                log.warning("ingest: refused %s from uid %s: %s", match.group(1)[:64],
                            peer.uid if peer else client, exc)
            return _json(exc.status, {"error": str(exc)})
        return _json(200, {"ok": True, "duplicate": not counted})

    def mount(self, server: Any) -> None:
        """Mount the endpoints on the agent's HTTP server (``collector.exporter.Exporter`` or its
        ``RouteServer``): anything with ``route(method, pattern, handler(Request) -> Response)``."""
        server.route("POST", "/v1/jobs/{id}/progress", self._route)
        server.route("GET", "/v1/jobs", self._route)

    def _route(self, request: Request) -> Response:
        status, headers, body = self.handle(request.method, request.path, request.headers,
                                            request.body, request.client, request.peer)
        content_type = headers.pop("Content-Type", "application/json")
        return Response(status, body, content_type, headers)


def check_pid_owner(pid: int, uid: int, proc_root: str = "/proc") -> None:
    """Raise IngestError unless process ``pid`` exists and belongs to ``uid``."""
    try:
        owner = os.stat(os.path.join(proc_root, str(pid))).st_uid
    except FileNotFoundError:
        raise IngestError(400, f"pid: no process {pid} on this host") from None
    except OSError as exc:
        raise IngestError(400, f"pid: cannot read process {pid}: {exc.strerror}") from None
    if owner != uid:
        raise IngestError(403, f"pid: process {pid} belongs to another user; a job may claim "
                               f"only its own processes (uid {uid})")
