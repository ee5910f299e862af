"""Alert events and the bodies that carry them: the generic webhook, Slack, and Alertmanager API v2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

NS = 1_000_000_000
PAYLOAD_VERSION = "1"
# Alertmanager resolves an alert by itself at endsAt; a firing alert is pushed
# again every resend interval with endsAt this many intervals ahead (as Prometheus does).
AM_ENDS_AT_INTERVALS = 4


def iso(ns: int) -> str:
    """RFC 3339 UTC with milliseconds, as Alertmanager and most receivers expect."""
    return datetime.fromtimestamp(ns / NS, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass(frozen=True)
class AlertEvent:
    """One alert as a notification carries it: firing (new or a reminder) or resolved."""

    id: str
    rule: str
    kind: str
    severity: str
    target: str
    status: str  # firing | resolved
    value: float
    unit: str
    threshold: float | None
    summary: str
    labels: Mapping[str, str]
    active_since_ns: int
    fired_ns: int | None
    resolved_ns: int | None
    repeat: bool = False


def event_json(e: AlertEvent) -> dict[str, Any]:
    """One alert of the webhook payload (version 1, documented in docs/alerting.md)."""
    return {
        "id": e.id, "status": e.status, "rule": e.rule, "kind": e.kind, "severity": e.severity,
        "target": e.target, "value": e.value, "unit": e.unit, "threshold": e.threshold,
        "summary": e.summary, "labels": dict(e.labels), "starts_at": iso(e.active_since_ns),
        "fired_at": iso(e.fired_ns) if e.fired_ns is not None else None,
        "ends_at": iso(e.resolved_ns) if e.resolved_ns is not None else None,
        "repeat": e.repeat,
    }


def webhook_payload(events: Sequence[AlertEvent], now_ns: int) -> dict[str, Any]:
    """The generic webhook body: ``{"version": "1", "sender", "sent_at", "alerts": [...]}``."""
    return {"version": PAYLOAD_VERSION, "sender": "wattlens", "sent_at": iso(now_ns),
            "alerts": [event_json(e) for e in events]}


_SLACK_COLOR = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}


def slack_payload(events: Sequence[AlertEvent], now_ns: int) -> dict[str, Any]:
    """A Slack incoming-webhook message: a one-line text plus one attachment per alert."""
    firing = sum(e.status == "firing" for e in events)
    resolved = len(events) - firing
    parts = [f"{firing} firing" if firing else "", f"{resolved} resolved" if resolved else ""]
    text = "wattlens: " + ", ".join(p for p in parts if p)
    attachments = []
    for e in events:
        status = "RESOLVED" if e.status == "resolved" else ("FIRING (reminder)" if e.repeat else "FIRING")
        attachments.append({
            "color": "#2ca02c" if e.status == "resolved" else _SLACK_COLOR.get(e.severity, "#7f7f7f"),
            "fallback": f"[{status}] {e.rule} {e.target}: {e.summary}",
            "title": f"[{status}] {e.rule}: {e.target}",
            "text": e.summary,
            "fields": [{"title": "severity", "value": e.severity, "short": True},
                       {"title": "value", "value": f"{e.value:.4g} {e.unit}", "short": True}],
            "ts": (e.resolved_ns or now_ns) // NS,
        })
    return {"text": text, "attachments": attachments}


def alertmanager_payload(events: Sequence[AlertEvent], now_ns: int,
                         resend_s: float) -> list[dict[str, Any]]:
    """Alertmanager API v2 ``POST /api/v2/alerts`` body: labels, annotations, startsAt, endsAt."""
    out = []
    for e in events:
        labels = {k: v for k, v in e.labels.items() if v}
        labels.update({"alertname": e.rule, "severity": e.severity, "target": e.target,
                       "kind": e.kind})
        ends = e.resolved_ns if e.resolved_ns is not None else now_ns + int(
            AM_ENDS_AT_INTERVALS * resend_s * NS)
        annotations = {"summary": e.summary, "value": f"{e.value:.6g}", "unit": e.unit}
        if e.threshold is not None:
            annotations["threshold"] = f"{e.threshold:.6g}"
        out.append({"labels": labels, "annotations": annotations,
                    "startsAt": iso(e.active_since_ns), "endsAt": iso(max(ends, e.active_since_ns))})
    return out
