"""Job progress reports: what a report may contain, checked strictly (one 4xx line naming the field).

The agent's ingest (collector.ingest) and the job API (wattlens.jobs) share these
rules; counts are increments since the caller's previous report.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.attribution import JOB_ID_RE, UNATTRIBUTED

MAX_BODY_BYTES = 64 * 1024
MAX_KEYS = 32
MAX_TAGS = 8
MAX_GPUS = 64
MAX_GPU_INDEX = 1023
MAX_COUNT = 1e30  # per report; far above any real interval's FLOPs
MAX_BATCH_SIZE = 10_000_000
MAX_PID = 1 << 22  # Linux pid_max ceiling
MAX_SEQ = (1 << 63) - 1
WORK_FIELDS = ("samples", "tokens", "steps", "flops")
KINDS = ("train", "finetune", "infer", "eval", "batch", "other")
# Compute precision: the dtype matmuls ran in; "amp-" when autocast mixed it with fp32.
PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "amp-bf16", "amp-fp16")
# Tags a caller may not set: the schema's own job tags and the attribution method.
# `idle_policy` is the agent's (collector.idle); `team` is allowed as a tag, `team` wins over it.
RESERVED_TAGS = frozenset({"job", "host", "kind", "precision", "gpu_model", "method", "idle_policy"})
_TAG_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TAG_VALUE_RE = re.compile(r"[A-Za-z0-9._:/@+-]{1,64}")
_KEYS = frozenset({*WORK_FIELDS, "kind", "precision", "batch_size", "gpus", "planned_samples",
                   "tags", "deferrable", "pid", "seq", "final", "team"})


class IngestError(ValueError):
    """A request the agent refuses: HTTP ``status`` and a one-line message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Progress:
    """One validated progress report: work increments plus optional metadata (None = unchanged)."""

    job: str
    samples: float = 0.0
    tokens: float = 0.0
    steps: float = 0.0
    flops: float = 0.0
    kind: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    gpus: tuple[int, ...] | None = None
    planned_samples: float | None = None
    tags: Mapping[str, str] | None = None
    team: str | None = None  # who pays for the job (showback); None = unchanged
    deferrable: bool | None = None
    pid: int | None = None
    seq: int | None = None
    final: bool = False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_job_id(job: Any) -> str:
    """The job id, or IngestError(400): 1-128 characters of [A-Za-z0-9._:-], not 'unattributed'."""
    if not isinstance(job, str) or not JOB_ID_RE.fullmatch(job):
        raise IngestError(400, f"job id: must be 1-128 characters of A-Z a-z 0-9 . _ : -, "
                               f"got {_show(job)}")
    if job == UNATTRIBUTED:
        raise IngestError(400, f"job id: {UNATTRIBUTED!r} is reserved for energy no job used")
    return job


