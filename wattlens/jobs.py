"""The job API: `with wattlens.job("bert-ft") as job: job.step(samples=64)` reports work, and gets energy.

The training thread only adds numbers under a lock; a background thread
reports them every ``flush_interval_s``. Where a wattlens agent runs, the reports
go to its Unix socket (``WATTLENS_AGENT_SOCKET``, default /run/wattlens/ingest.sock,
or the one of an agent this user runs), or over TCP with the agent's token when
``WATTLENS_AGENT_URL`` is set, and the agent attributes energy. Where none does, the job
measures this machine itself (the sensors ``wattlens collect --source auto``
would find) and writes its ``job`` points to the store (``WATTLENS_STORE``, or
the default SQLite file).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from collector.ingest import KINDS, PRECISIONS, IngestError, check_job_id, check_tags, check_team
from wattlens.job_transports import AgentTransport, LocalTransport, SocketTransport, Transport

log = logging.getLogger("wattlens.jobs")

DEFAULT_AGENT_URL = "http://127.0.0.1:9464"
_INF = math.inf
_FIELDS = ("samples", "tokens", "steps", "flops")

__all__ = ["DEFAULT_AGENT_URL", "Job", "job"]


class Job:
    """A unit of work whose samples, tokens, steps and FLOPs are reported with its energy.

    Use :func:`job` to make one. Counting (:meth:`add`, :meth:`step`) is cheap
    and thread-safe; reporting happens on a background thread. ``mode`` says
    where reports go once started: ``"agent"`` or ``"standalone"``.
    """

    def __init__(
        self,
        name: str,
        *,
        kind: str = "train",
        precision: str | None = None,
        batch_size: int | None = None,
        planned_samples: float | None = None,
        gpus: Sequence[int] | None = None,
        tags: Mapping[str, str] | None = None,
        deferrable: bool | None = None,
        team: str | None = None,
        agent_url: str | None = None,
        store_url: str | None = None,
        mode: str = "auto",
        flush_interval_s: float = 1.0,
        timeout_s: float = 2.0,
        autopilot: bool = False,
    ) -> None:
        self.name = check_job_id(name)
        if kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        if mode not in ("auto", "agent", "standalone"):
            raise ValueError(f"mode: must be auto, agent or standalone, got {mode!r}")
        if not (isinstance(flush_interval_s, (int, float)) and 0 < flush_interval_s <= 3600):
            raise ValueError(f"flush_interval_s: must be in (0, 3600], got {flush_interval_s!r}")
        self.kind = kind
        # An explicit URL means TCP with the agent's token; otherwise the agent's Unix socket.
        self.agent_url = agent_url or os.environ.get("WATTLENS_AGENT_URL") or None
        if self.agent_url is not None and not self.agent_url.startswith(("http://", "https://")):
            raise ValueError(f"agent_url: must be an http:// or https:// URL, got {self.agent_url!r}")
        self.store_url = store_url
        self.requested_mode = mode
        self.flush_interval_s = float(flush_interval_s)
        self.timeout_s = timeout_s
        self.mode: str | None = None
        self._lock = threading.Lock()
        self._meta: dict[str, Any] = {"kind": kind}
        self._meta_dirty = True
        if tags is None or ("workload" not in tags and len(tags) < 8):
            tags = {"workload": default_workload(self.name), **(tags or {})}
        if autopilot:  # opt in to the agent's power-cap autopilot (docs/autopilot.md)
            tags = {**tags, "autopilot": "on"}
        self.update(precision=precision, batch_size=batch_size, planned_samples=planned_samples,
                    gpus=gpus, tags=tags, deferrable=deferrable, team=team)
        self._pending = [0.0, 0.0, 0.0, 0.0]
        self._totals = [0.0, 0.0, 0.0, 0.0]
        self._seq = 0
        self._inflight: dict[str, Any] | None = None
        self._transport: Transport | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._failing = ""

    # --- counting (the training thread) ------------------------------------------------
    def add(self, samples: float = 0, tokens: float = 0, steps: float = 0, flops: float = 0) -> None:
        """Add work done since the last call. Plain non-negative numbers; no I/O happens here."""
        if not (0 <= samples < _INF and 0 <= tokens < _INF and 0 <= steps < _INF
                and 0 <= flops < _INF):
            for field_name, value in zip(_FIELDS, (samples, tokens, steps, flops), strict=True):
                if not 0 <= value < _INF:
                    raise ValueError(f"{field_name}: must be a finite number >= 0, got {value!r}")
        with self._lock:
            p = self._pending
            p[0] += samples
            p[1] += tokens
            p[2] += steps
            p[3] += flops

    def step(self, samples: float = 0, tokens: float = 0, flops: float = 0) -> None:
        """Count one step (an optimizer step, or a served batch) and the work it did."""
        self.add(samples, tokens, 1, flops)

    def update(self, *, precision: str | None = None, batch_size: int | None = None,
               planned_samples: float | None = None, gpus: Sequence[int] | None = None,
               tags: Mapping[str, str] | None = None, deferrable: bool | None = None,
               team: str | None = None) -> None:
        """Change metadata (None leaves a value as it is); sent with the next report."""
        meta: dict[str, Any] = {}
        if precision is not None:
            if precision not in PRECISIONS:
                raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
            meta["precision"] = precision
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
            meta["batch_size"] = batch_size
        if planned_samples is not None:
            if isinstance(planned_samples, bool) or not 0 <= planned_samples < _INF:
                raise ValueError(f"planned_samples: must be a finite number >= 0, got {planned_samples!r}")
            meta["planned_samples"] = float(planned_samples)
        if gpus is not None:
            indices = [int(g) for g in gpus]
            if any(not 0 <= g <= 1023 for g in indices) or len(set(indices)) != len(indices):
                raise ValueError(f"gpus: must be distinct GPU indices 0..1023, got {list(gpus)!r}")
            meta["gpus"] = sorted(indices)
        if tags is not None:
            try:
                meta["tags"] = check_tags(dict(tags))
            except IngestError as exc:
                raise ValueError(str(exc)) from None
        if deferrable is not None:
            meta["deferrable"] = bool(deferrable)
        if team is not None:
            try:
                meta["team"] = check_team(team)
            except IngestError as exc:
                raise ValueError(str(exc)) from None
        with self._lock:
            self._meta.update(meta)
            self._meta_dirty = True
        wake = getattr(self, "_wake", None)
        if wake is not None and meta:
            wake.set()  # metadata goes out now, not at the next flush: it tags the job's points

    @property
    def totals(self) -> dict[str, float]:
        """Work counted so far, reported or not."""
        with self._lock:
            return {f: t + p for f, t, p in zip(_FIELDS, self._totals, self._pending, strict=True)}

    @property
    def metadata(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._meta)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Job:
        """Connect (agent, or in-process measurement) and start the reporting thread."""
        if self._thread is not None:
            return self
        self._transport = self._connect()
        self.mode = self._transport.mode
        self._thread = threading.Thread(target=self._loop, name=f"wattlens-job-{self.name}",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.finish)
        return self

    def _connect(self) -> Transport:
        token = os.environ.get("WATTLENS_AGENT_TOKEN") or None
        if self.requested_mode != "standalone":
            agent: Transport
            if self.agent_url is not None:
                agent = AgentTransport(self.agent_url, self.name, token, self.timeout_s)
            else:
                from collector.http_server import client_socket, user_socket

                path = client_socket() or user_socket()
                agent = SocketTransport(str(path), self.name, self.timeout_s)
            try:
                # The start report: the agent sees the job begin. A refusal here (bad
                # metadata, a missing token) is raised before any training starts.
                agent.send(self._payload(final=False))
            except ValueError as exc:
                raise ValueError(f"wattlens job {self.name}: {exc}") from None
            except OSError as exc:
                if self.requested_mode == "agent":
                    raise ConnectionError(f"wattlens job {self.name}: {exc}") from None
                log.info("wattlens job %s: no agent (%s); measuring in this process", self.name, exc)
            else:
                return agent
        from wattlens.config import default_store_url

        store_url = self.store_url or os.environ.get("WATTLENS_STORE") or default_store_url()
        host = os.environ.get("WATTLENS_HOST") or socket.gethostname()
        interval_s = float(os.environ.get("WATTLENS_INTERVAL") or 1.0)
        local = LocalTransport(self.name, store_url, host, interval_s)
        with self._lock:
            self._meta_dirty = True
        local.send(self._payload(final=False))
        return local

    def _payload(self, final: bool) -> dict[str, Any]:
        with self._lock:
            counts, self._pending = self._pending, [0.0, 0.0, 0.0, 0.0]
            self._totals = [t + c for t, c in zip(self._totals, counts, strict=True)]
            meta = dict(self._meta) if self._meta_dirty or final else {}
            self._meta_dirty = False
        self._seq += 1
        payload: dict[str, Any] = {f: c for f, c in zip(_FIELDS, counts, strict=True) if c}
        payload.update(meta)
        payload.update({"pid": os.getpid(), "seq": self._seq})
        if final:
            payload["final"] = True
        return payload

    def _send(self, transport: Transport, final: bool) -> None:
        """Deliver the report left in flight by a failed attempt, then a new one.

        A report keeps its sequence number across retries, so one that reached
        the agent but whose answer was lost is never counted twice. Raises
        OSError when the transport is down (the report stays in flight).
        """
        with self._send_lock:
            if self._inflight is not None:
                was_final = bool(self._inflight.get("final"))
                self._deliver(transport)
                if was_final:
                    return
            self._inflight = self._payload(final)
            self._deliver(transport)

    def _deliver(self, transport: Transport) -> None:
        assert self._inflight is not None
        try:
            transport.send(self._inflight)
        except ValueError as exc:  # refused: the data is bad, and resending cannot help
            log.warning("wattlens job %s: report dropped: %s", self.name, exc)
        self._inflight = None

    def _loop(self) -> None:
        assert self._transport is not None
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                idle = not any(self._pending) and not self._meta_dirty
            if idle:
                continue
            try:
                self._send(self._transport, final=False)
            except OSError as exc:
                if str(exc) != self._failing:
                    log.warning("wattlens job %s: report failed, will retry: %s", self.name, exc)
                    self._failing = str(exc)
            else:
                self._failing = ""

    def finish(self) -> None:
        """Send the last counts with ``final`` and stop; safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None or self._transport is None:
            return
        atexit.unregister(self.finish)
        self._stop.set()
        self._wake.set()
        thread.join(self.timeout_s + 5)
        transport = self._transport
        for attempt in range(3):
            try:
                self._send(transport, final=True)
                break
            except OSError as exc:
                if attempt == 2:
                    totals = self.totals
                    log.warning("wattlens job %s: final report lost (%s); unreported: %s",
                                self.name, exc, {k: v for k, v in totals.items() if v})
                else:
                    self._stop.wait(0.5)
        transport.close()

    def __enter__(self) -> Job:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()


