"""The dashboard's HTTP under attack and on first load: served compressed by waitress, bounded like the agent."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store.sqlite import SQLiteStore
from dashboard.app import create_app
from dashboard.server import DashboardServer


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    store = SQLiteStore(tmp_path_factory.mktemp("dash") / "s.db")
    server = DashboardServer(create_app(store), "127.0.0.1", 0, channel_timeout_s=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        store.close()


def _fetch(url: str, gzip: bool) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status), resp.headers.get("Content-Encoding", ""), resp.read()


def first_load_bytes(base: str, gzip: bool) -> tuple[int, int]:
    """(bytes on the wire, files) of the page, every script it loads, its layout and callbacks."""
    status, _, page = _fetch(base, gzip)
    assert status == 200
    if gzip:
        import gzip as gz

        page = gz.decompress(page) if page[:2] == b"\x1f\x8b" else page
    # The scripts in the page, then what the first chart loads (plotly.js, about 4.9 MB) and
    # the layout and callback list.
    srcs = [*re.findall(rb'<script src="([^"]+)"', page), b"/_dash-component-suites/dash/dcc/async-graph.js",
            b"/_dash-component-suites/plotly/package_data/plotly.min.js", b"/_dash-layout",
            b"/_dash-dependencies"]
    total = len(page) if not gzip else len(_fetch(base, True)[2])
    for src in srcs:
        url = base.rstrip("/") + src.decode()
        _, encoding, body = _fetch(url, gzip)
        assert (encoding == "gzip") == gzip or len(body) < 1024, url
        total += len(body)
    return total, len(srcs)


def test_the_first_load_is_served_compressed(dashboard: DashboardServer) -> None:
    raw, files = first_load_bytes(dashboard.url, gzip=False)
    packed, files_packed = first_load_bytes(dashboard.url, gzip=True)
    assert files == files_packed and files >= 5
    assert raw > 5_000_000 and packed < raw * 0.35, f"{packed} of {raw} bytes"
    print(f"dashboard first load: {raw / 1e6:.2f} MB raw, {packed / 1e6:.2f} MB gzip, {files} files")


def _get(url: str, **headers: str) -> tuple[int, dict[str, str]]:
    """Status and headers (names lower-cased) of a GET; a 304 is an answer, not an error."""
    req = urllib.request.Request(url, headers={k.replace("_", "-"): v for k, v in headers.items()})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return int(resp.status), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as answer:
        return answer.code, {k.lower(): v for k, v in answer.headers.items()}


def test_a_browser_keeps_what_the_first_load_fetched(dashboard: DashboardServer) -> None:
    """Assets named with their file's time are kept a year, on a 304 too; Dash's unversioned
    chunks keep the ETag Dash gives them (weak for a client that accepts gzip): asked again with
    it, 304; with another, the body. Every such answer varies by Accept-Encoding."""
    import gzip as gz

    base = dashboard.url.rstrip("/")
    page = gz.decompress(_fetch(dashboard.url, True)[2])
    assets = re.findall(rb'src="(/assets/[^"]+\?m=[^"]+)"', page)
    assert assets, page[:2000]
    asset = base + assets[0].decode()
    status, first = _get(asset, Accept_Encoding="gzip")
    assert status == 200 and first["content-encoding"] == "gzip"
    assert first["cache-control"] == "public, max-age=31536000"
    status, again = _get(asset, Accept_Encoding="gzip", If_None_Match=first["etag"])
    assert status == 304 and again["cache-control"] == "public, max-age=31536000", again
    assert again["etag"] == first["etag"] and "Accept-Encoding" in again["vary"]
    chunk = base + "/_dash-component-suites/dash/dcc/async-graph.js"
    for encoding in ("gzip", "identity"):
        status, got = _get(chunk, Accept_Encoding=encoding)
        tag = got["etag"]
        assert status == 200 and tag.startswith("W/") == (encoding == "gzip"), (encoding, tag)
        assert "Accept-Encoding" in got["vary"]
        status, again = _get(chunk, Accept_Encoding=encoding, If_None_Match=tag)
        assert status == 304 and again["etag"] == tag, (encoding, tag, again)
        assert _get(chunk, Accept_Encoding=encoding, If_None_Match='W/"another"')[0] == 200


def test_a_fresh_server_compresses_the_page_scripts_before_the_first_visit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """plotly.js at gzip level 9 held a fresh server's first page load 0.15-0.3 s: on start, the
    server asks the app for the page's scripts and styles itself, with the app's token."""
    import threading

    from dashboard.auth import install
    from dashboard.server import STATIC_REF

    store = SQLiteStore(tmp_path / "s.db")
    app = create_app(store)
    token = "warm-up-token-" + "x" * 24
    install(app.server, token)
    server = DashboardServer(app, "127.0.0.1", 0)  # the token comes from the app
    server.start()
    try:
        for t in threading.enumerate():
            if t.name == "wattlens-dashboard-warm":
                t.join(60)
        page = urllib.request.urlopen(urllib.request.Request(
            server.url, headers={"Authorization": f"Bearer {token}"}), timeout=30).read().decode()
        refs = set(STATIC_REF.findall(page))
        assert len(refs) >= 8 and any("plotly" in r for r in refs), refs
        assert [r for r in refs if not server.gzip.holds(r)] == []
        assert "refused" not in caplog.text  # asked with the token, not as a stranger
    finally:
        server.stop()
        store.close()


def test_duplicate_content_length_and_chunked_smuggling_get_one_answer(dashboard: DashboardServer) -> None:
    inner = b"GET /_dash-layout HTTP/1.1\r\nHost: a\r\n\r\n"
    raw = (b"POST /_dash-update-component HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
           b"Content-Length: 40\r\nConnection: close\r\n\r\n" + inner)
    with socket.create_connection(("127.0.0.1", dashboard.port), timeout=10) as s:
        s.sendall(raw)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"400"]


def test_idle_connections_are_closed_after_the_timeout(dashboard: DashboardServer) -> None:
    socks = [socket.create_connection(("127.0.0.1", dashboard.port), timeout=30) for _ in range(50)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")  # never finished
        assert _fetch(dashboard.url, False)[0] == 200  # others are served meanwhile
        closed = 0
        for s in socks:
            try:
                closed += s.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == 50
    finally:
        for s in socks:
            s.close()


def test_a_body_above_a_mebibyte_is_refused_on_its_headers(dashboard: DashboardServer) -> None:
    with socket.create_connection(("127.0.0.1", dashboard.port), timeout=10) as s:
        s.sendall(b"POST /_dash-update-component HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")


