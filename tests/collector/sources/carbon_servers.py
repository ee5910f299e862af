"""A local HTTP server that answers like Electricity Maps (v3) and WattTime (v3), with their
documented response shapes and error statuses; no network is touched."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

EM_TOKEN = "em-test-token"
WT_USER, WT_PASSWORD = "alice", "s3cret"
WT_TOKEN = "wt-bearer-token"


@dataclass
class ProviderState:
    """What the fake providers serve; tests change it between calls."""

    em_zones: dict[str, float] = field(default_factory=lambda: {"DE": 302.0, "FR": 41.0})
    em_forecast: list[tuple[str, float]] = field(default_factory=lambda: [
        ("2026-11-28T01:00:00.000Z", 280.0), ("2026-11-28T02:00:00.000Z", 150.0),
        ("2026-11-28T03:00:00.000Z", 200.0)])
    wt_regions: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: {
        "CAISO_NORTH": [("2026-11-28T00:00:00+00:00", 1000.0), ("2026-11-28T00:05:00+00:00", 900.0)]})
    rate_limited: bool = False
    calls: list[str] = field(default_factory=list)


def _handler(state: ProviderState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            return

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            state.calls.append(url.path)
            if state.rate_limited:
                return self._send(429, {"error": "Too many requests"}, {"Retry-After": "60"})
            if url.path.startswith("/v3/carbon-intensity/"):
                return self._em(url.path, q)
            if url.path == "/login":
                want = base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {want}":
                    return self._send(403, {"error": "Invalid credentials"})
                return self._send(200, {"token": WT_TOKEN})
            if url.path == "/v3/forecast":
                return self._wt(q)
            return self._send(404, {"error": "Not found"})

        def _em(self, path: str, q: dict[str, str]) -> None:
            if self.headers.get("auth-token") != EM_TOKEN:
                return self._send(401, {"message": "Invalid authentication credentials"})
            zone = q.get("zone", "")
            if zone not in state.em_zones:
                return self._send(404, {"error": f"Zone '{zone}' does not exist."})
            if path.endswith("/latest"):
                return self._send(200, {"zone": zone, "carbonIntensity": state.em_zones[zone],
                                        "datetime": "2026-11-28T00:00:00.000Z",
                                        "updatedAt": "2026-11-28T00:05:12.000Z",
                                        "emissionFactorType": "lifecycle", "isEstimated": False,
                                        "estimationMethod": None})
            return self._send(200, {"zone": zone, "forecast": [{"carbonIntensity": g, "datetime": t}
                                                               for t, g in state.em_forecast],
                                    "updatedAt": "2026-11-28T00:05:12.000Z"})

        def _wt(self, q: dict[str, str]) -> None:
            if self.headers.get("Authorization") != f"Bearer {WT_TOKEN}":
                return self._send(401, {"error": "Unauthorized"})
            region = q.get("region", "")
            if region not in state.wt_regions:
                return self._send(400, {"error": "Invalid region", "message": f"region {region} not found"})
            pts = state.wt_regions[region]
            data = pts[:1] if q.get("horizon_hours") == "0" else pts
            return self._send(200, {"data": [{"point_time": t, "value": v} for t, v in data],
                                    "meta": {"region": region, "signal_type": "co2_moer",
                                             "units": "lbs_co2_per_mwh", "data_point_period_seconds": 300,
                                             "generated_at": "2026-11-28T00:00:00+00:00"}})
    return Handler


@contextmanager
def provider_server(state: ProviderState | None = None) -> Iterator[tuple[str, ProviderState]]:
    """Serve both fake providers on a free 127.0.0.1 port; yields (base URL, state)."""
    st = state or ProviderState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(st))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", st
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