def _number(name: str, value: Any, *, maximum: float = MAX_COUNT) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise IngestError(400, f"{name}: must be a number, got {_show(value)}")
    result = float(value)
    if not math.isfinite(result) or result < 0 or result > maximum:
        raise IngestError(400, f"{name}: must be a finite number from 0 to {maximum:g}, "
                               f"got {_show(value)}")
    return result


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise IngestError(400, f"{name}: must be an integer from {lo} to {hi}, got {_show(value)}")
    return value


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise IngestError(400, f"{name}: must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _no_constants(name: str) -> Any:
    raise IngestError(400, f"body: {name} is not valid JSON; send finite numbers")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise IngestError(400, f"{_show(key)}: appears twice in the JSON object")
        out[key] = value
    return out


def parse_progress(job: str, body: bytes) -> Progress:
    """Validate a progress report for ``job``; raise IngestError (4xx) naming the first bad field."""
    job = check_job_id(job)
    if len(body) > MAX_BODY_BYTES:
        raise IngestError(413, f"body: {len(body)} bytes is above the limit of {MAX_BODY_BYTES}")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants,
                          object_pairs_hook=_unique_keys)
    except IngestError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(400, f"body: not valid UTF-8 JSON ({message[:80]})") from None
    if not isinstance(data, dict):
        raise IngestError(400, f"body: must be a JSON object, got {type(data).__name__}")
    if len(data) > MAX_KEYS:
        raise IngestError(400, f"body: at most {MAX_KEYS} keys, got {len(data)}")
    for key in data:
        if key not in _KEYS:
            raise IngestError(400, f"{_show(key)}: unknown field; known: {', '.join(sorted(_KEYS))}")
    opt: dict[str, Any] = {f: _number(f, data[f]) for f in WORK_FIELDS if f in data}
    if "kind" in data:
        opt["kind"] = _choice("kind", data["kind"], KINDS)
    if "precision" in data:
        opt["precision"] = _choice("precision", data["precision"], PRECISIONS)
    if "batch_size" in data:
        opt["batch_size"] = _integer("batch_size", data["batch_size"], 1, MAX_BATCH_SIZE)
    if "planned_samples" in data:
        opt["planned_samples"] = _number("planned_samples", data["planned_samples"])
    if "deferrable" in data:
        if not isinstance(data["deferrable"], bool):
            raise IngestError(400, f"deferrable: must be true or false, got {_show(data['deferrable'])}")
        opt["deferrable"] = data["deferrable"]
    if "final" in data:
        if not isinstance(data["final"], bool):
            raise IngestError(400, f"final: must be true or false, got {_show(data['final'])}")
        opt["final"] = data["final"]
    if "pid" in data:
        opt["pid"] = _integer("pid", data["pid"], 1, MAX_PID)
    if "seq" in data:
        opt["seq"] = _integer("seq", data["seq"], 0, MAX_SEQ)
    if "gpus" in data:
        gpus = data["gpus"]
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise IngestError(400, f"gpus: must be a list of at most {MAX_GPUS} GPU indices, "
                                   f"got {_show(gpus)}")
        indices = tuple(_integer("gpus[]", g, 0, MAX_GPU_INDEX) for g in gpus)
        if len(set(indices)) != len(indices):
            raise IngestError(400, f"gpus: indices must be unique, got {_show(gpus)}")
        opt["gpus"] = tuple(sorted(indices))
    if "tags" in data:
        opt["tags"] = check_tags(data["tags"])
    if "team" in data:
        opt["team"] = check_team(data["team"])
    return Progress(job, **opt)


def check_team(team: Any) -> str:
    """The team a job's energy is shown back to: 1-64 characters of the tag alphabet, or
    IngestError(400) naming the field and the value."""
    if not isinstance(team, str) or not _TAG_VALUE_RE.fullmatch(team) or team == UNATTRIBUTED:
        raise IngestError(400, f"team: must be 1-64 characters of A-Z a-z 0-9 . _ : / @ + - "
                               f"(not 'unattributed'), got {_show(team)}")
    return team


def check_tags(tags: Any) -> dict[str, str]:
    """User tags: at most 8, keys [a-z][a-z0-9_]*, bounded values, not the schema's own tags."""
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        raise IngestError(400, f"tags: must be an object of at most {MAX_TAGS} string tags, "
                               f"got {_show(tags)}")
    for key, value in tags.items():
        if not _TAG_KEY_RE.fullmatch(key) or key in RESERVED_TAGS:
            raise IngestError(400, f"tags: key must match [a-z][a-z0-9_]{{0,31}} and not be one of "
                                   f"{', '.join(sorted(RESERVED_TAGS))}, got {_show(key)}")
        if not isinstance(value, str) or not _TAG_VALUE_RE.fullmatch(value):
            raise IngestError(400, f"tags.{key}: must be 1-64 characters of A-Z a-z 0-9 . _ : / @ + -,"
                                   f" got {_show(value)}")
    return dict(tags)