def default_workload(name: str) -> str:
    """The job name without its run suffix: trailing ``-``/``_``/``.``/``:``-separated tokens that
    contain a digit are dropped (``bert-ft-1128-0100`` -> ``bert-ft``, ``resnet50-run-42`` ->
    ``resnet50-run``; ``resnet50`` and ``my-node-classifier`` stay as they are)."""
    tokens = re.split(r"([-_.:])", name)
    while len(tokens) > 2 and any(ch.isdigit() for ch in tokens[-1]):
        del tokens[-2:]
    return "".join(tokens)[:64]


def job(
    name: str,
    *,
    kind: str = "train",
    precision: str | None = None,
    batch_size: int | None = None,
    planned_samples: float | None = None,
    gpus: Sequence[int] | None = None,
    tags: Mapping[str, str] | None = None,
    deferrable: bool | None = None,
    team: str | None = None,
    agent_url: str | None = None,
    store_url: str | None = None,
    mode: str = "auto",
    flush_interval_s: float = 1.0,
    autopilot: bool = False,
) -> Job:
    """A job to use as a context manager: ``with wattlens.job("bert-ft", batch_size=64) as j: ...``.

    ``name`` is the job id (1-128 of ``A-Za-z0-9._:-``); ``kind`` one of
    train, finetune, infer, eval, batch, other; ``precision`` the compute
    precision (fp32, tf32, bf16, fp16, fp8, amp-bf16 for autocast to bf16, ...);
    ``gpus`` the NVML indices of the GPUs it uses, when the agent cannot see its
    processes (containers); ``tags`` a few low-cardinality labels (model);
    ``team`` who pays for it (the report's per-team showback); ``workload`` (what the
    job is an instance of, which analytics compares like with like) defaults to the name
    without its run suffix (``default_workload``). ``mode``:
    ``auto`` reports to the agent if one answers at
    ``agent_url`` and measures in-process otherwise; ``agent`` or
    ``standalone`` force one. ``autopilot=True`` lets an agent running ``--autopilot`` tune the
    power limit of the job's GPUs within its slowdown budget (the tag ``autopilot=on``).
    Bad arguments raise ValueError naming the field.
    """
    return Job(name, kind=kind, precision=precision, batch_size=batch_size,
               planned_samples=planned_samples, gpus=gpus, tags=tags, deferrable=deferrable,
               team=team, agent_url=agent_url, store_url=store_url, mode=mode,
               flush_interval_s=flush_interval_s, autopilot=autopilot)
